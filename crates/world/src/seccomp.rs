//! seccomp: OCI seccomp profiles compiled to classic BPF, and the child-side load.
//!
//! A [`Profile`] is the `linux.seccomp` object of the OCI runtime spec, parsed
//! into the types of `seccomp/oci.rs` and validated up front (unknown
//! syscalls, actions, operators or architectures, unsupported features and
//! conflicting rules are errors, never guesses). [`Program::compile`] builds it
//! with libseccomp and exports the raw `struct sock_filter` array, which the
//! caller may cache ([`Program::as_bytes`] / [`Program::from_bytes`]).
//! [`install`] loads it in a freshly forked child, right before `execve`, after
//! the caller has set `PR_SET_NO_NEW_PRIVS`.
//!
//! # Semantics (where the OCI spec is silent)
//! * **Conditional rules are exceptions.** For one syscall, an unconditional
//!   rule sets its fallback action and the conditional rules of that syscall
//!   override it where their arguments match: `ioctl` ALLOW plus `ioctl` ERRNO
//!   when `request == TIOCSTI` means "every ioctl except TIOCSTI". libseccomp
//!   2.5.4 cannot take this as written: an unconditional rule swallows every
//!   conditional rule of the syscall (the filter allowed TIOCSTI), a rule
//!   whose action equals the default action is refused with EACCES, and a rule
//!   may compare an argument only once (EINVAL). So when every action of
//!   the syscall is ALLOW or a refusal (ERRNO, TRAP, KILL), the syscall is
//!   allowed outright in the main filter and its refusals go into a second,
//!   small filter whose default is ALLOW: the refusing exceptions, and the
//!   fallback (when it refuses) on the complement of all the exceptions.
//!   The kernel runs both and keeps the stricter answer. `socket` ERRNO
//!   plus `socket` ALLOW when `family == AF_UNIX` (…) is thus an allowlist
//!   of argument values. Otherwise the fallback is compiled as rules for the
//!   complement of the exceptions in the main filter (see `conds`, which
//!   complements an allowlist of values in a few ranges and aligned
//!   blocks). runc and crun hand such a profile to libseccomp unchanged and
//!   would allow TIOCSTI.
//! * Two unconditional rules with different actions for one syscall, or two
//!   conditional rules with identical conditions and different actions, are a
//!   conflict. Where conditional rules of different actions overlap, the
//!   stricter wins in the two-filter form; otherwise libseccomp decides:
//!   avoid it.
//! * Two comparisons of the same argument in one rule are refused (runc ORs
//!   them, libseccomp refuses them; write separate rules to OR).
//! * Architectures: x86_64 only (`SCMP_ARCH_X86_64` or `SCMP_ARCH_NATIVE`).
//!   **Bad-architecture action: kill the process** (`SCMP_ACT_KILL_PROCESS`,
//!   SIGSYS). An i386 (`int 0x80`) or x32 syscall from a world is either a
//!   32-bit program, which could not run under an x86_64 allowlist anyway, or
//!   an attempt to slip past the syscall numbers the filter checks; killing
//!   the process fails loudly and shows as signal 31 in the exit status,
//!   where EPERM would make a 32-bit program crash somewhere confusing.
//! * Names libseccomp 2.5.4 does not know but kernel 6.18 has (`statmount` …
//!   `file_setattr`, 457–469) resolve through a small table of x86_64
//!   numbers. Names libseccomp knows but x86_64 lacks (`stime`) are skipped.
//! * When the default action refuses, syscall numbers above the newest one
//!   cloche can name (up to 511) get ENOSYS instead, like runc: a newer libc
//!   then falls back to an older syscall instead of failing with EPERM.
//! * `flags`, `SCMP_ACT_NOTIFY` and listener settings are refused.
//!   `comment` keys are accepted and ignored (a cloche extension that other
//!   runtimes ignore too); any other unknown key is an error, so that a typo
//!   such as `"arg"` cannot silently turn a conditional allow into an
//!   unconditional one.
//! * Arguments the kernel reads as `int` (ioctl's request, socket's domain
//!   and protocol, clone's flags, personality) must be compared on their low
//!   32 bits (`SCMP_CMP_MASKED_EQ` with mask `0xffffffff`) where a match
//!   refuses: libseccomp compares all 64 bits, so `EQ`/`NE` on them can be
//!   dodged by setting the upper half, which the kernel then ignores. Where
//!   a match allows (socket's allowlist), `EQ` on all 64 bits is the safe
//!   side: garbage in the upper half is refused. The default profile does
//!   both.
//!
//! # Cost
//! The default profile compiles to two filters: refusals (ioctl's two, the
//! complement of socket's and socketpair's allowlists: about 180
//! instructions) and an allowlist, which libseccomp lays out as a binary
//! tree of the syscall numbers (about 470 instructions, a syscall found in
//! ~9 comparisons rather than a scan of ~350) and `ranges` again as a
//! search over the 67 ranges of numbers that share an answer (about 160,
//! checked against libseccomp's program; its load in a world 0.13 -> 0.09
//! ms). Compiling the exceptions as complements in one filter made
//! it about 760 instructions whose load took 0.35-0.5 ms in a world; the two
//! filters load in about 0.25 ms. Parse + compile takes about 3-4 ms,
//! almost all of it in libseccomp; the program is deterministic, so compile
//! once per profile and reuse or cache it (`bpf_cache`).

