//! What a world cannot see or touch: host processes, sockets, network, secrets,
//! file descriptors, privileges, refused system calls, the terminal.
//! Guarantees are checked from outside the world wherever possible.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;

/// Whether a probe `read` line revealed `secret`.
fn revealed(line: &Value, secret: &str) -> bool {
    line["ok"] == true && line["text"].as_str().unwrap_or("").contains(secret)
}

fn lines_by_path(o: &Outcome) -> BTreeMap<String, Value> {
    o.lines().into_iter().map(|v| (v["path"].as_str().unwrap_or("").to_string(), v)).collect()
}

#[test]
fn host_processes_are_invisible_and_unkillable() {
    let fx = Fixture::new();
    let secs = format!("3600.{}", std::process::id());
    let mut host = HostChild::spawn(Command::new("sleep").arg(&secs));
    let hp = host.pid();

    let o = fx.probe::<&str, _>(&[], &["ps"]);
    o.expect_code(0);
    let v = o.one();
    let me = v["self"].as_i64().unwrap();
    let pids: Vec<i64> = v["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    assert_eq!(
        pids,
        {
            let mut w = vec![1, me];
            w.sort();
            w
        },
        "the world must contain only its init (pid 1) and the command\n{}",
        o.describe()
    );
    assert!(!pids.contains(&(hp as i64)), "host pid {hp} is visible in the world");
    let argvs = v["procs"].to_string();
    assert!(!argvs.contains(&secs), "the host's `sleep {secs}` is visible in the world: {argvs}");

    // Kill the host process by its host pid, then everything the world may signal.
    let o = fx.sh::<&str>(&[], &format!("\"$PROBE\" kill {hp} 9; \"$PROBE\" kill -1 9; echo '{{\"survived\":true}}'"));
    let lines = o.lines();
    assert_eq!(
        lines.first().map(|l| &l["ret"]),
        Some(&Value::from(-1)),
        "kill({hp}, SIGKILL) from inside must fail\n{}",
        o.describe()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(host.alive(), "the host process {hp} was killed from inside a world");
    fx.finish();
}

#[test]
fn pid_1_is_a_dedicated_init_not_the_command() {
    let fx = Fixture::new();
    let secret = format!("secret-{}", fx.tag);
    let mut cmd = fx.command();
    cmd.env("SECRET_TOKEN", &secret);
    let probe = probe_bin();
    let o = fx.run_with(cmd, &["--timeout", "30"], &[probe.to_str().unwrap(), "ps"]);
    o.expect_code(0);
    let v = o.one();
    assert_ne!(v["self"], 1, "the command must not be pid 1\n{}", o.describe());
    assert_eq!(v["ppid"], 1, "the command must be a child of the init\n{}", o.describe());
    let init: Vec<String> = v["procs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == 1)
        .map(|p| string_list(&p["cmdline"]))
        .unwrap_or_default();
    assert!(!init.is_empty(), "pid 1 has no argv\n{}", o.describe());
    let joined = init.join(" ");
    let report = fx.report_path();
    for bad in ["--report", "--timeout", report.to_str().unwrap(), fx.state.path().to_str().unwrap(), secret.as_str()] {
        assert!(!joined.contains(bad), "pid 1's argv {init:?} exposes {bad:?} (cloche's own argv or environment)");
    }
    let argv0 = Path::new(&init[0]).file_name().unwrap_or_default();
    assert_ne!(argv0, "cloche", "pid 1 is a copy of the cloche binary: {init:?}");

    // Neither its argv nor its environment tell the world cloche's secrets.
    let mut cmd = fx.command();
    cmd.env("SECRET_TOKEN", &secret);
    let o = fx.run_with(cmd, &[] as &[&str], &[probe.to_str().unwrap(), "read", "/proc/1/environ", "/proc/1/cmdline"]);
    o.expect_code(0);
    for line in o.lines() {
        assert!(!revealed(&line, &secret), "{} of pid 1 holds cloche's environment: {line}", line["path"]);
    }
    fx.finish();
}

#[test]
fn background_processes_do_not_survive_the_command() {
    let fx = Fixture::new();

    // A daemon: double fork, setsid, SIGTERM and SIGHUP ignored, no stdio.
    let marker = fx.dir().join(format!("bg-marker-daemon-{}", fx.tag));
    let o = fx.probe::<&str, _>(&[], &["sleep-bg", marker.to_str().unwrap(), "3"]);
    o.expect_code(0);
    assert_eq!(o.one()["started"], true, "{}", o.describe());
    let left = processes_left_with(&fx.tag);
    assert!(left.is_empty(), "processes of the world are still running after cloche exited: {left:?}");
    assert!(
        find_entry(&o.report(), "added", &marker).is_none(),
        "the background child wrote its marker before the world ended: cloche waited for it"
    );

    // A plain `cmd &` of a shell, holding the world's stdout.
    let marker2 = fx.dir().join(format!("bg-marker-shell-{}", fx.tag));
    let o = fx.sh::<&str>(&[], &format!("\"$PROBE\" bg-child '{}' 3 & echo started", marker2.display()));
    o.expect_code(0);
    let left = processes_left_with(&fx.tag);
    assert!(left.is_empty(), "processes of the world are still running after cloche exited: {left:?}");
    assert!(
        find_entry(&o.report(), "added", &marker2).is_none(),
        "the background child wrote its marker before the world ended: cloche waited for it"
    );
    assert!(o.elapsed < Duration::from_millis(2500), "cloche waited {:?} for a background process", o.elapsed);

    // Later: still nothing, and the host never sees the markers.
    std::thread::sleep(Duration::from_millis(3500));
    let left = processes_with(&fx.tag);
    assert!(left.is_empty(), "world processes reappeared: {left:?}");
    assert!(!marker.exists() && !marker2.exists());
    fx.finish();
}

#[test]
fn no_host_unix_socket_is_reachable() {
    let fx = Fixture::new();
    let run_dir = Scratch::new_in("/run", "cloche-test-sock-");
    let tmp_dir = Scratch::new_in("/tmp", "cloche-test-sock-");
    let paths: Vec<PathBuf> =
        vec![run_dir.path().join("s.sock"), tmp_dir.path().join("s.sock"), fx.dir().join("s.sock")];
    let listeners: Vec<UnixListener> = paths.iter().map(|p| UnixListener::bind(p).unwrap()).collect();
    let abstract_name = format!("cloche-test-{}", fx.tag);
    let abs = UnixListener::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap()).unwrap();
    for l in listeners.iter().chain([&abs]) {
        l.set_nonblocking(true).unwrap();
    }

    let mut script = String::new();
    for p in &paths {
        script += &format!("\"$PROBE\" connect-unix '{}'\n", p.display());
    }
    script += &format!("\"$PROBE\" connect-abstract '{abstract_name}'\n");
    let o = fx.sh::<&str>(&[], &script);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(lines.len(), 4, "{}", o.describe());
    for l in &lines {
        assert_eq!(l["ok"], false, "a host socket was reachable: {l}");
    }
    // From outside: no connection ever arrived.
    for (l, what) in
        listeners.iter().zip(paths.iter().map(|p| p.display().to_string())).chain([(&abs, format!("@{abstract_name}"))])
    {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{what} received a connection from the world: {other:?}"),
        }
    }
    // Control: the sockets do work from the host.
    for p in &paths {
        UnixStream::connect(p).unwrap_or_else(|e| panic!("control connect {}: {e}", p.display()));
    }
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap())
        .expect("control connect to the abstract socket");
    drop(listeners);
    drop(abs);
    fx.finish();
}

