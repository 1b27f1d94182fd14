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

mod conds;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde_json::Value;

use conds::{ComplementError, Cond, Op, Term};

/// The default profile shipped in `policies/seccomp/default.json`.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../../../policies/seccomp/default.json");

/// Largest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// x86_64 syscalls newer than libseccomp 2.5.4's table (from the kernel's
/// `arch/x86/entry/syscalls/syscall_64.tbl`, present in 6.18).
const EXTRA_X86_64: &[(&str, i32)] = &[
    ("statmount", 457),
    ("listmount", 458),
    ("lsm_get_self_attr", 459),
    ("lsm_set_self_attr", 460),
    ("lsm_list_modules", 461),
    ("mseal", 462),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
    ("open_tree_attr", 467),
    ("file_getattr", 468),
    ("file_setattr", 469),
];

/// Highest x86_64 syscall number (below the x32 range at 512) given ENOSYS
/// when it is newer than every syscall cloche can name.
const LAST_NATIVE_NR: i32 = 511;

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
    SeccompError::Invalid {
        at: at.into(),
        msg: msg.into(),
    }
}

fn libseccomp_err(
    context: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let context = context.into();
    move |e| SeccompError::Libseccomp {
        context,
        msg: e.to_string(),
    }
}

/// A profile rule for one syscall: action, conditions, where it was written.
type SourceRule = (ScmpAction, Term, String);

/// One libseccomp rule, after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedRule {
    name: String,
    nr: i32,
    action: ScmpAction,
    conds: Term,
}

/// A validated seccomp profile, ready to compile.
#[derive(Debug, Clone)]
pub struct Profile {
    spec: LinuxSeccomp,
    default_action: ScmpAction,
    rules: Vec<PlannedRule>,
    absent: Vec<String>,
}

