//! The shipped binaries' relocated read-only data (`PT_GNU_RELRO`: the GOT,
//! vtables, the pointers of constant tables) is read-only while they run.
//! glibc's start makes it so; musl's static-pie start, which cloche has,
//! leaves it writable, and `cloche_relro::protect` closes that. Checked from
//! outside, in `/proc/PID/maps` of a live `cloche run` and a live `cloched`.

use crate::common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PT_GNU_RELRO: u32 = 0x6474_e552;

/// `PT_GNU_RELRO`'s (vaddr, memsz) in the ELF64 executable `bin`.
fn relro_of(bin: &std::path::Path) -> (u64, u64) {
    let elf = std::fs::read(bin).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{} is an ELF64 file", bin.display());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&p| u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == PT_GNU_RELRO)
        .map(|p| (u64_at(p + 16), u64_at(p + 40)))
        .unwrap_or_else(|| panic!("{} has no PT_GNU_RELRO segment", bin.display()))
}

/// Checks that the whole pages of `bin`'s RELRO segment are mapped, and
/// none writable, in process `pid`.
fn assert_relro_read_only(pid: u32, bin: &std::path::Path) {
    let (vaddr, memsz) = relro_of(bin);
    let bin = bin.canonicalize().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    // (start, end, perms) of the executable's own mappings; its load base
    // is the start of the one at file offset 0 (its first segment's vaddr
    // is 0, as for any position-independent executable).
    let own: Vec<(u64, u64, String)> = maps
        .lines()
        .filter(|l| l.ends_with(&*bin.to_string_lossy()))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            let off = u64::from_str_radix(f[2], 16).unwrap();
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap(), format!("{} {off:x}", f[1]))
        })
        .collect();
    let base = own.iter().find(|m| m.2.ends_with(" 0")).map(|m| m.0).expect("the executable's first mapping");
    let (start, end) = ((base + vaddr) & !0xfff, (base + vaddr + memsz) & !0xfff);
    assert!(end > start, "a RELRO segment of whole pages");
    let mut covered = 0;
    for (a, b, perms) in &own {
        let (lo, hi) = ((*a).max(start), (*b).min(end));
        if lo < hi {
            assert!(
                !perms.starts_with("rw"),
                "{lo:x}-{hi:x} of the RELRO segment is writable ({perms}) in {}:\n{maps}",
                bin.display()
            );
            covered += hi - lo;
        }
    }
    assert_eq!(covered, end - start, "the RELRO segment is mapped whole:\n{maps}");
}

#[test]
fn the_binaries_relocated_read_only_data_is_read_only_while_they_run() {
    let fx = Fixture::new();
    let mut run = fx.command().args(["run", "--", "sleep", "1"]).stdout(Stdio::null()).spawn().unwrap();
    // The world is running once its init is a child of cloche's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while children_of(run.id() as i32).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_relro_read_only(run.id(), &cloche_bin());
    assert!(run.wait().unwrap().success());

    let mut d = Daemon::start(&fx, None);
    assert_relro_read_only(d.pid(), &cloched_bin());
    d.stop();
    fx.finish();
}