mod conds;
pub mod oci;
mod profile;
mod ranges;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::errno::Errno;

use conds::Op;
pub use profile::Profile;
use profile::{Layer, PlannedRule};

/// The default profile shipped in `policies/seccomp/default.json`.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../../../policies/seccomp/default.json");

/// Largest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// Why a profile or a program was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("seccomp profile: {at}: {msg}")]
    Invalid { at: String, msg: String },
    #[error("seccomp profile: {at}: unknown syscall {name:?}")]
    UnknownSyscall { at: String, name: String },
    #[error("seccomp profile: {at}: unknown action {action:?}")]
    UnknownAction { at: String, action: String },
    #[error("seccomp profile: {at}: unknown comparison operator {op:?}")]
    UnknownOperator { at: String, op: String },
    #[error("seccomp profile: {at}: unknown architecture {arch:?}")]
    UnknownArch { at: String, arch: String },
    #[error("seccomp profile: {at}: {what} is not supported by cloche")]
    Unsupported { at: String, what: String },
    #[error("seccomp profile: conflicting rules for syscall {syscall}: {msg}")]
    Conflict { syscall: String, msg: String },
    #[error("libseccomp: {context}: {msg}")]
    Libseccomp { context: String, msg: String },
    #[error("invalid seccomp program: {0}")]
    BadProgram(String),
}

fn invalid(at: impl Into<String>, msg: impl Into<String>) -> SeccompError {
    SeccompError::Invalid { at: at.into(), msg: msg.into() }
}

fn libseccomp_err(context: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let context = context.into();
    move |e| SeccompError::Libseccomp { context, msg: e.to_string() }
}

/// A compiled profile: one or two classic-BPF filters, loaded stacked. The
/// first (when there are two) holds the exceptions to syscalls the second,
/// the allowlist, allows outright (see `plan_syscall`); the kernel runs both
/// and takes the stricter answer.
#[derive(Clone)]
pub struct Program {
    filters: Vec<Vec<libc::sock_filter>>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self.filters.iter().map(Vec::len).collect();
        f.debug_struct("Program").field("instructions", &sizes).finish()
    }
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Program {}

/// Size of one `struct sock_filter`.
const INSN_SIZE: usize = 8;
/// Header of the serialized form of more than one filter (a single filter is
/// serialized as its raw instructions, as libseccomp exports it).
const MULTI_MAGIC: &[u8; 8] = b"clbpf\x00\x02\x00";

impl Program {
    /// Compile a profile with libseccomp and export the BPF program(s).
    pub fn compile(profile: &Profile) -> Result<Program, SeccompError> {
        if ScmpArch::native() != ScmpArch::X8664 {
            return Err(SeccompError::Unsupported { at: "host".into(), what: "a host that is not x86_64".into() });
        }
        let mut filters = Vec::new();
        let exceptions: Vec<&PlannedRule> = profile.rules.iter().filter(|r| r.layer == Layer::Exceptions).collect();
        if !exceptions.is_empty() {
            filters.push(compile_filter(ScmpAction::Allow, &exceptions)?);
        }
        let main: Vec<&PlannedRule> = profile.rules.iter().filter(|r| r.layer == Layer::Main).collect();
        // The allowlist as a search over ranges of numbers when that
        // answers as libseccomp's program does (`ranges`: it checks).
        let main = compile_filter(profile.default_action, &main)?;
        filters.push(ranges::compress(&main).unwrap_or(main));
        Program::from_filters(filters)
    }