impl Profile {
    /// Parse and validate the JSON text of a `linux.seccomp` object.
    pub fn from_json(text: &str) -> Result<Profile, SeccompError> {
        let value: Value = serde_json::from_str(text).map_err(SeccompError::Json)?;
        prescan(&value)?;
        let spec: LinuxSeccomp = serde_json::from_str(text).map_err(|e| {
            invalid(
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        Profile::from_spec(spec)
    }

    /// Read, parse and validate a profile file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Profile, SeccompError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::from_json(&text)
    }

    /// The profile shipped with cloche ([`DEFAULT_PROFILE_JSON`]).
    pub fn builtin_default() -> Result<Profile, SeccompError> {
        Profile::from_json(DEFAULT_PROFILE_JSON)
    }

    /// Validate an already deserialized profile.
    pub fn from_spec(spec: LinuxSeccomp) -> Result<Profile, SeccompError> {
        let default_action = map_action(
            spec.default_action(),
            spec.default_errno_ret(),
            "defaultAction",
        )?;
        for (i, arch) in spec.architectures().iter().flatten().enumerate() {
            if !matches!(arch, Arch::ScmpArchX86_64 | Arch::ScmpArchNative) {
                return Err(SeccompError::Unsupported {
                    at: format!("architectures[{i}]"),
                    what: format!("architecture {arch} (cloche builds x86_64-only filters; other ABIs are killed)"),
                });
            }
        }
        if let Some(flag) = spec.flags().iter().flatten().next() {
            return Err(SeccompError::Unsupported {
                at: "flags".into(),
                what: format!("filter flag {flag}"),
            });
        }
        if spec.listener_path().is_some() || spec.listener_metadata().is_some() {
            return Err(SeccompError::Unsupported {
                at: "listenerPath".into(),
                what: "a seccomp notify listener".into(),
            });
        }

        // Gather every rule per syscall number.
        let mut by_nr: BTreeMap<i32, (String, Vec<SourceRule>)> = BTreeMap::new();
        let mut absent = Vec::new();
        for (i, sc) in spec.syscalls().iter().flatten().enumerate() {
            let at = format!("syscalls[{i}]");
            if sc.names().is_empty() {
                return Err(invalid(format!("{at}.names"), "is empty"));
            }
            let action = map_action(sc.action(), sc.errno_ret(), &format!("{at}.action"))?;
            let term = map_args(sc.args().as_deref().unwrap_or(&[]), &at)?;
            for (j, name) in sc.names().iter().enumerate() {
                match resolve(name) {
                    Resolved::Nr(nr) => {
                        let entry = by_nr
                            .entry(nr)
                            .or_insert_with(|| (name.clone(), Vec::new()));
                        entry.1.push((action, term.clone(), at.clone()));
                    }
                    Resolved::Absent => absent.push(name.clone()),
                    Resolved::Unknown => {
                        return Err(SeccompError::UnknownSyscall {
                            at: format!("{at}.names[{j}]"),
                            name: name.clone(),
                        })
                    }
                }
            }
        }

        let mut rules = Vec::new();
        for (nr, (name, list)) in &by_nr {
            for (action, conds) in plan_syscall(name, list, default_action)? {
                rules.push(PlannedRule {
                    name: name.clone(),
                    nr: *nr,
                    action,
                    conds,
                });
            }
        }
        // Syscalls newer than anything nameable: ENOSYS, so that libcs fall back.
        let refusing = !matches!(default_action, ScmpAction::Allow | ScmpAction::Log);
        if refusing && default_action != ScmpAction::Errno(libc::ENOSYS) {
            for nr in newest_named_nr() + 1..=LAST_NATIVE_NR {
                if !by_nr.contains_key(&nr) {
                    let action = ScmpAction::Errno(libc::ENOSYS);
                    rules.push(PlannedRule {
                        name: format!("#{nr}"),
                        nr,
                        action,
                        conds: Vec::new(),
                    });
                }
            }
        }
        absent.sort();
        absent.dedup();
        Ok(Profile {
            spec,
            default_action,
            rules,
            absent,
        })
    }

    /// The profile as deserialized.
    pub fn spec(&self) -> &LinuxSeccomp {
        &self.spec
    }

    /// Syscall names the profile mentions that do not exist on x86_64.
    pub fn absent_syscalls(&self) -> &[String] {
        &self.absent
    }

    /// Number of libseccomp rules the profile compiles to.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// How a syscall name resolves on x86_64.
enum Resolved {
    Nr(i32),
    /// Known to libseccomp, but not an x86_64 syscall.
    Absent,
    Unknown,
}

fn resolve(name: &str) -> Resolved {
    if let Ok(sc) = ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664) {
        let nr = sc.as_raw_syscall();
        return if nr >= 0 {
            Resolved::Nr(nr)
        } else {
            Resolved::Absent
        };
    }
    match EXTRA_X86_64.iter().find(|(n, _)| *n == name) {
        Some(&(_, nr)) => Resolved::Nr(nr),
        None => Resolved::Unknown,
    }
}

/// The highest x86_64 syscall number that libseccomp or [`EXTRA_X86_64`] names.
fn newest_named_nr() -> i32 {
    static NEWEST: OnceLock<i32> = OnceLock::new();
    *NEWEST.get_or_init(|| {
        let extra = EXTRA_X86_64.iter().map(|&(_, nr)| nr).max().unwrap_or(0);
        let known = (0..=LAST_NATIVE_NR)
            .rev()
            .find(|&nr| {
                ScmpSyscall::from_raw_syscall(nr)
                    .get_name_by_arch(ScmpArch::X8664)
                    .is_ok()
            })
            .unwrap_or(0);
        extra.max(known)
    })
}

fn map_action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    at: &str,
) -> Result<ScmpAction, SeccompError> {
    let value = |default: u32| -> Result<u16, SeccompError> {
        let v = errno.unwrap_or(default);
        match u16::try_from(v) {
            Ok(v) if v <= 4095 => Ok(v),
            _ => Err(invalid(
                at,
                format!("errno value {v} is out of range 0..=4095"),
            )),
        }
    };
    if errno.is_some()
        && !matches!(
            a,
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
        )
    {
        return Err(invalid(
            at,
            format!("an errno value is given for {a}, which takes none"),
        ));
    }
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(i32::from(value(libc::EPERM as u32)?))
        }
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(value(libc::EPERM as u32)?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported {
                at: at.into(),
                what: "SCMP_ACT_NOTIFY".into(),
            })
        }
    })
}

