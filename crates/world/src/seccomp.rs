//! seccomp: OCI seccomp profiles compiled to classic BPF, and the child-side load.
//!
//! A [`Profile`] is the `linux.seccomp` object of the OCI runtime spec, parsed
//! with `oci_spec::runtime::LinuxSeccomp` and validated up front (unknown
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
//!   may compare an argument only once (EINVAL). So the fallback is compiled as
//!   rules for the complement of the exceptions (see `conds`). runc and crun
//!   hand such a profile to libseccomp unchanged and would allow TIOCSTI.
//! * Two unconditional rules with different actions for one syscall, or two
//!   conditional rules with identical conditions and different actions, are a
//!   conflict. Overlapping conditional rules with different actions should be
//!   avoided: libseccomp decides which one wins.
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
//!   32 bits (`SCMP_CMP_MASKED_EQ` with mask `0xffffffff`): libseccomp
//!   compares all 64 bits, so `EQ`/`NE` on them can be dodged by setting the
//!   upper half, which the kernel then ignores. The default profile does this.
//!
//! # Cost
//! The default profile compiles to about 760 instructions (libseccomp's
//! binary-tree layout, so a syscall is found in ~9 comparisons rather than a
//! scan of ~350). Parse + compile takes about 4 ms, almost all of it in
//! libseccomp; the program is deterministic, so compile once per profile and
//! reuse or cache it. [`install`] takes about 0.15 ms.

mod conds;
mod profile;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::errno::Errno;

use conds::Op;
pub use profile::Profile;

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

/// A compiled filter: the classic-BPF program the kernel takes.
#[derive(Clone)]
pub struct Program {
    insns: Vec<libc::sock_filter>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("instructions", &self.insns.len()).finish()
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

impl Program {
    /// Compile a profile with libseccomp and export the BPF program.
    pub fn compile(profile: &Profile) -> Result<Program, SeccompError> {
        if ScmpArch::native() != ScmpArch::X8664 {
            return Err(SeccompError::Unsupported { at: "host".into(), what: "a host that is not x86_64".into() });
        }
        let mut ctx = ScmpFilterContext::new(profile.default_action).map_err(libseccomp_err("creating the filter"))?;
        ctx.set_act_badarch(ScmpAction::KillProcess).map_err(libseccomp_err("setting the bad-arch action"))?;
        // The caller sets no_new_privs; the exported program does not depend on it.
        ctx.set_ctl_nnp(false).map_err(libseccomp_err("ctl_nnp"))?;
        // Binary search over syscall numbers instead of a linear chain.
        ctx.set_ctl_optimize(2).map_err(libseccomp_err("ctl_optimize"))?;
        for r in &profile.rules {
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
        file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| {
            SeccompError::Libseccomp { context: "reading the exported program".into(), msg: e.to_string() }
        })?;
        Program::from_bytes(&bytes)
    }

    /// Rebuild a program from [`Program::as_bytes`] output (a cache).
    ///
    /// Checks the shape only: whole instructions, 1..=4096 of them, jumps
    /// inside the program, a return at the end. The kernel verifies the rest
    /// at [`install`]; the integrity of a cache is the caller's business.
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, SeccompError> {
        if bytes.is_empty() || !bytes.chunks_exact(INSN_SIZE).remainder().is_empty() {
            return Err(SeccompError::BadProgram(format!(
                "{} bytes is not a whole, non-zero number of {INSN_SIZE}-byte instructions",
                bytes.len()
            )));
        }
        let n = bytes.len() / INSN_SIZE;
        if n > MAX_INSTRUCTIONS {
            return Err(SeccompError::BadProgram(format!(
                "{n} instructions, the kernel takes at most {MAX_INSTRUCTIONS}"
            )));
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
        Ok(Program { insns, bytes: bytes.to_vec() })
    }

    /// The raw `struct sock_filter` array, native endian.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false for a valid program (kept for `len`'s sake).
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

/// Load `prog` as the calling thread's seccomp filter.
///
/// For the child side, right before `execve`: it allocates nothing and makes
/// one syscall, so it may run in a freshly forked child of a multi-threaded
/// parent. The caller must have set `PR_SET_NO_NEW_PRIVS` (or hold
/// CAP_SYS_ADMIN). No filter flags are used; the child is single-threaded.
pub fn install(prog: &Program) -> Result<(), Errno> {
    let Ok(len) = u16::try_from(prog.insns.len()) else {
        return Err(Errno::EINVAL);
    };
    let fprog = libc::sock_fprog { len, filter: prog.insns.as_ptr().cast_mut() };
    // SAFETY: `fprog` points at `len` initialised `sock_filter`s owned by
    // `prog`, which outlives the call. seccomp(2) copies the program into the
    // kernel before returning and never writes through the pointer; the other
    // arguments are plain integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            0 as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

#[cfg(test)]
mod tests;
