use super::*;
use std::collections::BTreeMap;

/// A fake root filesystem: path -> is_dir. Symlinks map to their target.
struct Fake {
    entries: BTreeMap<PathBuf, bool>,
    links: BTreeMap<PathBuf, PathBuf>,
}

impl Fake {
    fn new(dirs: &[&str], files: &[&str]) -> Fake {
        let mut entries = BTreeMap::new();
        for d in dirs {
            entries.insert(PathBuf::from(d), true);
        }
        for f in files {
            entries.insert(PathBuf::from(f), false);
        }
        Fake { entries, links: BTreeMap::new() }
    }
}

impl HostFacts for Fake {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        if let Some(t) = self.links.get(p) {
            return self.canonical(t);
        }
        (p == Path::new("/") || self.entries.contains_key(p)).then(|| p.to_path_buf())
    }
    fn is_dir(&self, p: &Path) -> bool {
        p == Path::new("/") || self.entries.get(p) == Some(&true)
    }
    fn exists(&self, p: &Path) -> bool {
        self.entries.contains_key(p) || self.links.contains_key(p)
    }
}

fn host() -> Fake {
    let mut f = Fake::new(
        &[
            "/tmp",
            "/var",
            "/var/tmp",
            "/run",
            "/root",
            "/home",
            "/home/ann",
            "/home/ann/proj",
            "/home/ann/.ssh",
            "/home/ann/proj/.ssh",
            "/etc",
            "/proc",
            "/proc/sys",
            "/proc/acpi",
            "/var/lib",
            "/var/lib/cloche",
            "/srv",
            "/srv/app",
            "/tmp/p",
        ],
        &["/etc/shadow", "/proc/kcore", "/proc/sysrq-trigger", "/home/ann/.netrc"],
    );
    f.links.insert("/var/run".into(), "/run".into());
    f
}

fn req(cwd: &str) -> FsRequest {
    FsRequest {
        cwd: cwd.into(),
        mask: vec!["/etc/shadow".into(), "/root".into(), "/var/run/secret".into()],
        homes: vec!["/home/ann".into()],
        home_secrets: vec![".ssh".into(), ".netrc".into(), ".aws".into()],
        expose: vec![],
        state_dir: "/var/lib/cloche".into(),
        scratch_size: 1 << 20,
    }
}

fn mounted(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount { path, fstype: "tmpfs", flags, .. } => {
                Some(format!("{}{}", path.display(), if flags & MS_RDONLY != 0 { " ro" } else { "" }))
            }
            Step::MaskFile { path } => Some(format!("{} file", path.display())),
            _ => None,
        })
        .collect()
}

#[test]
fn defaults_mask_secrets_homes_state_and_scratch() {
    let steps = build(&host(), &req("/srv/app"));
    let m = mounted(&steps);
    for want in [
        "/etc/shadow file",
        "/root ro",
        "/home/ann ro",
        "/var/lib/cloche ro",
        "/tmp",
        "/var/tmp",
        "/run",
        "/proc/kcore file",
    ] {
        assert!(m.contains(&want.to_string()), "{want} missing from {m:?}");
    }
    // /srv/app is not under any mask: nothing to grab.
    assert!(!steps.iter().any(|s| matches!(s, Step::Grab { .. })));
    // a mask path that does not exist is skipped.
    assert!(!m.iter().any(|x| x.contains("secret")));
    assert!(steps.contains(&Step::ReadOnly { path: "/proc/sys".into() }));
}

#[test]
fn cwd_inside_a_home_is_exposed_and_its_secrets_masked() {
    let steps = build(&host(), &req("/home/ann/proj"));
    let grab =
        steps.iter().position(|s| matches!(s, Step::Grab { path, .. } if path == Path::new("/home/ann/proj"))).unwrap();
    let mask =
        steps.iter().position(|s| matches!(s, Step::Mount { path, .. } if path == Path::new("/home/ann"))).unwrap();
    let attach = steps
        .iter()
        .position(|s| matches!(s, Step::Attach { path, .. } if path == Path::new("/home/ann/proj")))
        .unwrap();
    let ro =
        steps.iter().position(|s| matches!(s, Step::RemountRo { path } if path == Path::new("/home/ann"))).unwrap();
    let secret = steps
        .iter()
        .position(|s| matches!(s, Step::Mount { path, .. } if path == Path::new("/home/ann/proj/.ssh")))
        .unwrap();
    assert!(grab < mask && mask < attach && attach < ro && attach < secret, "{steps:#?}");
    // the home's own .ssh stays hidden by the home mask: no separate mount.
    assert!(!mounted(&steps).contains(&"/home/ann/.ssh ro".to_string()));
}