fn map_args(args: &[oci_spec::runtime::LinuxSeccompArg], at: &str) -> Result<Term, SeccompError> {
    let mut term: Term = Vec::new();
    for (k, a) in args.iter().enumerate() {
        let at = format!("{at}.args[{k}]");
        let arg = u32::try_from(a.index())
            .ok()
            .filter(|&i| i < 6)
            .ok_or_else(|| invalid(&at, format!("argument index {} is not in 0..=5", a.index())))?;
        if term.iter().any(|c| c.arg == arg) {
            return Err(invalid(
                &at,
                format!("argument {arg} is compared twice in one rule; libseccomp cannot AND them (write separate rules to OR them)"),
            ));
        }
        let v = a.value();
        let two = a.value_two();
        let op = match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq {
                mask: v,
                value: two.unwrap_or(0),
            },
            other => {
                if two.is_some_and(|t| t != 0) {
                    return Err(invalid(
                        &at,
                        format!("valueTwo is only used by SCMP_CMP_MASKED_EQ, not {other}"),
                    ));
                }
                match other {
                    LinuxSeccompOperator::ScmpCmpNe => Op::Ne(v),
                    LinuxSeccompOperator::ScmpCmpLt => Op::Lt(v),
                    LinuxSeccompOperator::ScmpCmpLe => Op::Le(v),
                    LinuxSeccompOperator::ScmpCmpEq => Op::Eq(v),
                    LinuxSeccompOperator::ScmpCmpGe => Op::Ge(v),
                    LinuxSeccompOperator::ScmpCmpGt => Op::Gt(v),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => unreachable!("handled above"),
                }
            }
        };
        term.push(Cond { arg, op });
    }
    term.sort();
    Ok(term)
}

/// Turn every rule of one syscall into libseccomp rules (see the module docs).
fn plan_syscall(
    name: &str,
    list: &[SourceRule],
    default: ScmpAction,
) -> Result<Vec<(ScmpAction, Term)>, SeccompError> {
    let conflict = |msg: String| SeccompError::Conflict {
        syscall: name.to_string(),
        msg,
    };
    let mut fallback: Option<(ScmpAction, &str)> = None;
    for (action, _, at) in list.iter().filter(|(_, t, _)| t.is_empty()) {
        match fallback {
            Some((a, first)) if a != *action => {
                return Err(conflict(format!(
                    "{first} says {a:?} and {at} says {action:?}, both unconditionally"
                )))
            }
            _ => fallback = Some((*action, at)),
        }
    }
    let fallback = fallback.map_or(default, |(a, _)| a);

    // Exceptions: conditional rules whose action differs from the fallback.
    let mut exceptions: Vec<(ScmpAction, &Term, &str)> = Vec::new();
    for (action, term, at) in list
        .iter()
        .filter(|(a, t, _)| !t.is_empty() && *a != fallback)
    {
        if let Some((other, _, other_at)) = exceptions
            .iter()
            .find(|(a, t, _)| *t == term && a != action)
        {
            return Err(conflict(format!(
                "{other_at} says {other:?} and {at} says {action:?} for the same arguments"
            )));
        }
        if !exceptions.iter().any(|(a, t, _)| a == action && *t == term) {
            exceptions.push((*action, term, at));
        }
    }

    let mut out: Vec<(ScmpAction, Term)> = exceptions
        .iter()
        .filter(|(a, _, _)| *a != default)
        .map(|(a, t, _)| (*a, (*t).clone()))
        .collect();
    if fallback != default {
        let terms: Vec<Term> = exceptions.iter().map(|(_, t, _)| (*t).clone()).collect();
        let rest = conds::complement(&terms).map_err(|e| match e {
            ComplementError::NotRepresentable(a, b) => conflict(format!(
                "the exceptions to {fallback:?} cannot be compiled: {a:?} and {b:?} compare argument {} in ways libseccomp cannot combine",
                a.arg
            )),
            ComplementError::TooManyTerms => conflict(format!(
                "the exceptions to {fallback:?} would need more than {} rules",
                conds::MAX_TERMS
            )),
        })?;
        if rest.iter().any(|t| t.is_empty()) {
            // The exceptions can never match: the fallback applies to all calls.
            out = vec![(fallback, Vec::new())];
        } else {
            out.extend(rest.into_iter().map(|t| (fallback, t)));
        }
    }
    Ok(out)
}

