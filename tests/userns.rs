//! Every world in a user namespace of its own (docs/security.md, *User
//! namespace*): checked from outside on the real kernel. The world's root
//! is not the host's root for the kernel's per-user counters and limits
//! nor for host root's kernel files, while the host's files keep their
//! owners in the world and the fs_diff and a commit deal in the host's ids.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const EAGAIN: i64 = 11;
const EMFILE: i64 = 24;

/// The host ids reserved for worlds (`/etc/subuid`, entry `cloche`: .ci/setup).
fn reserved_uids() -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("cloche:")).expect("/etc/subuid has a cloche entry (.ci/setup)");
    let f: Vec<u32> = line.split(':').skip(1).map(|n| n.parse().unwrap()).collect();
    (f[0], f[1])
}

/// The report's mapping: a slot of 65,536 ids inside the reserved range.
fn check_mapping(report: &Value) -> u32 {
    let (start, count) = reserved_uids();
    let m = &report["userns"];
    let uid = m["uid"].as_u64().unwrap_or_else(|| panic!("the report names no user namespace: {report:#}")) as u32;
    assert_eq!(m["count"], 65536, "{m}");
    assert!(uid >= start && uid - start + 65536 <= count, "uid {uid} outside the reserved {start}:{count}");
    assert!(report["layers"].as_array().unwrap().iter().any(|l| l == "userns"), "{report:#}");
    uid
}

/// The real, effective, saved and filesystem uids of host process `pid`.
fn host_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect()
}

/// The owner (a host uid) of the user namespace of host process `pid`.
fn userns_owner(pid: i32) -> u32 {
    let f = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    let mut uid: libc::uid_t = u32::MAX;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704; // _IO(0xb7, 0x4)
                                                    // SAFETY: the ioctl writes one uid_t into `uid`.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_OWNER_UID as _, &mut uid) };
    assert_eq!(r, 0, "NS_GET_OWNER_UID: {}", std::io::Error::last_os_error());
    uid
}

/// Takes every inotify instance and message queue byte its user may have,
/// says how many, and holds them until its stdin closes.
const HOLD: &str = r#"
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
ino = 0
while ino < 100000 and libc.inotify_init1(0o2000000) >= 0:
    ino += 1
ino_errno = ctypes.get_errno()
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Attr)]
attr = Attr(0, 10, 8192, 0)
mq = 0
while mq < 256 and libc.mq_open(b"/q%d" % mq, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, ctypes.byref(attr)) >= 0:
    mq += 1
mq_errno = ctypes.get_errno()
print(json.dumps({"inotify": ino, "inotify_errno": ino_errno, "mqueues": mq, "mq_errno": mq_errno}), flush=True)
sys.stdin.read()
"#;

