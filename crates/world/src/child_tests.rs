//! The child's step order and error paths, without root: a recording `Sys`.

use super::*;
use crate::layers::HostMount;
use crate::plan::{FsRequest, HostFacts};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Records each call; fails the call whose name equals `fail` (with
/// `errno`).
struct Recorder {
    calls: Vec<String>,
    fail: Option<&'static str>,
    errno: i32,
    /// What `receive_plan` hands out.
    plan: Vec<Step>,
    /// What `receive_pieces` hands out, three at a time (as the parent
    /// sends them as it lists them), then an empty list.
    pieces: Vec<crate::rootless::Piece>,
    /// Paths that do not exist: any call on them fails with ENOENT.
    missing: Vec<&'static str>,
}

impl Recorder {
    fn call(&mut self, name: &'static str, arg: &Path) -> io::Result<()> {
        self.calls.push(format!("{name} {}", arg.display()).trim_end().to_string());
        if self.fail == Some(name) {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        if self.missing.iter().any(|m| arg == Path::new(m)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

impl Sys for Recorder {
    fn act_as_world_root(&mut self, _: &crate::userns::WorldIds) -> io::Result<()> {
        self.call("act_as_world_root", Path::new(""))
    }
    fn set_pdeathsig(&mut self) -> io::Result<()> {
        self.call("pdeathsig", Path::new(""))
    }
    fn map_caller(&mut self, _: &crate::rootless::Caller) -> io::Result<()> {
        self.call("map_caller", Path::new(""))
    }
    fn mount_piece(&mut self, _: BorrowedFd<'_>, _: &Path, _: usize, target: &Path) -> io::Result<()> {
        self.call("piece", target)
    }
    fn rearm_pdeathsig(&mut self) -> io::Result<()> {
        self.call("pdeathsig_again", Path::new(""))
    }
    fn receive_plan(&mut self) -> io::Result<Vec<Step>> {
        self.call("receive_plan", Path::new("")).map(|_| std::mem::take(&mut self.plan))
    }
    fn receive_pieces(&mut self) -> io::Result<Vec<crate::rootless::Piece>> {
        let n = self.pieces.len().min(3);
        self.call("receive_pieces", Path::new("")).map(|_| self.pieces.drain(..n).collect())
    }
    fn await_parent(&mut self) -> io::Result<()> {
        self.call("await", Path::new(""))
    }
    fn join_cgroups(&mut self) -> io::Result<()> {
        self.call("join_cgroups", Path::new(""))
    }
    fn unshare_cgroupns(&mut self) -> io::Result<()> {
        self.call("cgroupns", Path::new(""))
    }
    fn unshare_netns(&mut self) -> io::Result<()> {
        self.call("netns", Path::new(""))
    }
    fn tell_netns_made(&mut self, _: RawFd) -> io::Result<()> {
        self.call("netns_made", Path::new(""))
    }
    fn join_netns(&mut self, _: RawFd) -> io::Result<()> {
        self.call("join_netns", Path::new(""))
    }
    fn make_rprivate(&mut self) -> io::Result<()> {
        self.call("rprivate", Path::new(""))
    }
    fn mount_overlay(&mut self, _: BorrowedFd<'_>, _: &str, lower: Lower<'_>, target: &Path) -> io::Result<()> {
        self.call(if matches!(lower, Lower::Tree(_)) { "overlay_idmapped" } else { "overlay" }, target)
    }
    fn idmap_mount(&mut self, path: &Path, _: RawFd) -> io::Result<OwnedFd> {
        self.call("idmap_mount", path).map(|_| devnull())
    }
    fn stash(&mut self, _: BorrowedFd<'_>, at: &Path) -> io::Result<()> {
        self.call("stash", at)
    }
    fn bind_ro(&mut self, _: &Path, dst: &Path, idmap: Option<RawFd>) -> io::Result<()> {
        self.call(if idmap.is_some() { "bind_ro_idmapped" } else { "bind_ro" }, dst)
    }
    fn idmap_store(&mut self, _: BorrowedFd<'_>, _: RawFd) -> io::Result<OwnedFd> {
        self.call("idmap_store", Path::new("")).map(|_| devnull())
    }
    fn grab(&mut self, path: &Path, read_only: bool) -> io::Result<OwnedFd> {
        self.call(if read_only { "grab_ro" } else { "grab" }, path).map(|_| devnull())
    }
    fn copy_up(&mut self, path: &Path) -> io::Result<()> {
        self.call("copy_up", path)
    }
    fn bind_upper(&mut self, _: BorrowedFd<'_>, dir: &Path, target: &Path) -> io::Result<()> {
        self.call("bind_upper", &target.join(format!("<-{}", dir.display())))
    }
    fn mark_planned(&mut self, _: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
        self.call("mark", path)
    }
    fn mount(&mut self, target: &Path, _: &str, _: u64, _: &str) -> io::Result<()> {
        self.call("mount", target)
    }
    fn open_store(&mut self, path: &Path) -> io::Result<OwnedFd> {
        self.call("open_store", path).map(|_| devnull())
    }
    fn make_store(&mut self, path: &Path, _: u64, _: usize) -> io::Result<OwnedFd> {
        self.call("make_store", path).map(|_| devnull())
    }
    fn make_uppers(&mut self, path: &Path, _: &[crate::rootless::Piece]) -> io::Result<()> {
        self.call("make_uppers", path)
    }
    fn send_store(&mut self, _: BorrowedFd<'_>, _: BorrowedFd<'_>) -> io::Result<()> {
        self.call("send_store", Path::new(""))
    }
    fn bind_scratch(&mut self, _: BorrowedFd<'_>, _: u32, _: u32, target: &Path) -> io::Result<()> {
        self.call("bind_scratch", target)
    }
    fn mkdir_all(&mut self, path: &Path, _: u32) -> io::Result<()> {
        self.call("mkdir", path)
    }
    fn mkdir(&mut self, path: &Path, _: Option<u32>) -> io::Result<()> {
        self.call("mkdir", path)
    }
    fn read_only_tree(&mut self, path: &Path) -> io::Result<()> {
        self.call("read_only_tree", path)
    }
    fn touch(&mut self, path: &Path) -> io::Result<()> {
        self.call("touch", path)
    }
    fn mknod(&mut self, path: &Path, _: u32, _: u32) -> io::Result<()> {
        self.call("mknod", path)
    }
    fn symlink(&mut self, _: &Path, path: &Path) -> io::Result<()> {
        self.call("symlink", path)
    }
    fn bind(&mut self, _: &Path, dst: &Path) -> io::Result<()> {
        self.call("bind", dst)
    }
    fn bind_tree(&mut self, _: &Path, dst: &Path) -> io::Result<()> {
        self.call("bind_tree", dst)
    }
    fn remount_ro(&mut self, target: &Path, _: bool) -> io::Result<()> {
        self.call("remount_ro", target)
    }
    fn attach(&mut self, _: OwnedFd, path: &Path) -> io::Result<()> {
        self.call("attach", path)
    }
    fn pivot_root(&mut self, root: &Path) -> io::Result<()> {
        self.call("pivot_root", root)
    }
    fn sethostname(&mut self, _: &str) -> io::Result<()> {
        self.call("sethostname", Path::new(""))
    }
    fn loopback_up(&mut self) -> io::Result<()> {
        self.call("lo_up", Path::new(""))
    }
    fn set_rlimits(&mut self, _: u64) -> io::Result<()> {
        self.call("rlimits", Path::new(""))
    }
    fn chdir_verified(&mut self, cwd: &Path) -> io::Result<()> {
        self.call("chdir", cwd)
    }
    fn open_console(&mut self, _: &Path, _: Option<libc::winsize>, _: RawFd) -> io::Result<OwnedFd> {
        self.call("console", Path::new("")).map(|_| devnull())
    }
    fn set_stdio(&mut self, _: [Option<RawFd>; 3], owner: Option<(u32, u32)>) -> io::Result<()> {
        match owner {
            Some((u, g)) => self.call("stdio", Path::new(&format!("owner {u}:{g}"))),
            None => self.call("stdio", Path::new("")),
        }
    }
    fn enter_userns(&mut self, _: RawFd) -> io::Result<()> {
        self.call("setns_user", Path::new(""))
    }
    fn setsid(&mut self) -> io::Result<()> {
        self.call("setsid", Path::new(""))
    }
    fn drop_caps(&mut self, _: u32, user: Option<&crate::spec::WorldUser>) -> io::Result<()> {
        match user {
            Some(u) => self.call("drop_caps", Path::new(&format!("as {}:{}", u.uid, u.gid))),
            None => self.call("drop_caps", Path::new("")),
        }
    }
    fn no_new_privs(&mut self) -> io::Result<()> {
        self.call("nnp", Path::new(""))
    }
    fn cloexec_fds(&mut self) -> io::Result<()> {
        self.call("cloexec", Path::new(""))
    }
    fn keep_open(&mut self, _: RawFd) -> io::Result<()> {
        self.call("keep_open", Path::new(""))
    }
    fn unblock_signals(&mut self) -> io::Result<()> {
        self.call("sigmask", Path::new(""))
    }
    fn load_seccomp(&mut self, _: &Program) -> io::Result<()> {
        self.call("seccomp", Path::new(""))
    }
    fn exec(&mut self, _: BorrowedFd<'_>, _: &[CString], _: &[CString]) -> io::Error {
        io::Error::from_raw_os_error(libc::ENOENT)
    }
}

struct Host;
impl HostFacts for Host {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        Some(p.to_path_buf())
    }
    fn is_dir(&self, p: &Path) -> bool {
        !p.ends_with("shadow")
    }
    fn exists(&self, _: &Path) -> bool {
        true
    }
}

fn program() -> Program {
    let profile = crate::seccomp::Profile::from_json(include_str!("../../../policies/seccomp/default.json")).unwrap();
    Program::compile(&profile).unwrap()
}

/// The plan the parent would send for a cwd inside a masked home.
fn test_steps() -> Vec<Step> {
    let req = FsRequest {
        cwd: "/home/ann/proj".into(),
        mask: vec!["/etc/shadow".into()],
        homes: vec!["/home/ann".into()],
        mask_homes: true,
        home_secrets: vec![],
        expose: vec![],
        state_dirs: vec!["/var/lib/cloche".into()],
        ..FsRequest::default()
    };
    crate::plan::build(&Host, &req).unwrap()
}

fn recorder(fail: Option<&'static str>) -> Recorder {
    Recorder { calls: vec![], fail, errno: libc::EPERM, plan: test_steps(), pieces: vec![], missing: vec![] }
}

fn with_plan<T>(f: impl FnOnce(&ChildPlan<'_>) -> T) -> T {
    with_userns(None, f)
}

fn with_userns<T>(userns: Option<ChildUserns>, f: impl FnOnce(&ChildPlan<'_>) -> T) -> T {
    with_all(userns, None, f)
}

fn with_all<T>(
    userns: Option<ChildUserns>,
    rootless: Option<crate::child::ChildRootless>,
    f: impl FnOnce(&ChildPlan<'_>) -> T,
) -> T {
    let netns = match rootless {
        None => crate::child::NetnsPlan::Parent { from: 7 },
        Some(_) => crate::child::NetnsPlan::Child { tell: None },
    };
    with_netns(userns, rootless, netns, f)
}

fn with_netns<T>(
    userns: Option<ChildUserns>,
    rootless: Option<crate::child::ChildRootless>,
    netns: crate::child::NetnsPlan,
    f: impl FnOnce(&ChildPlan<'_>) -> T,
) -> T {
    let prog = program();
    let plan = ChildPlan {
        root: "/state/w/root".into(),
        scratch: Store::Mount(devnull()),
        layers: vec![
            HostMount { path: "/home".into(), fstype: "ext4".into(), read_only: false, slot: 0 },
            HostMount { path: "/mnt/ro".into(), fstype: "tmpfs".into(), read_only: true, slot: 1 },
        ],
        hostname: "cloche".into(),
        cwd: "/home/ann/proj".into(),
        nofile: 1024,
        last_cap: 40,
        seccomp: &prog,
        init: devnull(),
        argv: vec![],
        envp: vec![],
        keep_fd: None,
        stdio: crate::stdio::WorldStdio::Fds([Some(devnull()), None, Some(devnull())]),
        user: None,
        userns,
        rootless,
        netns,
    };
    f(&plan)
}

#[test]
fn a_world_without_root_maps_its_caller_first_and_puts_its_root_together() {
    use crate::rootless::{Caller, Piece};
    let mut r = recorder(None);
    r.pieces = vec![
        Piece::Symlink { path: "/bin".into(), target: "usr/bin".into() },
        Piece::Dir { path: "/proc".into(), mode: 0o555 },
        Piece::ReadOnly { path: "/boot".into() },
        Piece::ReadOnlyTree { path: "/var".into() },
        Piece::Overlay { path: "/srv".into(), index: 0 },
        Piece::File { path: "/lone".into() },
    ];
    let rootless = Some(crate::child::ChildRootless { caller: Caller { uid: 1000, gid: 1000 } });
    with_all(None, rootless, |p| setup(&mut r, p)).unwrap();
    let c = &r.calls;
    let order = [
        "pdeathsig",
        "map_caller",
        "netns",
        "lo_up",
        "rprivate",
        "mount /state/w/root",
        "receive_pieces",
        "symlink /state/w/root/bin",
        "mkdir /state/w/root/proc",
        "mkdir /state/w/root/boot",
        "bind /state/w/root/boot",
        "mkdir /state/w/root/var",
        "bind_tree /state/w/root/var",
        "mkdir /state/w/root/srv",
        "bind /state/w/root/lone",
        "read_only_tree /state/w/root",
        "piece /state/w/root/srv",
        "overlay /state/w/root/home",
        "receive_plan",
        "copy_up /state/w/root/home/ann",
        "remount_ro /state/w/root",
        "mount /state/w/root/sys",
        "pivot_root",
        "drop_caps",
        "seccomp",
    ];
    let idx: Vec<usize> = order.iter().map(|o| pos(c, o)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {order:?} at {idx:?}\n{c:#?}");
    // The pieces came in two lists and an empty one: the second list's
    // first piece after the first list's last, each after its list came.
    let received: Vec<usize> =
        c.iter().enumerate().filter(|(_, x)| x.as_str() == "receive_pieces").map(|(i, _)| i).collect();
    assert_eq!(received.len(), 3, "{c:#?}");
    assert!(pos(c, "bind /state/w/root/boot") < received[1] && received[1] < pos(c, "mkdir /state/w/root/var"));
    assert!(pos(c, "bind /state/w/root/lone") < received[2] && received[2] < pos(c, "read_only_tree"));
    // No mark a world could forge; no user namespace of cloche's entered.
    assert!(!c.iter().any(|x| x.starts_with("mark ") || x.starts_with("setns_user") || x == "overlay /state/w/root"));
    // Its network namespace is its own (made first), none of the parent's.
    assert!(!c.iter().any(|x| x == "join_netns"), "{c:#?}");
}

/// A copy-up a world without root cannot make (another owner or group:
/// `EOVERFLOW`) says why; a root world's says what it was.
#[test]
fn a_copy_up_of_anothers_file_without_root_says_why() {
    use crate::rootless::Caller;
    for rootless in [true, false] {
        let mut r = Recorder { errno: libc::EOVERFLOW, ..recorder(Some("copy_up")) };
        let who = rootless.then_some(crate::child::ChildRootless { caller: Caller { uid: 1000, gid: 1000 } });
        let e = with_all(None, who, |p| setup(&mut r, p)).unwrap_err();
        assert!(e.step.starts_with("copy up (mount point in a home"), "{e}");
        assert_eq!(e.step.contains("your uid and gid"), rootless, "{e}");
    }
}

fn pos(calls: &[String], prefix: &str) -> usize {
    calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} not called: {calls:#?}"))
}

#[test]
fn steps_run_in_the_audited_order() {
    let mut r = recorder(None);
    with_plan(|p| setup(&mut r, p)).unwrap();
    let c = &r.calls;
    let order = [
        "pdeathsig",
        "rprivate",
        "overlay /state/w/root",
        "overlay /state/w/root/home",
        "bind_ro /state/w/root/mnt/ro",
        "mount /state/w/root/proc",
        "receive_plan",
        "copy_up /state/w/root/home/ann",
        // what a copy-up made is marked in the upper store, each path once
        "mark layers/0/upper/ann",
        "copy_up /state/w/root/home/ann/proj",
        "mark layers/0/upper/ann/proj",
        "grab /state/w/root/home/ann/proj",
        // the home's own directory in the upper of the /home layer (0)
        "bind_upper /state/w/root/home/ann/<-layers/0/upper/ann",
        "attach /state/w/root/home/ann/proj",
        // sysfs in the world's network namespace, made by the parent
        // meanwhile: joined last of all mounts
        "join_netns",
        "mount /state/w/root/sys",
        "await",
        "join_cgroups",
        "cgroupns",
        "pivot_root",
        "sethostname",
        "rlimits",
        "chdir /home/ann/proj",
        "stdio",
        "setsid",
        "drop_caps",
        "nnp",
        "cloexec",
        "sigmask",
        "seccomp",
    ];
    let idx: Vec<usize> = order.iter().map(|o| pos(c, o)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {order:?} at {idx:?}\n{c:#?}");
    assert_eq!(c.iter().filter(|x| x.starts_with("mark ")).count(), 2, "{c:#?}");
    // As root the child never makes a network namespace of its own (nor
    // brings up the `lo` of the one its parent made).
    assert!(!c.iter().any(|x| x == "netns" || x == "lo_up"), "{c:#?}");
    // seccomp is the very last step; nothing mounts after pivot_root.
    assert_eq!(c.last().unwrap(), "seccomp");
    let pivot = pos(c, "pivot_root");
    assert!(c[pivot..].iter().all(|x| !x.starts_with("mount") && !x.starts_with("bind")));
    // every mount target lies under the new root.
    assert!(c
        .iter()
        .filter(|x| x.starts_with("mount ") || x.starts_with("bind"))
        .all(|x| x.contains(" /state/w/root/")));
}

/// A scoped network's child makes its namespace first and says so (its
/// parent is the busier one: it sets the network up); it joins none.
#[test]
fn a_scoped_networks_child_makes_its_namespace_first_and_says_so() {
    let mut r = recorder(None);
    with_netns(None, None, crate::child::NetnsPlan::Child { tell: Some(7) }, |p| setup(&mut r, p)).unwrap();
    let c = &r.calls;
    assert_eq!(c[..4], ["pdeathsig", "netns", "netns_made", "lo_up"], "{c:#?}");
    assert!(!c.iter().any(|x| x == "join_netns"), "{c:#?}");
    pos(c, "mount /state/w/root/sys");
}

#[test]
fn a_home_binds_the_upper_of_the_mount_it_lies_on() {
    let mut r = recorder(None);
    r.plan = vec![Step::Home { path: "/root".into() }, Step::Home { path: "/home/ann/x".into() }];
    with_plan(|p| setup(&mut r, p)).unwrap();
    pos(&r.calls, "bind_upper /state/w/root/root/<-upper/root");
    pos(&r.calls, "bind_upper /state/w/root/home/ann/x/<-layers/0/upper/ann/x");
    // A home on a read-only host mount has no upper: the world fails closed.
    let mut r = recorder(None);
    r.plan = vec![Step::Home { path: "/mnt/ro/u".into() }];
    let err = with_plan(|p| setup(&mut r, p)).unwrap_err();
    assert_eq!(err.step, "writable home");
    assert!(err.to_string().contains("read-only host mount"), "{err}");
}

#[test]
fn a_failing_step_stops_everything_after_it_and_is_named() {
    for (fail, name) in [
        ("rprivate", "mount --make-rprivate /"),
        ("pivot_root", "pivot_root"),
        ("drop_caps", "drop capabilities"),
        ("seccomp", "seccomp"),
    ] {
        let mut r = recorder(Some(fail));
        let err = with_plan(|p| setup(&mut r, p)).unwrap_err();
        assert_eq!(err.step, name);
        assert!(r.calls.last().unwrap().starts_with(fail), "{fail}: {:?}", r.calls.last());
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
    }
}

#[test]
fn masked_files_are_bound_then_made_read_only() {
    let mut r = recorder(None);
    with_plan(|p| setup(&mut r, p)).unwrap();
    let b = pos(&r.calls, "bind /state/w/root/etc/shadow");
    assert_eq!(r.calls[b + 1], "remount_ro /state/w/root/etc/shadow");
}

#[test]
fn masked_dirs_are_one_empty_tmpfs_then_binds_of_it() {
    let mut r = recorder(None);
    r.plan = vec![
        Step::MaskDir { path: "/proc/pressure".into() },
        Step::MaskDir { path: "/sys/kernel".into() },
        Step::MaskDir { path: "/sys/module".into() },
    ];
    with_plan(|p| setup(&mut r, p)).unwrap();
    let first = pos(&r.calls, "mount /state/w/root/proc/pressure");
    assert_eq!(r.calls[first + 1..first + 3], ["bind /state/w/root/sys/kernel", "bind /state/w/root/sys/module"]);
}

/// A kernel entry the world's own /proc or /sys lacks is not masked (there
/// is nothing to hide); a missing path anywhere else fails its step.
#[test]
fn masks_of_entries_the_kernel_lacks_are_skipped_and_only_those() {
    let mut r = recorder(None);
    r.missing = vec!["/state/w/root/proc/kallsyms", "/state/w/root/proc/pressure", "/state/w/root/sys/module"];
    r.plan = vec![
        Step::MaskFile { path: "/proc/kallsyms".into() },
        Step::MaskFile { path: "/proc/kcore".into() },
        Step::MaskDir { path: "/proc/pressure".into() },
        Step::MaskDir { path: "/proc/bus".into() },
        Step::MaskDir { path: "/sys/module".into() },
        Step::MaskDir { path: "/sys/kernel".into() },
    ];
    with_plan(|p| setup(&mut r, p)).unwrap();
    // The first existing entry of each kind becomes the source of the rest.
    let k = pos(&r.calls, "bind /state/w/root/proc/kcore");
    assert_eq!(r.calls[k + 1], "remount_ro /state/w/root/proc/kcore");
    let b = pos(&r.calls, "mount /state/w/root/proc/bus");
    assert_eq!(r.calls[b + 1], "bind /state/w/root/sys/module");
    assert_eq!(r.calls[b + 2], "bind /state/w/root/sys/kernel");
    for (path, kind) in [("/etc/shadow", "file"), ("/srv/gone", "dir")] {
        let mut r = recorder(None);
        r.missing = vec![if kind == "file" { "/state/w/root/etc/shadow" } else { "/state/w/root/srv/gone" }];
        r.plan = vec![match kind {
            "file" => Step::MaskFile { path: path.into() },
            _ => Step::MaskDir { path: path.into() },
        }];
        let e = with_plan(|p| setup(&mut r, p)).unwrap_err();
        assert!(e.step.starts_with("mask ("), "{e}");
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT), "{e}");
    }
}

/// In a user namespace: the child acts as the world's root before its first
/// mount, every host mount is seen through the mapping (the store too), the
/// stdio is made the world root's, and the namespace is entered after the
/// session and before the capabilities are dropped (becoming its root),
/// the parent-death signal set again after.
#[test]
fn a_user_namespace_is_mapped_everywhere_and_entered_last() {
    let mut r = recorder(None);
    let ids = crate::userns::WorldIds { uid: 1879048192, gid: 1879113728, count: 65536 };
    with_userns(Some(ChildUserns { fd: 99, ids }), |p| setup(&mut r, p)).unwrap();
    let c = &r.calls;
    let order = [
        "act_as_world_root",
        "pdeathsig",
        "rprivate",
        "idmap_store",
        "stash /state/w/root",
        "idmap_mount /",
        "idmap_mount /home",
        "overlay_idmapped /state/w/root",
        "overlay_idmapped /state/w/root/home",
        "bind_ro_idmapped /state/w/root/mnt/ro",
        "pivot_root",
        "stdio owner 1879048192:1879113728",
        "setsid",
        "setns_user",
        "drop_caps as 0:0",
        "pdeathsig_again",
        "nnp",
        "seccomp",
    ];
    let idx: Vec<usize> = order.iter().map(|o| pos(c, o)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {order:?} at {idx:?}\n{c:#?}");
    assert!(!c.iter().any(|x| x.starts_with("overlay /") || x.starts_with("bind_ro /")), "{c:#?}");
    // Every clone is stashed under the new root before the overlay covers
    // it (none for the read-only mount: its idmapped bind is attached).
    let stashed: Vec<usize> = c.iter().enumerate().filter(|(_, x)| x.starts_with("stash")).map(|(i, _)| i).collect();
    assert_eq!(stashed.len(), 3, "{c:#?}");
    assert!(stashed.iter().all(|&i| i < pos(c, "overlay_idmapped /state/w/root")), "{c:#?}");
    // Without one: none of it.
    let mut r = recorder(None);
    with_plan(|p| setup(&mut r, p)).unwrap();
    for step in ["act_as_world_root", "idmap_store", "setns_user", "_idmapped"] {
        assert!(!r.calls.iter().any(|x| x.contains(step)), "{step}: {:#?}", r.calls);
    }
}