#[test]
fn network_is_loopback_only() {
    let fx = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for opts in [vec![], vec!["--net", "none"]] {
        let o = fx.sh(&opts, &format!("\"$PROBE\" netdev; \"$PROBE\" connect-tcp {addr}"));
        o.expect_code(0);
        let lines = o.lines();
        assert_eq!(lines.len(), 2, "{}", o.describe());
        assert_eq!(
            string_list(&lines[0]["interfaces"]),
            vec!["lo".to_string()],
            "options {opts:?}: the world must have only a loopback interface\n{}",
            o.describe()
        );
        assert_eq!(
            lines[1]["ok"], false,
            "options {opts:?}: the host's 127.0.0.1 listener was reachable: {}",
            lines[1]
        );
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the host listener received a connection: {other:?}"),
        }
    }
    std::net::TcpStream::connect(&addr).expect("control: the listener works from the host");
    fx.finish();
}

#[test]
fn shadow_files_and_root_home_are_masked() {
    let fx = Fixture::new();
    let shadow = fs::read_to_string("/etc/shadow").unwrap();
    assert!(shadow.contains("root:"), "precondition: host /etc/shadow");
    let gshadow = fs::read_to_string("/etc/gshadow").unwrap_or_default();

    let marker_path = PathBuf::from(format!("/root/.cloche-test-{}", fx.tag));
    let secret = format!("root-secret-{}", fx.tag);
    fs::write(&marker_path, &secret).unwrap();
    let _marker = Scratch::adopt(marker_path.clone());
    let host_root: Vec<String> =
        fs::read_dir("/root").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();

    let o = fx.probe::<&str, _>(&[], &["read", "/etc/shadow", "/etc/gshadow", marker_path.to_str().unwrap()]);
    o.expect_code(0);
    let by = lines_by_path(&o);
    assert!(!revealed(&by["/etc/shadow"], "root:"), "/etc/shadow is readable in the world: {}", by["/etc/shadow"]);
    if gshadow.contains("root:") {
        assert!(
            !revealed(&by["/etc/gshadow"], "root:"),
            "/etc/gshadow is readable in the world: {}",
            by["/etc/gshadow"]
        );
    }
    assert!(!revealed(&by[marker_path.to_str().unwrap()], &secret), "a file in /root is readable in the world");

    // A PATH that names no toolchain under /root (those are shown read-only:
    // tests/home.rs).
    let o = fx.probe(&["--env", "PATH=/usr/local/bin:/usr/bin:/bin"], &["ls", "/root"]);
    o.expect_code(0);
    let v = o.one();
    let inside = string_list(&v["entries"]);
    let shown: Vec<&String> = inside.iter().filter(|e| host_root.contains(e)).collect();
    assert!(shown.is_empty(), "host /root entries are visible in the world: {shown:?}");
    fx.finish();
}

