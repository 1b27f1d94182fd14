fn main() {
    // A freestanding static executable: our own `_start` (no C runtime),
    // no C library, no dynamic loader.
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