/// Check the strings oci-spec would reject with a generic message, and keys
/// it would silently ignore, so that errors name the problem and its place.
fn prescan(v: &Value) -> Result<(), SeccompError> {
    const TOP: &[&str] = &[
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
        "comment",
    ];
    const SYSCALL: &[&str] = &["names", "action", "errnoRet", "args", "comment"];
    const ARG: &[&str] = &["index", "value", "valueTwo", "op", "comment"];

    fn keys(v: &Value, at: &str, known: &[&str]) -> Result<(), SeccompError> {
        let obj = v
            .as_object()
            .ok_or_else(|| invalid(at, "must be a JSON object"))?;
        match obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(invalid(
                at,
                format!("unknown field {k:?} (known: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
    fn action(v: Option<&Value>, at: &str) -> Result<(), SeccompError> {
        match v.and_then(Value::as_str) {
            Some(s) if s.parse::<LinuxSeccompAction>().is_err() => {
                Err(SeccompError::UnknownAction {
                    at: at.into(),
                    action: s.into(),
                })
            }
            _ => Ok(()),
        }
    }
    fn array(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
    }

    keys(v, "profile", TOP)?;
    if v.get("defaultAction").is_none() {
        return Err(invalid("profile", "defaultAction is missing"));
    }
    action(v.get("defaultAction"), "defaultAction")?;
    for (i, a) in array(v.get("architectures")) {
        if let Some(s) = a.as_str().filter(|s| s.parse::<Arch>().is_err()) {
            return Err(SeccompError::UnknownArch {
                at: format!("architectures[{i}]"),
                arch: s.into(),
            });
        }
    }
    for (i, f) in array(v.get("flags")) {
        if let Some(s) = f
            .as_str()
            .filter(|s| s.parse::<LinuxSeccompFilterFlag>().is_err())
        {
            return Err(invalid(
                format!("flags[{i}]"),
                format!("unknown flag {s:?}"),
            ));
        }
    }
    for (i, sc) in array(v.get("syscalls")) {
        let at = format!("syscalls[{i}]");
        keys(sc, &at, SYSCALL)?;
        for field in ["names", "action"] {
            if sc.get(field).is_none() {
                return Err(invalid(&at, format!("{field} is missing")));
            }
        }
        action(sc.get("action"), &format!("{at}.action"))?;
        for (k, arg) in array(sc.get("args")) {
            let at = format!("{at}.args[{k}]");
            keys(arg, &at, ARG)?;
            for field in ["index", "value", "op"] {
                if arg.get(field).is_none() {
                    return Err(invalid(&at, format!("{field} is missing")));
                }
            }
            if let Some(s) = arg.get("op").and_then(Value::as_str) {
                if s.parse::<LinuxSeccompOperator>().is_err() {
                    return Err(SeccompError::UnknownOperator {
                        at: format!("{at}.op"),
                        op: s.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A compiled filter: the classic-BPF program the kernel takes.
#[derive(Clone)]
pub struct Program {
    insns: Vec<libc::sock_filter>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.insns.len())
            .finish()
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
            return Err(SeccompError::Unsupported {
                at: "host".into(),
                what: "a host that is not x86_64".into(),
            });
        }
        let mut ctx = ScmpFilterContext::new(profile.default_action)
            .map_err(libseccomp_err("creating the filter"))?;
        ctx.set_act_badarch(ScmpAction::KillProcess)
            .map_err(libseccomp_err("setting the bad-arch action"))?;
        // The caller sets no_new_privs; the exported program does not depend on it.
        ctx.set_ctl_nnp(false).map_err(libseccomp_err("ctl_nnp"))?;
        // Binary search over syscall numbers instead of a linear chain.
        ctx.set_ctl_optimize(2)
            .map_err(libseccomp_err("ctl_optimize"))?;
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
            ctx.add_rule_conditional(r.action, ScmpSyscall::from_raw_syscall(r.nr), &cmps)
                .map_err(libseccomp_err(format!(
                    "adding {:?} for {} with {:?}",
                    r.action, r.name, r.conds
                )))?;
        }
        let memfd = nix::sys::memfd::memfd_create(
            c"cloche-seccomp",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| SeccompError::Libseccomp {
            context: "memfd_create".into(),
            msg: e.to_string(),
        })?;
        ctx.export_bpf(&memfd)
            .map_err(libseccomp_err("exporting the BPF program"))?;
        let mut file = File::from(memfd);
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| SeccompError::Libseccomp {
                context: "reading the exported program".into(),
                msg: e.to_string(),
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
                let reach = if ins.code & 0xf0 == BPF_JA {
                    ins.k as usize
                } else {
                    usize::from(ins.jt.max(ins.jf))
                };
                if i + 1 + reach >= n {
                    return Err(SeccompError::BadProgram(format!(
                        "instruction {i} jumps past the end"
                    )));
                }
            }
        }
        if insns[n - 1].code & BPF_CLASS_MASK != BPF_RET {
            return Err(SeccompError::BadProgram(
                "the last instruction is not a return".into(),
            ));
        }
        Ok(Program {
            insns,
            bytes: bytes.to_vec(),
        })
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
    let fprog = libc::sock_fprog {
        len,
        filter: prog.insns.as_ptr().cast_mut(),
    };
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
