//! Unit tests: profile validation, and the compiled programs' decisions
//! checked with a small classic-BPF interpreter (the kernel-side proof is in
//! `crates/world/tests/seccomp.rs`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::oci::LinuxSeccompAction;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::profile::{newest_named_nr, resolve, Resolved, EXTRA_X86_64};
use super::*;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = RET_ERRNO | 1;
const ENOSYS: u32 = RET_ERRNO | 38;
const EAFNOSUPPORT: u32 = RET_ERRNO | 97;

/// What the default profile allows of socket(family, type, protocol) (all
/// 64 bits compared, except type, whose low nibble alone is checked).
fn socket_allowed(args: [u64; 6]) -> bool {
    let [family, ty, protocol, ..] = args;
    match family {
        1 => true,
        2 | 10 => ty & 0xc == 0 && matches!(protocol, 0 | 1 | 6 | 17 | 58),
        16 => matches!(protocol, 0 | 4),
        _ => false,
    }
}

/// Run every filter of a program on one `struct seccomp_data` and combine
/// the answers as the kernel does: the lowest action value (as i32) wins.
fn run(prog: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    prog.filters()
        .map(|f| run_filter(f, arch, nr, args))
        .min_by_key(|r| (r & 0xffff_0000) as i32)
        .expect("at least one filter")
}

