//! Compiles `cloche-init` (crates/init, freestanding: `no_std`, its own
//! `_start`, no C library) into OUT_DIR, for `init.rs` to embed.
//!
//! Why here and not as a workspace binary: a `no_std` executable cannot
//! unwind, so it needs `panic = "abort"`, and a workspace profile with
//! `panic = "abort"` made cargo compile every crate twice (once for the
//! binaries, once, unwinding, for the tests). The init has no dependencies:
//! one rustc call, about a second.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("../init/src");
    for f in ["main.rs", "sys.rs", "mem.rs"] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("cloche-init");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // The init uses no C library, so it is built for the glibc target
    // whatever cloche's own (musl's start files would be linked around it).
    let target = std::env::var("TARGET").expect("cargo sets it").replace("-linux-musl", "-linux-gnu");
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition=2021", "--crate-type=bin", "--crate-name=cloche_init", "--target", &target])
        .args(["-C", "panic=abort", "-C", "opt-level=2", "-C", "debuginfo=0", "-C", "strip=symbols"])
        .args(["-C", "codegen-units=1", "-D", "warnings"]);
    // A static executable with our own `_start`: no C runtime, no C
    // library, no dynamic loader.
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        cmd.arg("-C").arg(format!("link-arg={arg}"));
    }
    cmd.arg("-o").arg(&out).arg(src.join("main.rs"));
    let res = cmd.output().expect("run rustc for cloche-init");
    if !res.status.success() {
        panic!("building cloche-init failed:\n{}", String::from_utf8_lossy(&res.stderr));
    }
}
