//! Profile parsing, validation and planning (see the parent module's docs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use super::oci::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use libseccomp::{ScmpAction, ScmpArch, ScmpSyscall};
use serde_json::Value;

use super::conds::{self, ComplementError, Cond, Op, Term};
use super::{invalid, SeccompError, DEFAULT_PROFILE_JSON};

/// x86_64 syscalls newer than libseccomp 2.5.4's table (from the kernel's
/// `arch/x86/entry/syscalls/syscall_64.tbl`, present in 6.18).
pub(super) const EXTRA_X86_64: &[(&str, i32)] = &[
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

/// A profile rule for one syscall: action, conditions, where it was written.
type SourceRule = (ScmpAction, Term, String);

/// Which of the two stacked filters a rule goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layer {
    /// The allowlist itself, with the profile's default action.
    Main,
    /// Exceptions to syscalls the main filter allows outright, in a second
    /// filter whose default is ALLOW (see `plan_syscall`).
    Exceptions,
}

/// One libseccomp rule, after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlannedRule {
    pub(super) name: String,
    pub(super) nr: i32,
    pub(super) action: ScmpAction,
    pub(super) conds: Term,
    pub(super) layer: Layer,
}

/// A validated seccomp profile, ready to compile.
#[derive(Debug, Clone)]
pub struct Profile {
    spec: LinuxSeccomp,
    pub(super) default_action: ScmpAction,
    pub(super) rules: Vec<PlannedRule>,
    absent: Vec<String>,
}

impl Profile {
    /// Parse and validate the JSON text of a `linux.seccomp` object.
    pub fn from_json(text: &str) -> Result<Profile, SeccompError> {
        let value: Value = serde_json::from_str(text).map_err(SeccompError::Json)?;
        prescan(&value)?;
        let spec: LinuxSeccomp = serde_json::from_str(text)
            .map_err(|e| invalid(format!("line {} column {}", e.line(), e.column()), e.to_string()))?;
        Profile::from_spec(spec)
    }

    /// Read, parse and validate a profile file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Profile, SeccompError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| SeccompError::Read { path: path.to_path_buf(), source })?;
        Profile::from_json(&text)
    }

    /// The profile shipped with cloche ([`DEFAULT_PROFILE_JSON`]).
    pub fn builtin_default() -> Result<Profile, SeccompError> {
        Profile::from_json(DEFAULT_PROFILE_JSON)
    }

    /// Validate an already deserialized profile.
    pub fn from_spec(spec: LinuxSeccomp) -> Result<Profile, SeccompError> {
        let default_action = map_action(spec.default_action(), spec.default_errno_ret(), "defaultAction")?;
        for (i, arch) in spec.architectures().iter().flatten().enumerate() {
            if !matches!(arch, Arch::ScmpArchX86_64 | Arch::ScmpArchNative) {
                return Err(SeccompError::Unsupported {
                    at: format!("architectures[{i}]"),
                    what: format!("architecture {arch} (cloche builds x86_64-only filters; other ABIs are killed)"),
                });
            }
        }
        if let Some(flag) = spec.flags().iter().flatten().next() {
            return Err(SeccompError::Unsupported { at: "flags".into(), what: format!("filter flag {flag}") });
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
                        let entry = by_nr.entry(nr).or_insert_with(|| (name.clone(), Vec::new()));
                        entry.1.push((action, term.clone(), at.clone()));
                    }
                    Resolved::Absent => absent.push(name.clone()),
                    Resolved::Unknown => {
                        return Err(SeccompError::UnknownSyscall { at: format!("{at}.names[{j}]"), name: name.clone() })
                    }
                }
            }
        }

        let mut rules = Vec::new();
        for (nr, (name, list)) in &by_nr {
            for (action, conds, layer) in plan_syscall(name, list, default_action)? {
                rules.push(PlannedRule { name: name.clone(), nr: *nr, action, conds, layer });
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
                        layer: Layer::Main,
                    });
                }
            }
        }
        absent.sort();
        absent.dedup();
        Ok(Profile { spec, default_action, rules, absent })
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
pub(super) enum Resolved {
    Nr(i32),
    /// Known to libseccomp, but not an x86_64 syscall.
    Absent,
    Unknown,
}