#[test]
fn home_dirs_and_their_secrets_are_masked_and_expose_unmasks() {
    let fx = Fixture::new();
    let home = PathBuf::from(format!("/home/cloche-test-{}", fx.tag));
    let _home_guard = Scratch::adopt(home.clone());
    let secret_files = [
        ".ssh/id_test",
        ".aws/credentials",
        ".gnupg/secring.gpg",
        ".netrc",
        ".config/gh/hosts.yml",
        ".docker/config.json",
    ];
    let secret_of = |rel: &str| format!("secret-{rel}-{}", fx.tag);
    for rel in secret_files.iter().chain(&["notes.txt", "proj/readme.txt"]) {
        let p = home.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, secret_of(rel)).unwrap();
    }
    let before = tree_snapshot(&home);
    let probe = probe_bin();
    let read_all = |cwd: &Path, opts: &[&str]| -> BTreeMap<String, Value> {
        let mut cmd = fx.command();
        cmd.current_dir(cwd);
        let mut args = vec![probe.to_str().unwrap().to_string(), "read".into()];
        for rel in secret_files.iter().chain(&["notes.txt", "proj/readme.txt"]) {
            args.push(home.join(rel).to_str().unwrap().into());
        }
        let o = fx.run_with(cmd, opts, &args);
        o.expect_code(0);
        lines_by_path(&o)
    };
    let path_of = |rel: &str| home.join(rel).to_str().unwrap().to_string();
    let check_secrets_hidden = |by: &BTreeMap<String, Value>, case: &str| {
        for rel in secret_files {
            assert!(
                !revealed(&by[&path_of(rel)], &secret_of(rel)),
                "{case}: ~/{rel} is readable in the world: {}",
                by[&path_of(rel)]
            );
        }
    };

    // cwd elsewhere: the whole home is masked.
    let by = read_all(fx.dir(), &[]);
    check_secrets_hidden(&by, "cwd in /tmp");
    for rel in ["notes.txt", "proj/readme.txt"] {
        assert!(!revealed(&by[&path_of(rel)], &secret_of(rel)), "cwd in /tmp: ~/{rel} is readable in the world");
    }

    // cwd = ~/proj: that subtree only.
    let by = read_all(&home.join("proj"), &[]);
    assert!(
        revealed(&by[&path_of("proj/readme.txt")], &secret_of("proj/readme.txt")),
        "cwd ~/proj: the cwd's own files must be visible: {}",
        by[&path_of("proj/readme.txt")]
    );
    assert!(
        !revealed(&by[&path_of("notes.txt")], &secret_of("notes.txt")),
        "cwd ~/proj: ~/notes.txt (outside the cwd) is readable"
    );
    check_secrets_hidden(&by, "cwd ~/proj");

    // cwd = ~: a home itself is never exposed (one line, no world).
    let mut cmd = fx.command();
    cmd.current_dir(&home);
    let o = fx.run_with(cmd, &[] as &[&str], &["true"]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a home directory"), "{}", o.describe());

    // --expose ~/.ssh unmasks it (the operator's relaxation, said on
    // stderr), and writes there still do not reach the host.
    let ssh = home.join(".ssh");
    let o = fx.probe(&["--expose", ssh.to_str().unwrap()], &["read", &path_of(".ssh/id_test")]);
    o.expect_code(0);
    assert!(revealed(&o.one(), &secret_of(".ssh/id_test")), "--expose ~/.ssh must make ~/.ssh/id_test readable");
    let note = format!("cloche: note: exposure {0} unmasks the masked path {0} (fs.home_secrets .ssh)", ssh.display());
    assert!(String::from_utf8_lossy(&o.stderr).lines().any(|l| l == note), "{note:?} missing\n{}", o.describe());
    let o = fx.sh(
        &["--expose", ssh.to_str().unwrap()],
        &format!("echo pwned >> '{0}/id_test'; echo new > '{0}/new_key'; rm -f '{0}/../notes.txt'", ssh.display()),
    );
    let _ = o.code;
    assert_same_tree(&home, &before, &tree_snapshot(&home));
    fx.finish();
}