/// The kernel's per-user counters of a world are its own: while a world
/// holds every inotify instance and every message queue byte its user may
/// have, host root can still make both, and the world got the whole budget
/// (none of it used by root's daemons). Its processes are, on the host, a
/// uid of cloche's reserved range, and their user namespace's owner (whom
/// the counters are charged to in the host's namespace) is that uid, not
/// root. Fails on a world without a user namespace (its uid 0 is host root:
/// root's inotify instances and queue bytes are the world's to exhaust).
#[test]
fn per_user_counters_are_the_worlds_own() {
    let fx = Fixture::new();
    let marker = format!("cloche-userns-hold-{}", fx.tag);
    let mut cmd = fx.command();
    cmd.args(fx.run_args::<&str, &str>(&[], &["python3", "-c", HOLD, &marker]));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut world = HostChild::spawn(&mut cmd);
    let mut out = BufReader::new(world.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let held: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));

    // From outside, while the world holds them: host root still has its own.
    // SAFETY: plain syscalls; the descriptors are closed right after.
    let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let ino_err = std::io::Error::last_os_error();
    let name = std::ffi::CString::new(format!("/cloche-userns-{}", fx.tag)).unwrap();
    // SAFETY: mq_attr is plain data.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = 8192;
    // SAFETY: a NUL-terminated name, flags, mode and a valid attr pointer.
    let q = unsafe {
        libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600, &attr as *const libc::mq_attr)
    };
    let q_err = std::io::Error::last_os_error();
    // SAFETY: closing what was opened; unlinking our own queue name.
    unsafe {
        if ino >= 0 {
            libc::close(ino);
        }
        if q >= 0 {
            libc::mq_close(q);
            libc::mq_unlink(name.as_ptr());
        }
    }
    assert!(ino >= 0, "host root cannot make an inotify instance while the world holds its own: {ino_err}");
    assert!(q >= 0, "host root cannot make a message queue while the world holds its own: {q_err}");

    // The world is a uid of cloche's range on the host, owning its namespace.
    // The world's python (cloche's and the init's argv name the marker too).
    let is_python = |argv: &str| argv.split(' ').next().is_some_and(|a| a.rsplit('/').next() == Some("python3"));
    let python: Vec<i32> =
        processes_with(&marker).into_iter().filter(|(_, argv)| is_python(argv)).map(|(p, _)| p).collect();
    assert_eq!(python.len(), 1, "the world's python: {python:?}");
    let uids = host_uids(python[0]);
    let (start, count) = reserved_uids();
    assert!(uids.iter().all(|&u| u == uids[0]), "{uids:?}");
    assert!(uids[0] >= start && uids[0] - start < count, "the world's uid on the host is {}, not cloche's", uids[0]);
    assert_eq!(userns_owner(python[0]), uids[0], "the namespace's owner is the world's own uid");
    let max = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap();
    assert_eq!(held["inotify"], max.trim().parse::<i64>().unwrap(), "the world's whole budget: {held}");
    assert_eq!(held["inotify_errno"], EMFILE, "{held}");
    assert!(held["mqueues"].as_i64().unwrap() >= 1 && held["mq_errno"] == EMFILE, "{held}");
    // The world lets go when its stdin closes.
    drop(world.0.stdin.take());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = world.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the world did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let report: Value = serde_json::from_slice(&std::fs::read(fx.report_path()).unwrap()).unwrap();
    fx.note_world(report["world"].as_str().unwrap());
    assert_eq!(check_mapping(&report), uids[0], "the report names the world's host uid");
    fx.finish();
}

/// `RLIMIT_NPROC` counts the world's own processes: under a limit of 12
/// (far below what host root runs), a world starts some processes (the
/// count is not root's) and is refused past the limit (its root is not
/// host root, whom the kernel never holds to it). Fails without a user
/// namespace: every fork succeeds.
#[test]
fn rlimit_nproc_counts_the_worlds_own_processes() {
    let fx = Fixture::new();
    const FORKS: &str = r#"
import json, os, time
n, err = 0, 0
for i in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(json.dumps({"forked": n, "errno": err}))
"#;
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nproc=12").arg(cloche_bin()).current_dir(fx.dir());
    cmd.env("CLOCHE_STATE_DIR", fx.state.path()).stdin(Stdio::null());
    let o = fx.run_with(cmd, &[] as &[&str], &["python3", "-c", FORKS]);
    o.expect_code(0);
    let v = o.one();
    let forked = v["forked"].as_i64().unwrap();
    assert!((3..40).contains(&forked), "forks before the limit: {v}");
    assert_eq!(v["errno"], EAGAIN, "{v}");
    check_mapping(&o.report());
    fx.finish();
}

