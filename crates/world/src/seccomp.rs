//! seccomp: being written.
