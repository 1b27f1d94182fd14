//! fs_diff: being written.