/// Host root's kernel files are nobody's in the world: no regular file of
/// `/proc` (outside the world's own processes and the read-only `sys`)
/// that only its owner may write is writable from a world, masked or not,
/// whatever handler is behind it. The control: such files exist here
/// (`/proc/mtrr` on x86, which only a capability check in its handler
/// refuses to host root). Fails without a user namespace: the world's uid
/// 0 is those files' owner.
#[test]
fn host_root_only_kernel_files_are_not_writable() {
    let fx = Fixture::new();
    const WALK: &str = r#"
import json, os, stat
cands, writable = [], []
for root, dirs, files in os.walk("/proc"):
    if root == "/proc":
        dirs[:] = [d for d in dirs if not d.isdigit() and d not in ("self", "thread-self", "sys")]
    for f in files:
        p = os.path.join(root, f)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o200 and not st.st_mode & 0o022:
            cands.append(p)
            if os.access(p, os.W_OK):
                writable.append(p)
print(json.dumps({"candidates": cands, "writable": writable}))
"#;
    let o = fx.run(&[] as &[&str], &["python3", "-c", WALK]);
    o.expect_code(0);
    let v = o.one();
    assert!(!v["candidates"].as_array().unwrap().is_empty(), "control: no owner-writable kernel file here: {v}");
    assert_eq!(v["writable"], serde_json::json!([]), "host root's kernel files writable from a world: {v}");
    check_mapping(&o.report());
    fx.finish();
}

/// The base keeps its owners in the world (a file of uid 1000 is 1000's
/// there), and what the world writes is the host's ids in the fs_diff:
/// its root's files uid 0, a base file of uid 1000 copied up still 1000
/// (a shifted id would list it as an owner change), `useradd`'s write of
/// /etc/passwd and a new directory under /usr root's. A commit applies the
/// contents with the host's owners (replaced files keep theirs, new ones
/// are the project's owner's) and reports no owner change. Fails without a
/// user namespace (the report names none).
#[test]
fn fs_diff_and_commit_show_and_apply_host_ids() {
    let fx = Fixture::new();
    let owned = fx.write("owned.txt", b"host\n", 0o666);
    let touched = fx.write("touched.txt", b"same\n", 0o666);
    for p in [&owned, &touched] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let usr = format!("/usr/local/share/cloche-userns-{}", fx.tag);
    let script = format!(
        "set -e
        stat -c %u:%g owned.txt > seen
        echo world >> owned.txt
        touch touched.txt
        echo new > made
        chown 0:0 made
        mkdir {usr} && echo x > {usr}/f
        useradd -M cloche-u-{tag} 2>/dev/null || true
        grep -q '^cloche-u-{tag}:' /etc/passwd
        id -u",
        tag = fx.tag
    );
    let o = fx.run(&["--keep"], &["/bin/sh", "-c", &script]);
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0", "{}", o.describe());
    let report = o.report();
    check_mapping(&report);
    let d = &report["fs_diff"];
    let entry = |list: &str, path: &str| -> Value {
        d[list].as_array().unwrap().iter().find(|e| e["path"] == path).cloned().unwrap_or_else(|| {
            panic!("{path} not in {list}: {d:#}");
        })
    };
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    let ids = |e: &Value| (e["uid"].as_u64().unwrap(), e["gid"].as_u64().unwrap());
    let owned_e = entry("modified", &p("owned.txt"));
    assert_eq!(ids(&owned_e), (1000, 1000), "{owned_e}");
    assert_eq!(owned_e["changes"], serde_json::json!(["content"]), "{owned_e}");
    assert!(!d["modified"].as_array().unwrap().iter().any(|e| e["path"] == p("touched.txt")), "{d:#}");
    assert_eq!(ids(&entry("added", &p("made"))), (0, 0));
    assert_eq!(ids(&entry("added", &p("seen"))), (0, 0));
    assert_eq!(ids(&entry("added", &usr)), (0, 0));
    assert_eq!(ids(&entry("added", &format!("{usr}/f"))), (0, 0));
    assert_eq!(ids(&entry("modified", "/etc/passwd")), (0, 0));

    let id = report["world"].as_str().unwrap().to_string();
    let c = fx.cloche(&["commit", "--json", &id]);
    c.expect_code(0);
    let v: Value = serde_json::from_slice(&c.stdout).unwrap();
    let text = v.to_string();
    assert!(!text.contains("owner changes"), "the commit saw an owner change: {v:#}");
    assert_eq!(std::fs::read_to_string(&owned).unwrap(), "host\nworld\n");
    let m = std::fs::metadata(&owned).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000), "a replaced file keeps its host owner");
    assert_eq!(std::fs::read_to_string(fx.dir().join("seen")).unwrap(), "1000:1000\n", "the world saw the owner");
    let project = std::fs::metadata(fx.dir()).unwrap();
    let m = std::fs::metadata(fx.dir().join("made")).unwrap();
    assert_eq!((m.uid(), m.gid()), (project.uid(), project.gid()));
    assert!(!std::path::Path::new(&usr).exists(), "outside the commit roots: never written");
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