    fn from_filters(filters: Vec<Vec<libc::sock_filter>>) -> Result<Program, SeccompError> {
        let raw = |f: &[libc::sock_filter]| -> Vec<u8> {
            f.iter()
                .flat_map(|i| {
                    let mut b = [0u8; INSN_SIZE];
                    b[0..2].copy_from_slice(&i.code.to_ne_bytes());
                    b[2] = i.jt;
                    b[3] = i.jf;
                    b[4..8].copy_from_slice(&i.k.to_ne_bytes());
                    b
                })
                .collect()
        };
        let bytes = match filters.as_slice() {
            [one] => raw(one),
            many => {
                let mut b = MULTI_MAGIC.to_vec();
                b.extend_from_slice(&(many.len() as u32).to_ne_bytes());
                for f in many {
                    b.extend_from_slice(&(f.len() as u32).to_ne_bytes());
                }
                for f in many {
                    b.extend_from_slice(&raw(f));
                }
                b
            }
        };
        Ok(Program { filters, bytes })
    }

    /// Rebuild a program from [`Program::as_bytes`] output (a cache), or from
    /// one raw filter as libseccomp exports it.
    ///
    /// Checks the shape only: whole instructions, 1..=4096 of them per
    /// filter, jumps inside the filter, a return at the end. The kernel
    /// verifies the rest at [`install`]; the integrity of a cache is the
    /// caller's business.
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, SeccompError> {
        let Some(rest) = bytes.strip_prefix(MULTI_MAGIC.as_slice()) else {
            return Program::from_filters(vec![parse_filter(bytes)?]);
        };
        let bad = |m: &str| SeccompError::BadProgram(m.to_string());
        let word = |b: &[u8], i: usize| -> Option<usize> {
            b.get(i * 4..i * 4 + 4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as usize)
        };
        let n = word(rest, 0).ok_or_else(|| bad("truncated header"))?;
        if !(1..=8).contains(&n) {
            return Err(bad("1 to 8 filters expected"));
        }
        let mut off = (n + 1) * 4;
        let mut filters = Vec::with_capacity(n);
        for i in 0..n {
            let len = word(rest, i + 1).ok_or_else(|| bad("truncated header"))?;
            let end = len.checked_mul(INSN_SIZE).and_then(|l| l.checked_add(off)).ok_or_else(|| bad("bad length"))?;
            let body = rest.get(off..end).ok_or_else(|| bad("truncated filter"))?;
            filters.push(parse_filter(body)?);
            off = end;
        }
        if off != rest.len() {
            return Err(bad("trailing bytes after the last filter"));
        }
        Program::from_filters(filters)
    }

    /// The serialized program (see [`Program::from_bytes`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of BPF instructions, all filters together.
    pub fn len(&self) -> usize {
        self.filters.iter().map(Vec::len).sum()
    }

    /// Always false for a valid program (kept for `len`'s sake).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filters, in load order.
    pub fn filters(&self) -> impl Iterator<Item = &[libc::sock_filter]> {
        self.filters.iter().map(Vec::as_slice)
    }
}