pub(super) fn resolve(name: &str) -> Resolved {
    if let Ok(sc) = ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664) {
        let nr = sc.as_raw_syscall();
        return if nr >= 0 { Resolved::Nr(nr) } else { Resolved::Absent };
    }
    match EXTRA_X86_64.iter().find(|(n, _)| *n == name) {
        Some(&(_, nr)) => Resolved::Nr(nr),
        None => Resolved::Unknown,
    }
}

/// The highest x86_64 syscall number that libseccomp or [`EXTRA_X86_64`] names.
pub(super) fn newest_named_nr() -> i32 {
    static NEWEST: OnceLock<i32> = OnceLock::new();
    *NEWEST.get_or_init(|| {
        let extra = EXTRA_X86_64.iter().map(|&(_, nr)| nr).max().unwrap_or(0);
        let known = (0..=LAST_NATIVE_NR)
            .rev()
            .find(|&nr| ScmpSyscall::from_raw_syscall(nr).get_name_by_arch(ScmpArch::X8664).is_ok())
            .unwrap_or(0);
        extra.max(known)
    })
}

fn map_action(a: LinuxSeccompAction, errno: Option<u32>, at: &str) -> Result<ScmpAction, SeccompError> {
    let value = |default: u32| -> Result<u16, SeccompError> {
        let v = errno.unwrap_or(default);
        match u16::try_from(v) {
            Ok(v) if v <= 4095 => Ok(v),
            _ => Err(invalid(at, format!("errno value {v} is out of range 0..=4095"))),
        }
    };
    if errno.is_some() && !matches!(a, LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace) {
        return Err(invalid(at, format!("an errno value is given for {a}, which takes none")));
    }
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(value(libc::EPERM as u32)?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(value(libc::EPERM as u32)?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported { at: at.into(), what: "SCMP_ACT_NOTIFY".into() })
        }
    })
}