/// Run one classic-BPF filter on one `struct seccomp_data`.
fn run_filter(insns: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            0 => nr,
            4 => arch,
            8 | 12 => 0, // instruction pointer
            16..=63 => {
                let a = args[((off - 16) / 8) as usize];
                match off % 8 {
                    0 => a as u32,
                    4 => (a >> 32) as u32,
                    _ => panic!("unaligned load at {off}"),
                }
            }
            _ => panic!("load from offset {off}"),
        }
    };
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    for _ in 0..100_000 {
        let ins = insns[pc];
        pc += 1;
        let src = if ins.code & 0x08 != 0 { x } else { ins.k };
        match ins.code & 0x07 {
            0x00 => match ins.code & 0xe0 {
                0x20 => a = word(ins.k),
                0x00 => a = ins.k,
                0x60 => a = mem[ins.k as usize],
                m => panic!("ld mode {m:#x}"),
            },
            0x01 => match ins.code & 0xe0 {
                0x00 => x = ins.k,
                0x60 => x = mem[ins.k as usize],
                m => panic!("ldx mode {m:#x}"),
            },
            0x02 => mem[ins.k as usize] = a,
            0x03 => mem[ins.k as usize] = x,
            0x04 => {
                a = match ins.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a << src,
                    0x70 => a >> src,
                    0x80 => a.wrapping_neg(),
                    0x90 => a % src,
                    0xa0 => a ^ src,
                    op => panic!("alu op {op:#x}"),
                }
            }
            0x05 => {
                let taken = match ins.code & 0xf0 {
                    0x00 => {
                        pc += ins.k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    op => panic!("jmp op {op:#x}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            0x06 => return if ins.code & 0x18 == 0x10 { a } else { ins.k },
            _ => match ins.code & 0xf8 {
                0x00 => x = a,
                0x80 => a = x,
                op => panic!("misc op {op:#x}"),
            },
        }
    }
    panic!("program does not terminate");
}

fn nr(name: &str) -> u32 {
    match resolve(name) {
        Resolved::Nr(n) => n as u32,
        _ => panic!("{name} is not an x86_64 syscall"),
    }
}

fn default_program() -> (Profile, Program) {
    let profile = Profile::builtin_default().expect("default profile parses");
    let prog = Program::compile(&profile).expect("default profile compiles");
    (profile, prog)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Random arguments, biased towards the values the rules compare.
    fn args(&mut self, focus: &[u64]) -> [u64; 6] {
        std::array::from_fn(|_| {
            let f = focus[(self.next() % focus.len() as u64) as usize];
            match self.next() % 4 {
                0 => self.next(),
                1 => f,
                2 => f | (self.next() << 32),
                _ => f ^ (1 << (self.next() % 32)),
            }
        })
    }
}

fn names_with(profile: &Profile, action: LinuxSeccompAction, conditional: bool) -> Vec<String> {
    let mut out = Vec::new();
    for sc in profile.spec().syscalls().iter().flatten() {
        if sc.action() == action && sc.args().as_ref().is_some_and(|a| !a.is_empty()) == conditional {
            out.extend(sc.names().iter().cloned());
        }
    }
    out
}

#[test]
fn seccomp_default_profile_decisions() {
    let (profile, prog) = default_program();
    assert!(prog.len() > 100 && prog.len() < MAX_INSTRUCTIONS, "{} instructions", prog.len());
    println!("filters: {:?} instructions", prog.filters().map(<[_]>::len).collect::<Vec<_>>());
    assert_eq!(profile.absent_syscalls(), ["stime"]);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let focus = [
        0,
        1,
        2,
        3,
        4,
        6,
        8,
        10,
        12,
        16,
        17,
        40,
        58,
        0x5412,
        0x541c,
        0x20000,
        0xffff_ffff,
        0x1000_0000,
        0x7e02_0080,
        0o020644,
        0o010644,
        0o060600,
    ];
    let x86 = |nr: u32, args: [u64; 6]| run(&prog, AUDIT_ARCH_X86_64, nr, args);

    let allowed = names_with(&profile, LinuxSeccompAction::ScmpActAllow, false);
    assert!(allowed.len() > 250, "{} allowed", allowed.len());
    let with_exceptions = ["ioctl", "mknod", "mknodat", "renameat2"];
    for name in allowed.iter().filter(|n| !with_exceptions.contains(&n.as_str())) {
        for _ in 0..20 {
            assert_eq!(x86(nr(name), rng.args(&focus)), RET_ALLOW, "{name}");
        }
    }
    let refused = names_with(&profile, LinuxSeccompAction::ScmpActErrno, false);
    let own_errno = ["stime", "clone3", "socket", "socketpair"];
    for name in refused.iter().filter(|n| !own_errno.contains(&n.as_str())) {
        assert!(!allowed.contains(name), "{name} both allowed and refused");
        for _ in 0..20 {
            assert_eq!(x86(nr(name), rng.args(&focus)), EPERM, "{name}");
        }
    }
    for name in ["unshare", "setns", "mount", "fsopen", "bpf", "keyctl", "io_uring_setup", "chroot"] {
        assert!(refused.iter().any(|n| n == name), "{name} is not listed as refused");
    }
    // Known syscalls the profile does not mention: default EPERM.
    for name in ["fanotify_init", "kcmp", "sethostname", "modify_ldt", "_sysctl"] {
        assert_eq!(x86(nr(name), [0; 6]), EPERM, "{name}");
    }
    assert_eq!(x86(nr("clone3"), [0; 6]), ENOSYS);
    assert_eq!(x86(u32::MAX, [0; 6]), EPERM);
    assert_eq!(x86(400, [0; 6]), EPERM, "hole in the table");
    for n in 470..=511 {
        assert_eq!(x86(n, [0; 6]), ENOSYS, "future syscall {n}");
    }
    assert_eq!(x86(512, [0; 6]), EPERM);
    // Every family number a 32-bit int can hold near the allowlist, with the
    // common types: exactly the allowlist passes.
    for family in (0..=1024).chain([u32::MAX as u64, 1 << 32 | 1, u64::MAX]) {
        for ty in [1, 2, 3, 5, 10, 0x80801] {
            for protocol in 0..=300 {
                let args = [family, ty, protocol, 0, 0, 0];
                let want = if socket_allowed(args) { RET_ALLOW } else { EAFNOSUPPORT };
                assert_eq!(x86(nr("socket"), args), want, "socket {args:x?}");
            }
        }
    }

    for _ in 0..50_000 {
        let args = rng.args(&focus);
        let lo = |i: usize| args[i] & 0xffff_ffff;
        let clone_ok = lo(0) & 0x7e02_0080 == 0;
        assert_eq!(x86(nr("clone"), args) == RET_ALLOW, clone_ok, "clone {args:x?}");
        let ioctl_refused = matches!(lo(1), 0x5412 | 0x541c);
        assert_eq!(x86(nr("ioctl"), args), if ioctl_refused { EPERM } else { RET_ALLOW }, "ioctl {args:x?}");
        let want = |ok: bool| if ok { RET_ALLOW } else { EAFNOSUPPORT };
        assert_eq!(x86(nr("socket"), args), want(socket_allowed(args)), "socket {args:x?}");
        assert_eq!(x86(nr("socketpair"), args), want(args[0] == 1), "socketpair {args:x?}");
        // Character devices (whiteouts, all a world could make) and
        // RENAME_WHITEOUT refused; files, fifos and sockets made.
        let chr = |m: u64| m & 0o170000 == 0o020000;
        assert_eq!(x86(nr("mknod"), args), if chr(args[1]) { EPERM } else { RET_ALLOW }, "mknod {args:x?}");
        assert_eq!(x86(nr("mknodat"), args), if chr(args[2]) { EPERM } else { RET_ALLOW }, "mknodat {args:x?}");
        let whiteout = args[4] & 4 != 0;
        assert_eq!(x86(nr("renameat2"), args), if whiteout { EPERM } else { RET_ALLOW }, "renameat2 {args:x?}");
        let pers_ok = matches!(lo(0), 0 | 8 | 0x20000 | 0x20008 | 0xffff_ffff);
        assert_eq!(x86(nr("personality"), args) == RET_ALLOW, pers_ok, "personality {args:x?}");
    }
    // The exact values, with and without garbage in the upper half.
    for hi in [0u64, 1 << 32, 0xdead_beef << 32] {
        assert_eq!(x86(nr("ioctl"), [0, hi | 0x5412, 0, 0, 0, 0]), EPERM);
        assert_eq!(x86(nr("ioctl"), [0, hi | 0x541c, 0, 0, 0, 0]), EPERM);
        assert_eq!(x86(nr("ioctl"), [0, hi | 0x541b, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86(nr("socket"), [hi | 16, 3, hi | 12, 0, 0, 0]), EAFNOSUPPORT);
        assert_eq!(x86(nr("socket"), [hi | 40, 1, 0, 0, 0, 0]), EAFNOSUPPORT);
        assert_eq!(x86(nr("socket"), [16, 3, hi, 0, 0, 0]), if hi == 0 { RET_ALLOW } else { EAFNOSUPPORT });
        assert_eq!(x86(nr("socket"), [2, hi | 0x80801, 6, 0, 0, 0]), RET_ALLOW, "type flags and upper half");
        assert_eq!(x86(nr("socket"), [2, hi | 10, 0, 0, 0, 0]), EAFNOSUPPORT, "SOCK_PACKET");
        assert_eq!(x86(nr("clone"), [hi | 0x1000_0011, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(x86(nr("clone"), [hi | 0x0001_0f11, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86(nr("mknodat"), [0, 0, hi | 0o020644, 0, 0, 0]), EPERM, "whiteout");
        assert_eq!(x86(nr("mknodat"), [0, 0, hi | 0o010644, 0, 0, 0]), RET_ALLOW, "fifo");
        assert_eq!(x86(nr("renameat2"), [0, 0, 0, 0, hi | 4, 0]), EPERM, "RENAME_WHITEOUT");
        assert_eq!(x86(nr("renameat2"), [0, 0, 0, 0, hi | 3, 0]), RET_ALLOW, "NOREPLACE, EXCHANGE");
    }

    // Other ABIs are killed whatever the number.
    for n in [0, 20, nr("getpid"), 1000] {
        assert_eq!(run(&prog, AUDIT_ARCH_I386, n, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&prog, AUDIT_ARCH_AARCH64, n, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(x86(X32_SYSCALL_BIT | n, [0; 6]), RET_KILL_PROCESS);
    }
}

/// What libseccomp 2.5.4 itself does with the constructs the module works
/// around; if a libseccomp upgrade changes this, the notes need revisiting.
#[test]
fn seccomp_libseccomp_mixed_rule_behaviour() {
    let ioctl = ScmpSyscall::from_name("ioctl").unwrap();
    let tiocsti = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xffff_ffff), 0x5412);
    let export = |ctx: &ScmpFilterContext| {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        ctx.export_bpf(&fd).unwrap();
        let mut f = File::from(fd);
        let mut b = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut b).unwrap();
        Program::from_bytes(&b).unwrap()
    };
    // 1. A rule whose action equals the default action is refused.
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(1)).unwrap();
    assert!(ctx.add_rule_conditional(ScmpAction::Errno(1), ioctl, &[tiocsti]).is_err());
    // 2. Unconditional ALLOW plus a conditional ERRNO (different from the
    //    default): the unconditional rule wins, in either order.
    for allow_first in [true, false] {
        let mut ctx = ScmpFilterContext::new(ScmpAction::KillProcess).unwrap();
        if allow_first {
            ctx.add_rule(ScmpAction::Allow, ioctl).unwrap();
            let _ = ctx.add_rule_conditional(ScmpAction::Errno(1), ioctl, &[tiocsti]);
        } else {
            ctx.add_rule_conditional(ScmpAction::Errno(1), ioctl, &[tiocsti]).unwrap();
            ctx.add_rule(ScmpAction::Allow, ioctl).unwrap();
        }
        let prog = export(&ctx);
        let got = run(&prog, AUDIT_ARCH_X86_64, nr("ioctl"), [0, 0x5412, 0, 0, 0, 0]);
        assert_eq!(got, RET_ALLOW, "libseccomp kept the TIOCSTI exception (allow_first={allow_first})");
    }
    // 3. Two comparisons of one argument in one rule: EINVAL.
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(1)).unwrap();
    let ne = |v| ScmpArgCompare::new(1, ScmpCompareOp::NotEqual, v);
    assert!(ctx.add_rule_conditional(ScmpAction::Allow, ioctl, &[ne(0x5412), ne(0x541c)]).is_err());
    // 4. A plain 64-bit NE on an int argument lets the upper half through.
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(1)).unwrap();
    ctx.add_rule_conditional(ScmpAction::Allow, ioctl, &[ne(0x5412)]).unwrap();
    let prog = export(&ctx);
    assert_eq!(run(&prog, AUDIT_ARCH_X86_64, nr("ioctl"), [0, 0x1_0000_5412, 0, 0, 0, 0]), RET_ALLOW);
}

fn err(json: &str) -> SeccompError {
    match Profile::from_json(json) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e,
    }
}

#[test]
fn seccomp_profile_errors_are_typed() {
    let p = |rules: &str| format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{rules}]}}"#);
    assert!(matches!(err("{"), SeccompError::Json(_)));
    assert!(matches!(err(""), SeccompError::Json(_)));
    assert!(matches!(err("[]"), SeccompError::Invalid { .. }));
    assert!(matches!(err("{}"), SeccompError::Invalid { .. }));
    let e = err(&p(r#"{"names":["read","frobnicate"],"action":"SCMP_ACT_ALLOW"}"#));
    assert!(
        matches!(&e, SeccompError::UnknownSyscall { at, name } if at == "syscalls[0].names[1]" && name == "frobnicate"),
        "{e}"
    );
    let e = err(&p(r#"{"names":["read"],"action":"SCMP_ACT_MAYBE"}"#));
    assert!(matches!(&e, SeccompError::UnknownAction { at, .. } if at == "syscalls[0].action"), "{e}");
    assert!(matches!(err(r#"{"defaultAction":"ALLOW"}"#), SeccompError::UnknownAction { .. }));
    let e =
        err(&p(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}"#));
    assert!(matches!(&e, SeccompError::UnknownOperator { at, .. } if at == "syscalls[0].args[0].op"), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_VAX"]}"#);
    assert!(matches!(e, SeccompError::UnknownArch { .. }), "{e}");
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"]}"#);
    assert!(matches!(e, SeccompError::Unsupported { .. }), "{e}");
    assert!(matches!(err(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#), SeccompError::Unsupported { .. }));
    let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_LOG"]}"#);
    assert!(matches!(e, SeccompError::Unsupported { .. }), "{e}");
    // A typo must not make a conditional rule unconditional.
    let e =
        err(&p(r#"{"names":["clone"],"action":"SCMP_ACT_ALLOW","arg":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}"#));
    assert!(matches!(&e, SeccompError::Invalid { msg, .. } if msg.contains("\"arg\"")), "{e}");
    for bad in [
        r#"{"names":"read","action":"SCMP_ACT_ALLOW"}"#,
        r#"{"names":[],"action":"SCMP_ACT_ALLOW"}"#,
        r#"{"names":["read"]}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":5000}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":-1}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_EQ"}]}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_GE"},{"index":0,"value":9,"op":"SCMP_CMP_LE"}]}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"op":"SCMP_CMP_EQ"}]}"#,
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":-3,"op":"SCMP_CMP_EQ"}]}"#,
    ] {
        let e = err(&p(bad));
        assert!(matches!(e, SeccompError::Invalid { .. }), "{bad}: {e}");
    }
    // Conflicts.
    let e = err(&p(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["read"],"action":"SCMP_ACT_KILL"}"#));
    assert!(matches!(&e, SeccompError::Conflict { syscall, .. } if syscall == "read"), "{e}");
    let a = r#""args":[{"index":0,"value":3,"op":"SCMP_CMP_EQ"}]"#;
    let e = err(&p(&format!(
        r#"{{"names":["read"],"action":"SCMP_ACT_ALLOW",{a}}},{{"names":["read"],"action":"SCMP_ACT_KILL",{a}}}"#
    )));
    assert!(matches!(e, SeccompError::Conflict { .. }), "{e}");
    let e = err(&p(
        // (A fallback of ALLOW would be compiled as a second filter instead.)
        r#"{"names":["read"],"action":"SCMP_ACT_LOG"},{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":3,"op":"SCMP_CMP_LT"}]},{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":255,"valueTwo":7,"op":"SCMP_CMP_MASKED_EQ"}]}"#,
    ));
    assert!(matches!(&e, SeccompError::Conflict { msg, .. } if msg.contains("cannot be compiled")), "{e}");
    // Files.
    let e = Profile::from_file("/nonexistent/cloche/seccomp.json").unwrap_err();
    assert!(matches!(&e, SeccompError::Read { path, .. } if path.ends_with("seccomp.json")), "{e}");
    assert!(e.to_string().contains("/nonexistent/cloche/seccomp.json"));
}

#[test]
fn seccomp_mangled_profiles_never_panic() {
    let text = DEFAULT_PROFILE_JSON;
    for cut in (0..text.len()).step_by(37) {
        if text.is_char_boundary(cut) {
            assert!(Profile::from_json(&text[..cut]).is_err(), "prefix {cut} accepted");
        }
    }
    let mut rng = Rng(7);
    let bytes = text.as_bytes();
    for _ in 0..300 {
        let mut b = bytes.to_vec();
        for _ in 0..3 {
            let i = (rng.next() % b.len() as u64) as usize;
            b[i] = b" \"{}[],:0123456789aeflnrstuxAEFLNRSTUX_-"[(rng.next() % 40) as usize];
        }
        if let Ok(s) = std::str::from_utf8(&b) {
            if let Ok(p) = Profile::from_json(s) {
                let _ = Program::compile(&p);
            }
        }
    }
}

#[test]
fn seccomp_other_profiles_compile_with_their_semantics() {
    // A blocklist: default allow, TIOCSTI refused; the exception is added directly.
    let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":4294967295,"valueTwo":21522,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"},
        {"names":["mount"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let prog = Program::compile(&Profile::from_json(json).unwrap()).unwrap();
    let x86 = |n: &str, a1: u64| run(&prog, AUDIT_ARCH_X86_64, nr(n), [0, a1, 0, 0, 0, 0]);
    assert_eq!(x86("ioctl", 0x7_0000_5412), RET_ERRNO | 13);
    assert_eq!(x86("ioctl", 0x5413), RET_ALLOW);
    assert_eq!(x86("ptrace", 0), RET_KILL_PROCESS);
    assert_eq!(x86("mount", 0), RET_ALLOW);
    assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 480, [0; 6]), RET_ALLOW, "no ENOSYS range when allowing");
    // Exceptions written with EQ on one argument, with a third action.
    let json = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
        {"names":["kill"],"action":"SCMP_ACT_ALLOW"},
        {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
        {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":19,"op":"SCMP_CMP_EQ"}]}]}"#;
    let profile = Profile::from_json(json).unwrap();
    let prog = Program::compile(&profile).unwrap();
    let mut rng = Rng(99);
    for _ in 0..20_000 {
        let args = rng.args(&[9, 19, 0]);
        let want = match args[1] {
            9 => EPERM,
            19 => RET_KILL_PROCESS,
            _ => RET_ALLOW,
        };
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, nr("kill"), args), want, "{args:x?}");
    }
}

#[test]
fn seccomp_program_bytes_round_trip() {
    let (_, prog) = default_program();
    let again = Program::from_bytes(prog.as_bytes()).unwrap();
    assert_eq!(again, prog);
    // The default profile is two stacked filters: exceptions, then the allowlist.
    assert_eq!(prog.filters().count(), 2);
    assert!(!again.is_empty());
    assert!(matches!(Program::from_bytes(&[]), Err(SeccompError::BadProgram(_))));
    assert!(matches!(Program::from_bytes(&prog.as_bytes()[..12]), Err(SeccompError::BadProgram(_))));
    // Cut at an instruction boundary: a filter is truncated.
    let cut = &prog.as_bytes()[..prog.as_bytes().len() - 8 * 3];
    assert!(matches!(Program::from_bytes(cut), Err(SeccompError::BadProgram(_))));
    // One raw filter (as libseccomp exports it) is a program too.
    let main = prog.filters().last().unwrap();
    let raw: Vec<u8> = main
        .iter()
        .flat_map(|i| {
            let mut b = i.code.to_ne_bytes().to_vec();
            b.extend([i.jt, i.jf]);
            b.extend(i.k.to_ne_bytes());
            b
        })
        .collect();
    let single = Program::from_bytes(&raw).unwrap();
    assert_eq!(single.len() * 8, raw.len());
    let raw_cut = &raw[..raw.len() - 8 * 3];
    assert!(matches!(Program::from_bytes(raw_cut), Err(SeccompError::BadProgram(_))));
    assert!(matches!(Program::from_bytes(&vec![0u8; 8 * 4097]), Err(SeccompError::BadProgram(_))));
    // Compiling is deterministic, so a cache key can be the profile text.
    assert_eq!(default_program().1, prog);
}

#[test]
fn seccomp_extra_names_agree_with_libseccomp() {
    for &(name, n) in EXTRA_X86_64 {
        if let Ok(sc) = ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664) {
            assert_eq!(sc.as_raw_syscall(), n, "{name}");
        }
    }
    assert_eq!(newest_named_nr(), 469);
}
