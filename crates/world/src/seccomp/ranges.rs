//! The allowlist filter laid out again as a search over ranges of syscall
//! numbers.
//!
//! libseccomp's binary tree tests each allowed syscall number on its own:
//! the default profile's allowlist is 466 instructions, whose load (the
//! kernel checks it, works out which syscalls it always allows, and
//! compiles it) is most of the seccomp step of a world's start. Most
//! numbers next to each other get the same answer: 67 ranges of numbers
//! cover the whole of it. [`compress`] derives that layout from
//! libseccomp's own program, never from the profile: it runs the program
//! for each range of numbers it compares with, keeps the answer of those
//! that read no argument, copies the instructions of those that do
//! (`clone`, `personality`) as they are, and emits a search over the
//! ranges (164 instructions for the default profile's 466: the world's
//! seccomp step went 0.13 -> 0.09 ms).
//! Then it runs both programs on every boundary of every range and, for
//! the numbers that read arguments, on thousands of argument values made
//! of the constants the program compares with, and gives the new program
//! only when every answer is the same; anything it does not recognize
//! keeps libseccomp's program.

use libc::sock_filter;
use std::collections::{BTreeMap, BTreeSet};

const LD_ABS_W: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const ALU_OR_K: u16 = 0x44;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)` and `arch`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// What a filter reads: the syscall number, the architecture, the
/// arguments (the instruction pointer reads as 0).
#[derive(Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> Option<u32> {
        match off {
            NR => Some(self.nr),
            ARCH => Some(self.arch),
            8 | 12 => Some(0),
            16..=63 if off.is_multiple_of(4) => {
                let a = self.args[((off - 16) / 8) as usize];
                Some(if off.is_multiple_of(8) { a as u32 } else { (a >> 32) as u32 })
            }
            _ => None,
        }
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Runs `prog` on `d`: its answer, or `None` at an instruction outside the
/// few libseccomp emits (then nothing is compressed). With `stop_at_args`,
/// `Err(pc)` where it first reads anything but the number and the
/// architecture.
fn run(prog: &[sock_filter], d: &Data, stop_at_args: bool) -> Option<Result<u32, usize>> {
    let (mut a, mut pc) = (0u32, 0usize);
    for _ in 0..=prog.len() {
        let i = prog.get(pc)?;
        let next = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
        pc = match i.code {
            LD_ABS_W => {
                if stop_at_args && i.k != NR && i.k != ARCH {
                    return Some(Err(pc));
                }
                a = d.word(i.k)?;
                pc + 1
            }
            // (Arithmetic on the number or the architecture would make a
            // range's answer other than its ends': not compressed.)
            ALU_AND_K | ALU_OR_K if stop_at_args => return None,
            ALU_AND_K => {
                a &= i.k;
                pc + 1
            }
            ALU_OR_K => {
                a |= i.k;
                pc + 1
            }
            JA => pc + 1 + i.k as usize,
            JEQ_K => next(a == i.k),
            JGT_K => next(a > i.k),
            JGE_K => next(a >= i.k),
            JSET_K => next(a & i.k != 0),
            RET_K => return Some(Ok(i.k)),
            _ => return None,
        };
    }
    None // (a loop: classic BPF jumps only forward; never here)
}

/// A leaf of the search: an answer, or the instructions from `pc` on (in
/// the original program) for a number whose answer reads arguments.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    Args(usize),
}

/// `prog` (libseccomp's export of one filter) as a search over ranges of
/// syscall numbers, when that is shorter and answers every input as `prog`
/// does (checked here); `None` otherwise.
pub(crate) fn compress(prog: &[sock_filter]) -> Option<Vec<sock_filter>> {
    let data = |nr, arch| Data { nr, arch, args: [0; 6] };
    // Another architecture: one answer, whatever the number (checked below).
    let bad_arch = run(prog, &data(0, 0), true)?.ok()?;
    // The numbers where an answer may change: each constant compared, and
    // the one after it.
    let mut starts: BTreeSet<u32> = BTreeSet::from([0]);
    for i in prog.iter().filter(|i| matches!(i.code, JEQ_K | JGT_K | JGE_K | JSET_K)) {
        if i.code == JSET_K {
            return None; // bit tests on the number are not ranges
        }
        starts.insert(i.k);
        starts.extend(i.k.checked_add(1));
    }
    let starts: Vec<u32> = starts.into_iter().collect();
    let mut ranges: Vec<(u32, Leaf)> = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(u32::MAX, |e| e - 1);
        let leaf = |nr| match run(prog, &data(nr, AUDIT_ARCH_X86_64), true)? {
            Ok(r) => Some(Leaf::Ret(r)),
            Err(pc) => Some(Leaf::Args(pc)),
        };
        let (first, last) = (leaf(s)?, leaf(end)?);
        if first != last || (matches!(first, Leaf::Args(_)) && s != end) {
            return None;
        }
        match ranges.last() {
            Some((_, l)) if *l == first && matches!(first, Leaf::Ret(_)) => {}
            _ => ranges.push((s, first)),
        }
    }
    let out = emit(prog, bad_arch, &ranges)?;
    (out.len() < prog.len() && same_answers(prog, &out, &starts, &ranges)).then_some(out)
}

/// The new program: the architecture's check, the search, then a copy of
/// each argument-reading part of `prog`.
fn emit(prog: &[sock_filter], bad_arch: u32, ranges: &[(u32, Leaf)]) -> Option<Vec<sock_filter>> {
    let mut out = vec![
        insn(LD_ABS_W, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, bad_arch),
        insn(LD_ABS_W, 0, 0, NR),
    ];
    // The search, its argument leaves as jumps to be aimed once the copies
    // are placed (index of the jump, the part's first pc).
    let mut aims: Vec<(usize, usize)> = Vec::new();
    search(ranges, &mut out, &mut aims)?;
    // Each part: the instructions reachable from its first pc, in their
    // order; its jumps aimed again.
    let mut placed: BTreeMap<usize, usize> = BTreeMap::new();
    for &(_, from) in &aims {
        if placed.contains_key(&from) {
            continue;
        }
        let reach = reachable(prog, from)?;
        let base = out.len();
        let at: BTreeMap<usize, usize> = reach.iter().enumerate().map(|(n, &pc)| (pc, base + n)).collect();
        for &pc in &reach {
            let i = prog[pc];
            let here = at[&pc];
            let aim = |to: usize| -> Option<usize> { at.get(&to)?.checked_sub(here + 1) };
            out.push(match i.code {
                JA => insn(JA, 0, 0, u32::try_from(aim(pc + 1 + i.k as usize)?).ok()?),
                JEQ_K | JGT_K | JGE_K | JSET_K => {
                    let t = u8::try_from(aim(pc + 1 + usize::from(i.jt))?).ok()?;
                    let f = u8::try_from(aim(pc + 1 + usize::from(i.jf))?).ok()?;
                    insn(i.code, t, f, i.k)
                }
                _ => i,
            });
        }
        placed.insert(from, base);
    }
    for (jump, from) in aims {
        out[jump].k = u32::try_from(placed[&from] - (jump + 1)).ok()?;
    }
    Some(out)
}

/// A balanced search over `ranges` (sorted by their first number).
fn search(ranges: &[(u32, Leaf)], out: &mut Vec<sock_filter>, aims: &mut Vec<(usize, usize)>) -> Option<()> {
    match ranges {
        [] => None,
        [(_, Leaf::Ret(r))] => {
            out.push(insn(RET_K, 0, 0, *r));
            Some(())
        }
        [(_, Leaf::Args(pc))] => {
            aims.push((out.len(), *pc));
            out.push(insn(JA, 0, 0, 0));
            Some(())
        }
        _ => {
            let mid = ranges.len() / 2;
            let test = out.len();
            out.push(insn(JGE_K, 0, 0, ranges[mid].0));
            search(&ranges[..mid], out, aims)?;
            // Taken (the number is at least the right half's first): over
            // the left half.
            out[test].jt = u8::try_from(out.len() - (test + 1)).ok()?;
            search(&ranges[mid..], out, aims)
        }
    }
}

/// The pcs reachable from `from` in `prog`, in order.
fn reachable(prog: &[sock_filter], from: usize) -> Option<Vec<usize>> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(pc) = todo.pop() {
        let i = prog.get(pc)?;
        if !seen.insert(pc) {
            continue;
        }
        match i.code {
            RET_K => {}
            JA => todo.push(pc + 1 + i.k as usize),
            JEQ_K | JGT_K | JGE_K | JSET_K => {
                todo.push(pc + 1 + usize::from(i.jt));
                todo.push(pc + 1 + usize::from(i.jf));
            }
            LD_ABS_W | ALU_AND_K | ALU_OR_K => todo.push(pc + 1),
            _ => return None,
        }
    }
    Some(seen.into_iter().collect())
}

/// Whether `new` answers as `old`: each range's ends and its neighbours,
/// other architectures, and, for the numbers that read arguments,
/// arguments made of the constants `old` compares with.
fn same_answers(old: &[sock_filter], new: &[sock_filter], starts: &[u32], ranges: &[(u32, Leaf)]) -> bool {
    let same = |d: &Data| matches!((run(old, d, false), run(new, d, false)), (Some(Ok(a)), Some(Ok(b))) if a == b);
    let none = [0u64; 6];
    let arches = [AUDIT_ARCH_X86_64, 0, 0x4000_0003, 0xc000_00b7, 0x4000_003e, u32::MAX];
    for &s in starts {
        for nr in [s.wrapping_sub(1), s, s.wrapping_add(1)] {
            for arch in arches {
                if !same(&Data { nr, arch, args: none }) {
                    return false;
                }
            }
        }
    }
    // Argument words: the constants compared, their neighbours, 0 and all
    // ones, combined by a fixed pseudo-random sequence.
    let mut words: Vec<u32> = vec![0, u32::MAX];
    for i in old.iter().filter(|i| matches!(i.code, JEQ_K | JGT_K | JGE_K | JSET_K | ALU_AND_K)) {
        words.extend([i.k, i.k.wrapping_sub(1), i.k.wrapping_add(1), !i.k]);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (nr, _) in ranges.iter().filter(|(_, l)| matches!(l, Leaf::Args(_))) {
        for _ in 0..4096 {
            let mut args = [0u64; 6];
            for a in &mut args {
                let lo = words[(next() % words.len() as u64) as usize];
                let hi = match next() % 4 {
                    0 => words[(next() % words.len() as u64) as usize],
                    1 => u32::MAX,
                    _ => 0,
                };
                *a = (u64::from(hi) << 32) | u64::from(lo);
            }
            if !same(&Data { nr: *nr, arch: AUDIT_ARCH_X86_64, args }) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
#[path = "ranges_tests.rs"]
mod tests;
