//! The built-in policy's head (everything before `[commands]`), read from
//! policies/default.toml and written to OUT_DIR as JSON: every `cloche run`
//! loads it, and reading JSON takes a fraction of the TOML parser's time
//! (docs/architecture.md, *Start time*). The TOML file stays the one
//! source; a unit test checks that both give the same policy.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let src = dir.join("../../policies/default.toml");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src).expect("policies/default.toml");
    // As `Policy::builtin` splits it (`COMMANDS_HEADER`).
    let split = text.find("\n[commands]\n").map_or(text.len(), |i| i + 1);
    let head: toml::Value = toml::from_str(&text[..split]).expect("policies/default.toml's head is TOML");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("default_head.json");
    std::fs::write(out, serde_json::to_string(&head).expect("TOML values are JSON")).expect("write OUT_DIR");
}