/// One libseccomp filter with `default` and `rules`, exported as BPF.
fn compile_filter(default: ScmpAction, rules: &[&PlannedRule]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut ctx = ScmpFilterContext::new(default).map_err(libseccomp_err("creating the filter"))?;
    ctx.set_act_badarch(ScmpAction::KillProcess).map_err(libseccomp_err("setting the bad-arch action"))?;
    // The caller sets no_new_privs; the exported program does not depend on it.
    ctx.set_ctl_nnp(false).map_err(libseccomp_err("ctl_nnp"))?;
    // Binary search over syscall numbers instead of a linear chain.
    ctx.set_ctl_optimize(2).map_err(libseccomp_err("ctl_optimize"))?;
    for r in rules {
        let cmps: Vec<ScmpArgCompare> = r
            .conds
            .iter()
            .map(|c| {
                let (op, datum) = match c.op {
                    Op::Eq(v) => (ScmpCompareOp::Equal, v),
                    Op::Ne(v) => (ScmpCompareOp::NotEqual, v),
                    Op::Lt(v) => (ScmpCompareOp::Less, v),
                    Op::Le(v) => (ScmpCompareOp::LessOrEqual, v),
                    Op::Gt(v) => (ScmpCompareOp::Greater, v),
                    Op::Ge(v) => (ScmpCompareOp::GreaterEqual, v),
                    Op::MaskedEq { mask, value } => (ScmpCompareOp::MaskedEqual(mask), value),
                };
                ScmpArgCompare::new(c.arg, op, datum)
            })
            .collect();
        ctx.add_rule_conditional(r.action, ScmpSyscall::from_raw_syscall(r.nr), &cmps).map_err(|e| {
            let context = format!("adding {:?} for {} with {:?}", r.action, r.name, r.conds);
            libseccomp_err(context)(e)
        })?;
    }
    let memfd = nix::sys::memfd::memfd_create(c"cloche-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Libseccomp { context: "memfd_create".into(), msg: e.to_string() })?;
    ctx.export_bpf(&memfd).map_err(libseccomp_err("exporting the BPF program"))?;
    let mut file = File::from(memfd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| SeccompError::Libseccomp { context: "reading the exported program".into(), msg: e.to_string() })?;
    parse_filter(&bytes)
}

/// Parses and shape-checks one raw filter.
fn parse_filter(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if bytes.is_empty() || !bytes.chunks_exact(INSN_SIZE).remainder().is_empty() {
        return Err(SeccompError::BadProgram(format!(
            "{} bytes is not a whole, non-zero number of {INSN_SIZE}-byte instructions",
            bytes.len()
        )));
    }
    let n = bytes.len() / INSN_SIZE;
    if n > MAX_INSTRUCTIONS {
        return Err(SeccompError::BadProgram(format!("{n} instructions, the kernel takes at most {MAX_INSTRUCTIONS}")));
    }
    let insns: Vec<libc::sock_filter> = bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    const BPF_CLASS_MASK: u16 = 0x07;
    const BPF_JMP: u16 = 0x05;
    const BPF_RET: u16 = 0x06;
    const BPF_JA: u16 = 0x00;
    for (i, ins) in insns.iter().enumerate() {
        if ins.code & BPF_CLASS_MASK == BPF_JMP {
            let reach = if ins.code & 0xf0 == BPF_JA { ins.k as usize } else { usize::from(ins.jt.max(ins.jf)) };
            if i + 1 + reach >= n {
                return Err(SeccompError::BadProgram(format!("instruction {i} jumps past the end")));
            }
        }
    }
    if insns[n - 1].code & BPF_CLASS_MASK != BPF_RET {
        return Err(SeccompError::BadProgram("the last instruction is not a return".into()));
    }
    Ok(insns)
}

/// Load `prog`'s filters, in order, as the calling thread's seccomp filters.
///
/// For the child side, right before `execve`: it allocates nothing and makes
/// one syscall per filter, so it may run in a freshly forked child of a
/// multi-threaded parent. The caller must have set `PR_SET_NO_NEW_PRIVS` (or
/// hold CAP_SYS_ADMIN). No filter flags are used; the child is
/// single-threaded. The exceptions filter (default ALLOW) comes first, so
/// the second `seccomp` call is never refused by the first filter.
pub fn install(prog: &Program) -> Result<(), Errno> {
    for f in &prog.filters {
        let Ok(len) = u16::try_from(f.len()) else {
            return Err(Errno::EINVAL);
        };
        let fprog = libc::sock_fprog { len, filter: f.as_ptr().cast_mut() };
        // SAFETY: `fprog` points at `len` initialised `sock_filter`s owned by
        // `prog`, which outlives the call. seccomp(2) copies the program into
        // the kernel before returning and never writes through the pointer;
        // the other arguments are plain integers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
                0 as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
