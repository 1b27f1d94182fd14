//! A cache of compiled seccomp programs.
//!
//! Compiling the default profile with libseccomp takes a few milliseconds,
//! more than the rest of a world's start. The compiled BPF depends only on
//! the profile text, the libseccomp version and cloche's own version, so it
//! is cached under the (root-only) state directory, keyed by a sha256 of
//! those three. A missing, unreadable or malformed cache entry is recompiled.

use crate::seccomp::{Profile, Program, SeccompError};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The compiled program for `profile_json`, from `cache_dir` when present.
pub fn program_for(profile_json: &str, cache_dir: &Path) -> Result<Program, SeccompError> {
    let key = cache_key(profile_json);
    let path = cache_dir.join(format!("seccomp-{key}.bpf"));
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(p) = Program::from_bytes(&bytes) {
            return Ok(p);
        }
    }
    let program = Program::compile(&Profile::from_json(profile_json)?)?;
    // Best effort: a read-only or full state dir only costs the next run time.
    let _ = store(cache_dir, &path, program.as_bytes());
    Ok(program)
}

fn cache_key(profile_json: &str) -> String {
    let v =
        libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\0program format 2 (stacked filters)");
    h.update([0]);
    h.update(v.as_bytes());
    h.update([0]);
    h.update(std::env::consts::ARCH.as_bytes());
    h.update([0]);
    h.update(profile_json.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the entry atomically (temporary file, fsync, rename), mode 0600.
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".seccomp.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_program_equals_compiled_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let json = crate::seccomp::DEFAULT_PROFILE_JSON;
        let fresh = Program::compile(&Profile::from_json(json).unwrap()).unwrap();
        let first = program_for(json, dir.path()).unwrap();
        assert_eq!(first, fresh);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1);
        let cached = program_for(json, dir.path()).unwrap();
        assert_eq!(cached, fresh);
        // A truncated entry is recompiled, not trusted.
        std::fs::write(entries[0].path(), b"\x01\x02\x03").unwrap();
        assert_eq!(program_for(json, dir.path()).unwrap(), fresh);
        // A different profile gets its own entry; an invalid one is an error.
        assert!(program_for("{", dir.path()).is_err());
    }
}
