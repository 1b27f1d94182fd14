//! The end-to-end tests' harness is the library `cloche-testkit`
//! (crates/testkit): built once for all the test binaries instead of once in
//! each. Every test file keeps `mod common; use common::*;`.

#[allow(unused_imports)]
pub use cloche_testkit::*;
