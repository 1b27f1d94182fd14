//! A cache of compiled seccomp programs.
//!
//! Compiling the default profile with libseccomp takes a few milliseconds,
//! more than the rest of a world's start. The compiled BPF depends only on
//! the profile text, the libseccomp version and cloche's own version, so it
//! is cached under the (root-only) state directory. An entry holds those
//! (the bytes it was made from) before the program, and is used only when
//! they are the run's own, byte for byte; its name, an FNV-1a digest of
//! them (the built-in profile's part computed when cloche is compiled),
//! only finds it. No cryptographic hash is taken at a run: sha2's first
//! hash asks the CPU for its SHA instructions, which traps to the
//! hypervisor in a virtual machine (0.4-0.5 ms after an idle moment). A
//! missing, unreadable, foreign or malformed entry is recompiled.

use crate::seccomp::{Profile, Program, SeccompError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The compiled program for `profile_json`, from `cache_dir` when present.
pub fn program_for(profile_json: &str, cache_dir: &Path) -> Result<Program, SeccompError> {
    cached(profile_json, &profile_key(profile_json), cache_dir)
}

/// The compiled program of the built-in profile
/// ([`crate::seccomp::DEFAULT_PROFILE_JSON`]), from `cache_dir` when
/// present. Its key is known when cloche is compiled: hashing its 19 KB at
/// every run took about 0.05 ms of `cloche run`'s start (sha2's probe of
/// the CPU's features traps to the hypervisor in a virtual machine).
pub fn builtin_program(cache_dir: &Path) -> Result<Program, SeccompError> {
    cached(crate::seccomp::DEFAULT_PROFILE_JSON, &builtin_key(), cache_dir)
}

fn cached(profile_json: &str, key: &str, cache_dir: &Path) -> Result<Program, SeccompError> {
    let path = cache_dir.join(format!("seccomp-{key}.bpf"));
    let source = [compiler().as_bytes(), profile_json.as_bytes()].concat();
    if let Ok(bytes) = std::fs::read(&path) {
        if let Some(p) = program_of(&bytes, &source) {
            return Ok(p);
        }
    }
    let program = Program::compile(&Profile::from_json(profile_json)?)?;
    // Best effort: a read-only or full state dir only costs the next run time.
    let entry = [&(source.len() as u64).to_le_bytes()[..], &source, program.as_bytes()].concat();
    let _ = store(cache_dir, &path, &entry);
    Ok(program)
}

/// The program of an entry (the length of the bytes it was made from, as
/// 8 little-endian bytes; those bytes; the program), when it was made from
/// `source`.
fn program_of(entry: &[u8], source: &[u8]) -> Option<Program> {
    let (len, rest) = entry.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    let (from, program) = (rest.get(..len)?, rest.get(len..)?);
    (from == source).then(|| Program::from_bytes(program).ok()).flatten()
}

/// What, besides the profile, decides the program: cloche's version and
/// the program's format, libseccomp's version, the architecture.
fn compiler() -> String {
    let v =
        libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default();
    format!(
        "{}\0program format 3 (stacked filters, ranges), entries with their source\0{v}\0{}\0",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

fn builtin_key() -> String {
    let h = compiler().bytes().fold(BUILTIN_DIGEST, fnv1a);
    format!("builtin-{h:016x}")
}

fn profile_key(profile_json: &str) -> String {
    let h = compiler().bytes().chain(profile_json.bytes()).fold(0xcbf2_9ce4_8422_2325, fnv1a);
    format!("profile-{h:016x}-{}", profile_json.len())
}

/// FNV-1a (64 bits) of the built-in profile's text, computed by the
/// compiler. The key names a cache entry, never authenticates it: the
/// entry's own copy of what it was made from does.
const BUILTIN_DIGEST: u64 = {
    let bytes = crate::seccomp::DEFAULT_PROFILE_JSON.as_bytes();
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h = fnv1a(h, bytes[i]);
        i += 1;
    }
    h
};

const fn fnv1a(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
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
        // An entry made from another profile (a name two profiles share) is
        // not used: its program would be the other profile's.
        let other = json.replacen("\"times\", \"getcpu\"", "\"times\"", 1);
        assert_ne!(other, json);
        let theirs = Program::compile(&Profile::from_json(&other).unwrap()).unwrap();
        assert_ne!(theirs, fresh);
        let source = [compiler().as_bytes(), other.as_bytes()].concat();
        let forged = [&(source.len() as u64).to_le_bytes()[..], &source, theirs.as_bytes()].concat();
        std::fs::write(entries[0].path(), forged).unwrap();
        assert_eq!(program_for(json, dir.path()).unwrap(), fresh);
        // An entry of the earlier layout (the program alone) is not used.
        std::fs::write(entries[0].path(), theirs.as_bytes()).unwrap();
        assert_eq!(program_for(json, dir.path()).unwrap(), fresh);
        // A different profile gets its own entry; an invalid one is an error.
        assert!(program_for("{", dir.path()).is_err());
    }

    #[test]
    fn the_builtin_profile_has_an_entry_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let json = crate::seccomp::DEFAULT_PROFILE_JSON;
        let fresh = Program::compile(&Profile::from_json(json).unwrap()).unwrap();
        assert_eq!(builtin_program(dir.path()).unwrap(), fresh);
        assert_eq!(builtin_program(dir.path()).unwrap(), fresh);
        // The same text given as a profile: another entry.
        assert_eq!(program_for(json, dir.path()).unwrap(), fresh);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let builtin = format!("seccomp-{}.bpf", builtin_key());
        let mut want = [builtin.clone(), format!("seccomp-{}.bpf", profile_key(json))];
        want.sort();
        assert_eq!(names, want);
        // The compile-time digest is FNV-1a of the text, and a corrupt
        // entry is compiled again, not trusted.
        assert_eq!(json.bytes().fold(0xcbf2_9ce4_8422_2325, fnv1a), BUILTIN_DIGEST);
        std::fs::write(dir.path().join(&builtin), b"\x01\x02").unwrap();
        assert_eq!(builtin_program(dir.path()).unwrap(), fresh);
    }
}