/// `world.userns = false` is explicit: the world then has no user
/// namespace (its processes are host uid 0 without capabilities) and the
/// report says so; a policy that requires the layer refuses to start it.
#[test]
fn a_policy_can_turn_the_namespace_off_and_the_report_says_so() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.toml")).unwrap();
    assert!(text.contains("\nuserns = true\n"));
    let off = text.replace("\nuserns = true\n", "\nuserns = false\n");
    let file = fx.out.path().join("off.toml");
    std::fs::write(&file, &off).unwrap();
    let o = fx.run(&["--policy", file.to_str().unwrap()], &["cat", "/proc/self/uid_map"]);
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>(), ["0", "0", "4294967295"]);
    let r = o.report();
    assert_eq!(r["userns"], Value::Null, "{r:#}");
    assert!(!r["layers"].as_array().unwrap().iter().any(|l| l == "userns"), "{r:#}");
    let required = off.replace("require = [", "require = [\"userns\", ");
    assert_ne!(required, off);
    std::fs::write(&file, &required).unwrap();
    let o = fx.run(&["--policy", file.to_str().unwrap()], &["true"]);
    o.expect_code(125);
    assert!(String::from_utf8_lossy(&o.stderr).contains("userns"), "{}", o.describe());
    // The default: a user namespace, its mapping in /proc and in the report.
    let o = fx.run(&[] as &[&str], &["cat", "/proc/self/uid_map"]);
    o.expect_code(0);
    let uid = check_mapping(&o.report());
    let map = String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(map, ["0".to_string(), uid.to_string(), "65536".to_string()]);
    fx.finish();
}

/// A group of the host, removed on drop (also when the test fails).
struct HostGroup(String);

impl HostGroup {
    fn add(name: &str, gid: u32) -> HostGroup {
        let o = Command::new("groupadd").args(["-g", &gid.to_string(), name]).output().unwrap();
        assert!(o.status.success(), "groupadd: {}", String::from_utf8_lossy(&o.stderr));
        HostGroup(name.to_string())
    }
}

impl Drop for HostGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).status();
    }
}

/// The policy's own range (`world.userns_ids`) is used, and one that holds
/// an id the host gives a group (or a user) is refused: a world would be
/// that group on the host's kernel. Fails without a user namespace.
#[test]
fn the_policys_ids_are_used_unless_the_host_has_one_of_them() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.toml")).unwrap();
    let line = "# userns_ids = \"1879048192:67108864\"";
    assert!(text.contains(line));
    // 65,536 ids above what this host gives anyone (its passwd and group).
    let file = fx.out.path().join("ids.toml");
    std::fs::write(&file, text.replace(line, "userns_ids = \"2013265920:65536\"")).unwrap();
    let o = fx.run(&["--policy", file.to_str().unwrap()], &["true"]);
    o.expect_code(0);
    assert_eq!(
        o.report()["userns"],
        serde_json::json!({"uid": 2013265920u32, "gid": 2013265920u32, "count": 65536, "rootless": false})
    );
    let name = format!("cl{}", &fx.tag[fx.tag.len().saturating_sub(12)..]);
    let _group = HostGroup::add(&name, 2013265925);
    let o = fx.run(&["--policy", file.to_str().unwrap()], &["true"]);
    o.expect_code(125);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("the group {name} (gid 2013265925) is inside")), "{}", o.describe());
    fx.finish();
}