#[test]
fn cwd_at_root_unmasks_nothing() {
    let steps = build(&host(), &req("/"));
    let m = mounted(&steps);
    assert!(m.contains(&"/etc/shadow file".to_string()));
    assert!(m.contains(&"/home/ann ro".to_string()));
    assert!(!steps.iter().any(|s| matches!(s, Step::Grab { .. })));
}

#[test]
fn cwd_in_tmp_survives_the_fresh_tmp() {
    let steps = build(&host(), &req("/tmp/p"));
    assert!(steps.iter().any(|s| matches!(s, Step::Grab { path, .. } if path == Path::new("/tmp/p"))));
    assert!(steps.iter().any(|s| matches!(s, Step::Attach { path, .. } if path == Path::new("/tmp/p"))));
    // scratch stays writable
    assert!(!steps.iter().any(|s| matches!(s, Step::RemountRo { path } if path == Path::new("/tmp"))));
}

#[test]
fn explicit_expose_unmasks() {
    let mut r = req("/srv/app");
    r.expose = vec!["/etc/shadow".into(), "/home/ann".into()];
    let m = mounted(&build(&host(), &r));
    assert!(!m.contains(&"/etc/shadow file".to_string()));
    assert!(!m.iter().any(|x| x.starts_with("/home/ann ")));
    // secrets inside an exposed home stay masked
    assert!(m.contains(&"/home/ann/.ssh ro".to_string()), "{m:?}");
    assert!(m.contains(&"/home/ann/.netrc file".to_string()), "{m:?}");
}

#[test]
fn symlinked_paths_are_canonicalized() {
    let mut h = host();
    h.links.insert("/etc/link-to-root".into(), "/root".into());
    let mut r = req("/srv/app");
    r.mask = vec!["/etc/link-to-root".into()];
    let m = mounted(&build(&h, &r));
    assert!(m.contains(&"/root ro".to_string()));
    assert!(!m.iter().any(|x| x.contains("link-to-root")));
}

#[test]
fn system_mounts_need_no_host_facts_and_masks_need_them() {
    // /proc, /sys, /dev (with /dev/null, the source of file masks) are the
    // fixed first part; the child mounts them before the host-dependent part
    // arrives, which holds no system mount of its own.
    let sys = system_steps();
    assert!(sys.iter().any(|s| matches!(s, Step::Mount { fstype: "proc", .. })));
    assert!(sys.iter().any(|s| matches!(s, Step::Mknod { path, .. } if path == Path::new("/dev/null"))));
    assert!(sys.iter().all(|s| !matches!(s, Step::MaskFile { .. } | Step::Grab { .. })));
    let steps = build(&host(), &req("/srv/app"));
    assert!(steps.iter().any(|s| matches!(s, Step::MaskFile { path } if path == Path::new("/proc/kcore"))));
    assert!(steps.iter().any(|s| matches!(s, Step::MaskFile { path } if path == Path::new("/etc/shadow"))));
    assert!(!steps.iter().any(|s| matches!(s, Step::Mount { fstype: "proc" | "sysfs" | "devpts", .. })));
}

#[test]
fn kernel_files_and_dirs_are_masked_where_the_host_has_them() {
    let h = Fake::new(
        &["/proc", "/proc/sys", "/proc/pressure", "/proc/bus", "/sys", "/sys/kernel", "/sys/module", "/var/lib"],
        &["/proc/kallsyms", "/proc/kmsg", "/proc/cmdline", "/proc/slabinfo", "/proc/sysrq-trigger", "/proc/meminfo"],
    );
    let steps = build(&h, &FsRequest { cwd: "/".into(), scratch_size: 1 << 20, ..FsRequest::default() });
    let files: Vec<&Path> = steps
        .iter()
        .filter_map(|s| if let Step::MaskFile { path } = s { Some(path.as_path()) } else { None })
        .collect();
    let dirs: Vec<&Path> =
        steps.iter().filter_map(|s| if let Step::MaskDir { path } = s { Some(path.as_path()) } else { None }).collect();
    fn p<'a>(v: &[&'a str]) -> Vec<&'a Path> {
        v.iter().map(|s| Path::new(*s)).collect()
    }
    assert_eq!(files, p(&["/proc/kallsyms", "/proc/kmsg", "/proc/slabinfo", "/proc/cmdline", "/proc/sysrq-trigger"]));
    assert_eq!(dirs, p(&["/proc/pressure", "/proc/bus", "/sys/kernel", "/sys/module"]));
    // /proc/sys stays readable, read-only; what the host lacks gets no step.
    let ro: Vec<&Step> = steps.iter().filter(|s| matches!(s, Step::ReadOnly { .. })).collect();
    assert_eq!(ro, [&Step::ReadOnly { path: "/proc/sys".into() }]);
    // The whole plan survives the wire.
    let wire = crate::plan_wire::encode(&steps);
    assert_eq!(crate::plan_wire::decode(&wire[4..]).unwrap(), steps);
}
