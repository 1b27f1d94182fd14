//! Shared harness of the end-to-end tests of `cloche run`.
//!
//! Every test builds a [`Fixture`]: it takes the suite-wide lock (the tests
//! compare host-global state: the mount table, cgroups, processes), makes a
//! project dir, a state dir and an output dir under /tmp, and snapshots the
//! host. `Fixture::finish` checks that nothing the worlds made is left on the
//! host: with CI set (or CLOCHE_TESTS_STRICT_LEAKS=1) anything new counts;
//! otherwise only what names the test's tag or world ids, so that someone else
//! running cloche on the same machine does not fail the tests.
//! Everything is cleaned up on drop, also when a test panics, and the
//! clean-up never crosses into a mount that a world may have left behind.
//!
//! Run as root, after `cargo build --workspace` (the probe is a binary of the
//! package crates/probe, which `cargo test` alone does not rebuild).

mod batch;
mod daemon;
mod fixture;
mod host;
mod reboot;
mod sse;
mod testhost;
mod tree;
mod user;

// Everything is re-exported, so `use common::*;` sees one flat harness; a test
// file that needs none of a submodule's items must not warn about it.
#[allow(unused_imports)]
pub use batch::*;
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use fixture::*;
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use reboot::*;
#[allow(unused_imports)]
pub use sse::*;
#[allow(unused_imports)]
pub use testhost::*;
#[allow(unused_imports)]
pub use tree::*;
#[allow(unused_imports)]
pub use user::*;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any single `cloche` invocation may take before the test kills it.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Binaries

/// `cloche`, built by cargo before the test binaries that run it: the test
/// binary is `<target>/<profile>/deps/NAME-HASH` and `cloche` is
/// `<target>/<profile>/cloche` (cargo's `CARGO_BIN_EXE_cloche` is only known
/// to the test files themselves, not to this library).
pub fn cloche_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary is in <profile>/deps/");
        let p = profile_dir.join("cloche");
        assert!(p.is_file(), "{} is missing: run the tests with `cargo test`", p.display());
        p
    })
    .clone()
}

/// The probe, built next to `cloche` by `cargo build --workspace`.
pub fn probe_bin() -> PathBuf {
    let p = cloche_bin().with_file_name("cloche-probe");
    assert!(
        p.is_file(),
        "the probe binary {} is missing: run `cargo build --workspace` before `cargo test` \
         (the probe is the package crates/probe)",
        p.display()
    );
    p
}

/// Whether the probe's directory is hidden by a world's masks (fresh /tmp, /run,
/// /var/tmp, masked homes), so it must be passed with `--expose`.
fn probe_needs_expose(probe: &Path) -> bool {
    ["/tmp", "/var/tmp", "/run", "/root", "/home", "/dev/shm"].iter().any(|p| probe.starts_with(p))
}

// ---------------------------------------------------------------------------
// Small utilities

/// A string unique to this test run, used in paths and argv to find things again.
pub fn unique_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ct{}x{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), nanos)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (lower-case hex) through coreutils' `sha256sum`, an independent implementation.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) must be installed");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Decodes base64 (standard or URL-safe alphabet, padding optional).
pub fn b64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s.as_bytes().iter().filter(|&&c| c != b'=') {
        acc = (acc << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Parses every non-empty line of `bytes` as JSON.
pub fn json_lines(bytes: &[u8]) -> Result<Vec<Value>, String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e} in line {l:?}")))
        .collect()
}

fn lossy_head(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… ({} bytes in all)", &s[..cut], bytes.len())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------
// Report helpers

/// All entries of one fs_diff list.
pub fn diff_list<'a>(report: &'a Value, list: &str) -> &'a [Value] {
    report["fs_diff"][list]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_else(|| panic!("report.fs_diff.{list} is not an array: {report:#}"))
}

/// The path of an fs_diff entry as raw bytes ("path" or "path_b64").
pub fn entry_path(e: &Value) -> Vec<u8> {
    if let Some(p) = e["path"].as_str() {
        p.as_bytes().to_vec()
    } else if let Some(b) = e["path_b64"].as_str() {
        b64_decode(b)
    } else {
        panic!("fs_diff entry without path or path_b64: {e}")
    }
}

/// The entry of `list` for `path`, if any.
pub fn find_entry<'a>(report: &'a Value, list: &str, path: &Path) -> Option<&'a Value> {
    let want = path.as_os_str().as_bytes();
    diff_list(report, list).iter().find(|e| entry_path(e) == want)
}

pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}