fn map_args(args: &[LinuxSeccompArg], at: &str) -> Result<Term, SeccompError> {
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
            LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq { mask: v, value: two.unwrap_or(0) },
            other => {
                if two.is_some_and(|t| t != 0) {
                    return Err(invalid(&at, format!("valueTwo is only used by SCMP_CMP_MASKED_EQ, not {other}")));
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
) -> Result<Vec<(ScmpAction, Term, Layer)>, SeccompError> {
    let conflict = |msg: String| SeccompError::Conflict { syscall: name.to_string(), msg };
    let mut fallback: Option<(ScmpAction, &str)> = None;
    for (action, _, at) in list.iter().filter(|(_, t, _)| t.is_empty()) {
        match fallback {
            Some((a, first)) if a != *action => {
                return Err(conflict(format!("{first} says {a:?} and {at} says {action:?}, both unconditionally")))
            }
            _ => fallback = Some((*action, at)),
        }
    }
    let fallback = fallback.map_or(default, |(a, _)| a);

    // Exceptions: conditional rules whose action differs from the fallback.
    let mut exceptions: Vec<(ScmpAction, &Term, &str)> = Vec::new();
    for (action, term, at) in list.iter().filter(|(a, t, _)| !t.is_empty() && *a != fallback) {
        if let Some((other, _, other_at)) = exceptions.iter().find(|(a, t, _)| *t == term && a != action) {
            return Err(conflict(format!("{other_at} says {other:?} and {at} says {action:?} for the same arguments")));
        }
        if !exceptions.iter().any(|(a, t, _)| a == action && *t == term) {
            exceptions.push((*action, term, at));
        }
    }

    // Every action ALLOW or a refusal: the main filter allows the syscall
    // outright and a second, small filter (default ALLOW) holds the
    // refusals: the refusing exceptions, and the fallback (when it refuses)
    // on the complement of all the exceptions. The kernel runs both and
    // takes the stricter answer: exactly the rules as written, where an
    // ALLOW exception overlapping a refusing one loses to it. This keeps
    // complements (dozens of rules for socket's allowlist) out of the main
    // filter, whose load time they tripled, and needs none at all for
    // "allow, except when ..." (ioctl).
    let stricter = |a: &ScmpAction| {
        matches!(a, ScmpAction::Errno(_) | ScmpAction::KillProcess | ScmpAction::KillThread | ScmpAction::Trap)
    };
    if default != ScmpAction::Allow
        && fallback != default
        && (fallback == ScmpAction::Allow || stricter(&fallback))
        && !exceptions.is_empty()
        && exceptions.iter().all(|(a, _, _)| *a == ScmpAction::Allow || stricter(a))
    {
        let mut out = vec![(ScmpAction::Allow, Vec::new(), Layer::Main)];
        let refusing = exceptions.iter().filter(|(a, _, _)| stricter(a));
        out.extend(refusing.map(|(a, t, _)| (*a, (*t).clone(), Layer::Exceptions)));
        if fallback != ScmpAction::Allow {
            let terms: Vec<Term> = exceptions.iter().map(|(_, t, _)| (*t).clone()).collect();
            let rest = conds::complement(&terms).map_err(|e| complement_error(&conflict, fallback, e))?;
            out.extend(rest.into_iter().map(|t| (fallback, t, Layer::Exceptions)));
        }
        return Ok(out);
    }
    let mut out: Vec<(ScmpAction, Term, Layer)> =
        exceptions.iter().filter(|(a, _, _)| *a != default).map(|(a, t, _)| (*a, (*t).clone(), Layer::Main)).collect();
    if fallback != default {
        let terms: Vec<Term> = exceptions.iter().map(|(_, t, _)| (*t).clone()).collect();
        let rest = conds::complement(&terms).map_err(|e| complement_error(&conflict, fallback, e))?;
        if rest.iter().any(|t| t.is_empty()) {
            // The exceptions can never match: the fallback applies to all calls.
            out = vec![(fallback, Vec::new(), Layer::Main)];
        } else {
            out.extend(rest.into_iter().map(|t| (fallback, t, Layer::Main)));
        }
    }
    Ok(out)
}

fn complement_error(
    conflict: &dyn Fn(String) -> SeccompError,
    fallback: ScmpAction,
    e: ComplementError,
) -> SeccompError {
    match e {
        ComplementError::NotRepresentable(a, b) => conflict(format!(
            "the exceptions to {fallback:?} cannot be compiled: {a:?} and {b:?} compare argument {} in ways libseccomp cannot combine",
            a.arg
        )),
        ComplementError::TooManyTerms => {
            conflict(format!("the exceptions to {fallback:?} would need more than {} rules", conds::MAX_TERMS))
        }
    }
}

/// Check the names serde would reject with a generic message, and keys it
/// would silently ignore, so that errors name the problem and its place.
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
        let obj = v.as_object().ok_or_else(|| invalid(at, "must be a JSON object"))?;
        match obj.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(invalid(at, format!("unknown field {k:?} (known: {})", known.join(", ")))),
            None => Ok(()),
        }
    }
    fn action(v: Option<&Value>, at: &str) -> Result<(), SeccompError> {
        match v.and_then(Value::as_str) {
            Some(s) if s.parse::<LinuxSeccompAction>().is_err() => {
                Err(SeccompError::UnknownAction { at: at.into(), action: s.into() })
            }
            _ => Ok(()),
        }
    }
    fn array(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
        v.and_then(Value::as_array).into_iter().flatten().enumerate()
    }

    keys(v, "profile", TOP)?;
    if v.get("defaultAction").is_none() {
        return Err(invalid("profile", "defaultAction is missing"));
    }
    action(v.get("defaultAction"), "defaultAction")?;
    for (i, a) in array(v.get("architectures")) {
        if let Some(s) = a.as_str().filter(|s| s.parse::<Arch>().is_err()) {
            return Err(SeccompError::UnknownArch { at: format!("architectures[{i}]"), arch: s.into() });
        }
    }
    for (i, f) in array(v.get("flags")) {
        if let Some(s) = f.as_str().filter(|s| s.parse::<LinuxSeccompFilterFlag>().is_err()) {
            return Err(invalid(format!("flags[{i}]"), format!("unknown flag {s:?}")));
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
                    return Err(SeccompError::UnknownOperator { at: format!("{at}.op"), op: s.into() });
                }
            }
        }
    }
    Ok(())
}
