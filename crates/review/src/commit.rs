//! Commit planning and applying.
