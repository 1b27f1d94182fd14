//! Unit tests of `ranges` (pure: programs run by the interpreter here;
//! the kernel runs the compressed program in `tests/seccomp.rs`).

use super::*;
use crate::seccomp::profile::Layer;
use crate::seccomp::{compile_filter, Profile, DEFAULT_PROFILE_JSON};

/// libseccomp's allowlist filter of the default profile.
fn allowlist() -> Vec<sock_filter> {
    let p = Profile::from_json(DEFAULT_PROFILE_JSON).unwrap();
    let main: Vec<_> = p.rules.iter().filter(|r| r.layer == Layer::Main).collect();
    compile_filter(p.default_action, &main).unwrap()
}

fn answer(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    run(prog, &Data { nr, arch, args }, false).unwrap().unwrap()
}

#[test]
fn the_default_allowlist_shrinks_and_answers_as_before() {
    let old = allowlist();
    let new = compress(&old).expect("the default profile's allowlist compresses");
    assert!(new.len() * 2 < old.len(), "{} -> {} instructions", old.len(), new.len());
    // Every number of every architecture the kernel knows and past them,
    // the x32 range and the top of the numbers.
    let arches = [AUDIT_ARCH_X86_64, 0x4000_0003, 0x4000_003e, 0];
    let numbers = (0..2048).chain(0x4000_0000..0x4000_0400).chain(u32::MAX - 1024..=u32::MAX);
    for nr in numbers {
        for arch in arches {
            assert_eq!(answer(&old, nr, arch, [0; 6]), answer(&new, nr, arch, [0; 6]), "nr {nr:#x} arch {arch:#x}");
        }
    }
    // Arguments, for every number the kernel knows: flag words of clone,
    // personality's values, and noise.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for nr in 0..512 {
        for n in 0..64u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pick = [0, 8, 0x20000, 0x20008, 0xffff_ffff, 0x0002_0000_0000, 0x7e02_0080, x, x & 0xffff_ffff];
            let args = [pick[(x % 9) as usize], pick[(n % 9) as usize], x, 0, n, !x];
            assert_eq!(answer(&old, nr, AUDIT_ARCH_X86_64, args), answer(&new, nr, AUDIT_ARCH_X86_64, args), "nr {nr}");
        }
    }
}

#[test]
fn what_it_does_not_know_keeps_libseccomps_program() {
    let old = allowlist();
    // An instruction outside the few it runs (a load from scratch memory).
    let mut odd = old.clone();
    odd.insert(3, insn(0x60, 0, 0, 0));
    assert!(compress(&odd).is_none());
    // A bit test on the number.
    let bits = vec![
        insn(LD_ABS_W, 0, 0, NR),
        insn(JSET_K, 0, 1, 1),
        insn(RET_K, 0, 0, 0x7fff_0000),
        insn(RET_K, 0, 0, 0x0005_0001),
    ];
    assert!(compress(&bits).is_none());
    // Arithmetic on the number (257 & 0xff is 1: allowed between range
    // ends that are not), in a program long enough to be worth compressing.
    let mut masked = vec![
        insn(LD_ABS_W, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, 0x8000_0000),
        insn(LD_ABS_W, 0, 0, NR),
        insn(ALU_AND_K, 0, 0, 0xff),
        insn(JEQ_K, 0, 1, 1),
        insn(RET_K, 0, 0, 0x7fff_0000),
        insn(RET_K, 0, 0, 0x0005_0001),
    ];
    masked.extend(std::iter::repeat_n(insn(RET_K, 0, 0, 0), 20));
    assert_eq!(answer(&masked, 257, AUDIT_ARCH_X86_64, [0; 6]), 0x7fff_0000);
    assert!(compress(&masked).is_none());
    // Already as short as it gets.
    let short = vec![insn(RET_K, 0, 0, 0x7fff_0000)];
    assert!(compress(&short).is_none());
}

#[test]
fn a_search_that_answered_otherwise_is_refused() {
    let old = allowlist();
    let starts: Vec<u32> = (0..600).collect();
    let ranges = [(0, Leaf::Ret(0x7fff_0000))];
    let wrong = emit(&old, 0x8000_0000, &ranges).unwrap();
    assert!(!same_answers(&old, &wrong, &starts, &ranges));
}
