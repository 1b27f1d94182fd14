//! Git-like text of a review (being written: see the helper's task).