#[test]
fn tmp_run_var_tmp_and_dev_shm_are_fresh() {
    let fx = Fixture::new();
    let others = [
        Scratch::new_in("/tmp", "cloche-test-other-"),
        Scratch::new_in("/var/tmp", "cloche-test-other-"),
        Scratch::new_in("/run", "cloche-test-other-"),
        Scratch::new_in("/dev/shm", "cloche-test-other-"),
    ];
    let mut args = vec!["ls".to_string()];
    for o in &others {
        fs::write(o.path().join("f"), "host file").unwrap();
        args.push(o.path().parent().unwrap().to_str().unwrap().to_string());
    }
    args.push(fx.dir().to_str().unwrap().to_string());
    fx.write("mine.txt", b"mine", 0o644);
    let o = fx.probe::<&str, _>(&[], &args);
    o.expect_code(0);
    let by = lines_by_path(&o);
    for other in &others {
        let parent = other.path().parent().unwrap().to_str().unwrap();
        let name = other.path().file_name().unwrap().to_str().unwrap();
        let entries = string_list(&by[parent]["entries"]);
        assert!(
            !entries.iter().any(|e| e == name),
            "host {} is visible in the world's {parent}: {entries:?}",
            other.path().display()
        );
    }
    let mine = string_list(&by[fx.dir().to_str().unwrap()]["entries"]);
    assert!(mine.contains(&"mine.txt".to_string()), "the cwd must stay visible through the fresh /tmp: {mine:?}");
    fx.finish();
}

#[test]
fn only_fds_0_to_2_are_open() {
    let fx = Fixture::new();
    let a = fs::File::open("/etc/hostname").unwrap();
    let b = fs::File::open("/etc/passwd").unwrap();
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    // SAFETY: dup2 is async-signal-safe; it makes the child inherit fds 7 and 12
    // (without close-on-exec), as a careless caller would.
    let leak_fds = |cmd: &mut Command| unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(fa, 7) < 0 || libc::dup2(fb, 12) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    };

    // Control: without a world the probe does see the inherited fds.
    let mut control = Command::new(probe_bin());
    control.arg("fds").stdin(std::process::Stdio::null());
    leak_fds(&mut control);
    let c = run_cmd(&mut control, DEADLINE);
    let seen: Vec<i64> =
        c.one()["fds"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    assert!(
        seen.contains(&7) && seen.contains(&12),
        "control: the probe must see fds 7 and 12 outside a world: {seen:?}"
    );

    let mut cmd = fx.command();
    leak_fds(&mut cmd);
    let o = fx.run_with(cmd, &[] as &[&str], &[probe_bin().to_str().unwrap(), "fds"]);
    o.expect_code(0);
    let v = o.one();
    let fds: Vec<i64> = v["fds"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
    assert_eq!(fds, vec![0, 1, 2], "only stdin, stdout and stderr may be open at exec: {}", v["targets"]);
    drop((a, b));
    fx.finish();
}

#[test]
fn no_capabilities_no_new_privs_and_a_seccomp_filter() {
    let fx = Fixture::new();
    let o = fx.probe::<&str, _>(&[], &["status"]);
    o.expect_code(0);
    let v = o.one();
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(v[k], "0000000000000000", "{k} must be empty: {v}");
    }
    assert_eq!(v["NoNewPrivs"], "1", "{v}");
    assert_eq!(v["Seccomp"], "2", "seccomp must be in filter mode: {v}");
    fx.finish();
}

#[test]
fn dangerous_syscalls_are_refused() {
    let fx = Fixture::new();
    let refused = [
        "mount",
        "umount2",
        "unshare",
        "clone",
        "clone3",
        "fsopen",
        "open_tree",
        "move_mount",
        "mount_setattr",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "open_by_handle_at",
        "setns",
        "clock_settime",
        "settimeofday",
        "swapon",
        "swapoff",
        "reboot",
        "pivot_root",
        "chroot",
    ];
    let mut args = vec!["syscall", "getpid"];
    args.extend(refused);
    let o = fx.probe::<&str, _>(&[], &args);
    o.expect_code(0);
    let got: BTreeMap<String, Value> =
        o.lines().into_iter().map(|v| (v["name"].as_str().unwrap_or("").to_string(), v)).collect();
    assert!(got["getpid"]["ret"].as_i64().unwrap_or(-1) > 0, "control: getpid must work: {}", got["getpid"]);
    let mut wrong = Vec::new();
    for name in refused {
        let Some(v) = got.get(name) else {
            wrong.push(format!("{name}: no result"));
            continue;
        };
        let errno = v["errno"].as_i64();
        let ok = v["ret"] == -1
            && if name == "clone3" { errno == Some(ENOSYS) } else { errno == Some(EPERM) || errno == Some(ENOSYS) };
        if !ok {
            wrong.push(format!("{name}: {v}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "these calls were not refused with EPERM/ENOSYS (clone3: ENOSYS):\n  {}",
        wrong.join("\n  ")
    );
    fx.finish();
}

/// A host pty as the world's stdin: TIOCSTI must fail on it, on /dev/tty and on
/// a pty the world makes its own controlling terminal; nothing reaches the
/// host terminal's input.
#[test]
fn tiocsti_is_refused() {
    let fx = Fixture::new();
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the integers we pass; name, termios and
    // winsize pointers may be NULL.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    let (master, slave) = unsafe { (fs::File::from_raw_fd(master), fs::File::from_raw_fd(slave)) };
    // SAFETY: a termios filled by tcgetattr, made raw, written back, on our own fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
    }

    let mut cmd = fx.command();
    cmd.stdin(slave.try_clone().unwrap());
    let o = fx.run_with(cmd, &[] as &[&str], &[probe_bin().to_str().unwrap(), "tiocsti"]);
    o.expect_code(0);
    let v = o.one();
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{v}");
    for a in attempts {
        assert_eq!(a["ret"], -1, "TIOCSTI worked: {a}");
    }
    let own = &attempts[2];
    assert_eq!(
        own["setup"], "ok",
        "the world must be able to open a pty (devpts) so this check means something: {own}"
    );

    // From outside: nothing was pushed into the host terminal's input.
    // SAFETY: fcntl on our own fd.
    unsafe {
        let fl = libc::fcntl(slave.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut buf = [0u8; 64];
    match (&slave).read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("input was injected into the host terminal: {other:?} {buf:?}"),
    }
    drop(master);
    fx.finish();
}

#[test]
fn proc_sys_and_sys_are_read_only_and_dev_is_minimal() {
    let fx = Fixture::new();
    let writable: Vec<&str> = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/hostname",
        "/proc/sys/vm/drop_caches",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/power/state",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    let masked: Vec<&str> = ["/proc/kcore", "/proc/kmsg", "/proc/timer_list", "/proc/sysrq-trigger"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();

    let mut script = String::new();
    for p in &writable {
        script += &format!("\"$PROBE\" open-write {p}\n");
    }
    for p in &masked {
        script += &format!("\"$PROBE\" read {p}\n");
    }
    script += "\"$PROBE\" ls /dev\n";
    let o = fx.sh::<&str>(&[], &script);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(lines.len(), writable.len() + masked.len() + 1, "{}", o.describe());
    for l in &lines[..writable.len()] {
        assert_eq!(l["ok"], false, "{} is writable in the world", l["path"]);
    }
    for l in &lines[writable.len()..writable.len() + masked.len()] {
        assert!(l["ok"] == false || l["len"] == 0, "{} is not masked in the world: {}", l["path"], l);
    }
    let dev = string_list(&lines[lines.len() - 1]["entries"]);
    let allowed =
        ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr"];
    for need in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm"] {
        assert!(dev.iter().any(|d| d == need), "/dev/{need} missing: {dev:?}");
    }
    let extra: Vec<&String> = dev.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
    assert!(extra.is_empty(), "/dev is not minimal, it has {extra:?}");
    fx.finish();
}
