use super::*;
use crate::plan::tests::{host, mounted, req, Fake};
use crate::plan::{build, Step};

/// The test host plus a user's toolchains under /root.
fn toolchain_host() -> Fake {
    let mut h = host();
    for d in [
        "/root/.cargo",
        "/root/.cargo/bin",
        "/root/.cargo/registry",
        "/root/.cargo/registry/src",
        "/root/.rustup",
        "/root/.pyenv",
        "/root/.pyenv/shims",
        "/root/bin",
        "/root/.local",
        "/root/.local/state",
        "/root/.local/state/cloche",
        "/root/.ssh/bin",
        "/tmp/x",
        "/tmp/x/bin",
        "/opt",
        "/usr",
        "/usr/bin",
    ] {
        h.entries.insert(d.into(), true);
    }
    h.entries.insert("/root/.cargo/credentials.toml".into(), false);
    h
}

fn toolchain_req(cwd: &str, path: &str) -> FsRequest {
    let mut r = req(cwd);
    r.home_secrets.push(".cargo/credentials.toml".into());
    r.toolchains.groups = vec![vec![".cargo".into(), ".rustup".into()], vec![".pyenv".into()], vec![".ssh".into()]];
    r.path = Some(path.into());
    r
}

fn grabs(steps: &[Step]) -> Vec<(String, bool)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Grab { path, read_only, .. } => Some((path.display().to_string(), *read_only)),
            _ => None,
        })
        .collect()
}

/// The PATH entries a world of `r` hides (the refusal of its plan, if any).
fn hidden_path_entries(h: &dyn HostFacts, r: &FsRequest) -> Result<Vec<HiddenEntry>, Refusal> {
    Ok(super::hidden_path_entries(h, r, &View::new(h, r)?))
}

fn at(steps: &[Step], want: &Step) -> usize {
    steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want:?} missing from {steps:#?}"))
}

#[test]
fn toolchains_the_path_names_are_read_only_and_their_secrets_masked() {
    let steps = build(&toolchain_host(), &toolchain_req("/srv/app", "/root/.cargo/bin:/usr/bin")).unwrap();
    // rustup's proxies come with ~/.rustup; ~/.pyenv is not on PATH.
    assert_eq!(grabs(&steps), [("/root/.cargo".into(), true), ("/root/.rustup".into(), true)]);
    let cargo = at(&steps, &Step::CopyUp { path: "/root/.cargo".into() });
    assert!(cargo < at(&steps, &Step::Grab { slot: 0, path: "/root/.cargo".into(), read_only: true }));
    let home = at(&steps, &Step::Home { path: "/root".into() });
    let attach = at(&steps, &Step::Attach { slot: 0, path: "/root/.cargo".into() });
    let cred = at(&steps, &Step::MaskFile { path: "/root/.cargo/credentials.toml".into() });
    assert!(home < attach && attach < cred, "{steps:#?}");
    // The same PATH through a symlinked entry names the same toolchain.
    let mut h = toolchain_host();
    h.links.insert("/opt/cargo-bin".into(), "/root/.cargo/bin".into());
    let steps = build(&h, &toolchain_req("/srv/app", "/opt/cargo-bin")).unwrap();
    assert_eq!(grabs(&steps).len(), 2, "{steps:#?}");
    // A PATH entry inside another path of the group names it too.
    let mut h = toolchain_host();
    h.entries.insert("/root/.rustup/toolchains".into(), true);
    h.entries.insert("/root/.rustup/toolchains/stable".into(), true);
    let steps = build(&h, &toolchain_req("/srv/app", "/root/.rustup/toolchains/stable")).unwrap();
    assert_eq!(grabs(&steps), [("/root/.cargo".into(), true), ("/root/.rustup".into(), true)]);
    // Not named: nothing shown; relative, `..` and missing entries name nothing.
    let steps =
        build(&toolchain_host(), &toolchain_req("/srv/app", "/usr/bin:.cargo/bin:/root/x/../.cargo/bin")).unwrap();
    assert!(grabs(&steps).is_empty(), "{steps:#?}");
}

#[test]
fn a_toolchain_never_unmasks_a_secret() {
    // ~/.ssh is in the test policy's toolchains, and PATH names ~/.ssh/bin.
    let steps = build(&toolchain_host(), &toolchain_req("/srv/app", "/root/.ssh/bin")).unwrap();
    assert!(grabs(&steps).is_empty(), "{steps:#?}");
    let view = View::new(&toolchain_host(), &toolchain_req("/srv/app", "/root/.ssh/bin")).unwrap();
    assert!(!view.shows(Path::new("/root/.ssh/bin")));
}

#[test]
fn a_cwd_inside_a_toolchain_is_writable_there() {
    let cwd = "/root/.cargo/registry/src";
    let steps = build(&toolchain_host(), &toolchain_req(cwd, "/root/.cargo/bin")).unwrap();
    assert!(grabs(&steps).contains(&(cwd.into(), false)), "{steps:#?}");
    let outer = at(&steps, &Step::Attach { slot: 0, path: "/root/.cargo".into() });
    let inner = steps.iter().position(|s| matches!(s, Step::Attach { path, .. } if path == Path::new(cwd))).unwrap();
    assert!(outer < inner, "{steps:#?}");
    // Its mount point lies in the toolchain, not in the home: not copied up.
    assert!(!steps.contains(&Step::CopyUp { path: cwd.into() }), "{steps:#?}");
}

#[test]
fn homes_on_read_only_mounts_or_holding_mounts_are_empty_masks() {
    let mut r = req("/srv/app");
    r.data_mounts = vec![("/home".into(), true)];
    let m = mounted(&build(&host(), &r).unwrap());
    assert!(m.contains(&"/home/ann ro".to_string()) && m.contains(&"/root home".to_string()), "{m:?}");
    let mut r = req("/home/ann/proj");
    r.data_mounts = vec![("/home/ann/proj".into(), false)];
    let steps = build(&host(), &r).unwrap();
    assert!(mounted(&steps).contains(&"/home/ann".to_string()), "{steps:#?}");
    assert!(steps.contains(&Step::Mkdir { path: "/home/ann/proj".into(), mode: 0o755 }), "{steps:#?}");
    assert!(steps.contains(&Step::RemountRo { path: "/home/ann".into() }), "{steps:#?}");
    // A rw mount holding the home (a separate /home) keeps it writable.
    let mut r = req("/srv/app");
    r.data_mounts = vec![("/home".into(), false)];
    assert!(mounted(&build(&host(), &r).unwrap()).contains(&"/home/ann home".to_string()));
}

#[test]
fn a_state_dir_inside_a_home_stays_masked_and_secrets_there_are_hidden_by_the_home() {
    let mut r = toolchain_req("/srv/app", "/usr/bin");
    r.state_dirs = vec!["/root/.local/state/cloche".into()];
    let steps = build(&toolchain_host(), &r).unwrap();
    let copy = at(&steps, &Step::CopyUp { path: "/root/.local/state/cloche".into() });
    let home = at(&steps, &Step::Home { path: "/root".into() });
    let mask = steps
        .iter()
        .position(|s| matches!(s, Step::Mount { path, .. } if path == Path::new("/root/.local/state/cloche")))
        .unwrap();
    assert!(copy < home && home < mask, "{steps:#?}");
    // ~/.ssh, ~/.aws: no mount of their own (the home shows none of the host's files).
    let m = mounted(&steps);
    assert!(!m.iter().any(|m| m.starts_with("/root/.") && !m.starts_with("/root/.local/state/cloche")), "{m:?}");
    // A toolchain holding the state dir is shown, the state dir masked in it.
    let mut r = toolchain_req("/srv/app", "/root/.local/bin");
    r.toolchains.groups.push(vec![".local".into()]);
    r.state_dirs = vec!["/root/.local/state/cloche".into()];
    let steps = build(&toolchain_host(), &r).unwrap();
    let attach =
        steps.iter().position(|s| matches!(s, Step::Attach { path, .. } if path == Path::new("/root/.local"))).unwrap();
    assert!(
        attach
            < steps
                .iter()
                .rposition(|s| matches!(s, Step::Mount { path, .. } if path == Path::new("/root/.local/state/cloche")))
                .unwrap()
    );
}

#[test]
fn homes_not_masked_show_toolchains_as_they_are() {
    let mut r = toolchain_req("/srv/app", "/root/.cargo/bin");
    r.mask_homes = false;
    r.mask.retain(|m| m != Path::new("/root"));
    let steps = build(&toolchain_host(), &r).unwrap();
    assert!(grabs(&steps).is_empty(), "{steps:#?}");
    assert!(mounted(&steps).contains(&"/root/.cargo/credentials.toml file".to_string()), "{steps:#?}");
}

#[test]
fn hidden_path_entries_name_the_exposure_that_shows_them() {
    let mut r = toolchain_req(
        "/srv/app",
        "/root/bin:/root/.cargo/bin:/tmp/x/bin:/usr/bin:/nope:rel:/root/bin:/root/.ssh/bin:/root",
    );
    r.state_dirs.push("/tmp/x".into());
    let got = hidden_path_entries(&toolchain_host(), &r).unwrap();
    let want = [
        ("/root/bin", Ok("/root/bin")),
        ("/tmp/x/bin", Err("lies inside the masked path /tmp/x (cloche's state directory); no exposure reaches it")),
        ("/root/.ssh/bin", Err("lies inside the masked path /root/.ssh (fs.home_secrets .ssh)")),
        ("/root", Err("is the masked path /root (a home directory)")),
    ];
    let want: Vec<HiddenEntry> = want
        .into_iter()
        .map(|(e, f)| HiddenEntry { entry: e.into(), fix: f.map(PathBuf::from).map_err(str::to_string) })
        .collect();
    assert_eq!(got, want);
    // With the exposure, nothing is hidden.
    let mut r = toolchain_req("/srv/app", "/root/bin:/usr/bin");
    r.expose = vec!["/root/bin".into()];
    assert!(hidden_path_entries(&toolchain_host(), &r).unwrap().is_empty());
    // A cwd the plan refuses: the refusal, not a note.
    assert!(hidden_path_entries(&toolchain_host(), &toolchain_req("/root", "/root/bin")).is_err());
}

#[test]
fn a_toolchain_that_leads_out_of_its_home_is_not_shown() {
    let copied = |steps: &[Step], p: &str| steps.contains(&Step::CopyUp { path: p.into() });
    // ~/.pyenv is a symlink into another home: PATH names it, it is not
    // shown, and the link is not made either (it would lead to a hidden
    // path).
    let mut h = toolchain_host();
    h.entries.remove(Path::new("/root/.pyenv"));
    h.entries.remove(Path::new("/root/.pyenv/shims"));
    h.entries.insert("/home/ann/proj/shims".into(), true);
    h.links.insert("/root/.pyenv".into(), "/home/ann/proj".into());
    let r = toolchain_req("/srv/app", "/root/.pyenv/shims");
    let steps = build(&h, &r).unwrap();
    assert!(grabs(&steps).is_empty() && !copied(&steps, "/root/.pyenv"), "{steps:#?}");
    let hidden = hidden_path_entries(&h, &r).unwrap();
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    // ~/.cargo is a symlink to the home itself: not shown (its group's
    // ~/.rustup, inside the home, is).
    let mut h = toolchain_host();
    for d in ["/root/.cargo", "/root/.cargo/bin", "/root/.cargo/registry", "/root/.cargo/registry/src"] {
        h.entries.remove(Path::new(d));
    }
    h.entries.remove(Path::new("/root/.cargo/credentials.toml"));
    h.links.insert("/root/.cargo".into(), "/root".into());
    let steps = build(&h, &toolchain_req("/srv/app", "/root/.cargo/bin")).unwrap();
    assert_eq!(grabs(&steps), [("/root/.rustup".into(), true)], "{steps:#?}");
    assert!(!copied(&steps, "/root/.cargo"), "{steps:#?}");
    // One that leads out of every home to a shown path: the link is made
    // in the world's home (copied up as it is), nothing grabbed, nothing
    // said.
    let mut h = toolchain_host();
    h.entries.remove(Path::new("/root/.pyenv"));
    h.entries.remove(Path::new("/root/.pyenv/shims"));
    h.entries.insert("/opt/pyenv".into(), true);
    h.entries.insert("/opt/pyenv/shims".into(), true);
    h.links.insert("/root/.pyenv".into(), "/opt/pyenv".into());
    let r = toolchain_req("/srv/app", "/root/.pyenv/shims");
    let steps = build(&h, &r).unwrap();
    assert!(grabs(&steps).is_empty(), "{steps:#?}");
    let link = at(&steps, &Step::CopyUp { path: "/root/.pyenv".into() });
    assert!(link < at(&steps, &Step::Home { path: "/root".into() }), "{steps:#?}");
    assert!(hidden_path_entries(&h, &r).unwrap().is_empty());
    // A link whose target is itself a link, or goes through one, is not
    // made (the world would not have the second one).
    h.links.insert("/root/.pyenv".into(), "/opt/link-to-pyenv".into());
    h.links.insert("/opt/link-to-pyenv".into(), "/opt/pyenv".into());
    let steps = build(&h, &r).unwrap();
    assert!(!copied(&steps, "/root/.pyenv"), "{steps:#?}");
    // ... and the PATH note says why the entry is hidden and what to name.
    let why = "leads through the symbolic link /root/.pyenv, which the world does not have; \
               name /opt/pyenv/shims in PATH instead";
    let want = HiddenEntry { entry: "/root/.pyenv/shims".into(), fix: Err(why.into()) };
    assert_eq!(hidden_path_entries(&h, &r).unwrap(), [want]);
    // A link the host shows anyway is no matter (/opt is not hidden).
    let r = toolchain_req("/srv/app", "/opt/link-to-pyenv/shims");
    assert!(hidden_path_entries(&h, &r).unwrap().is_empty());
}

#[test]
fn writable_paths_inside_a_shown_toolchain_are_copy_on_write() {
    let mut r = toolchain_req("/srv/app", "/root/.cargo/bin");
    // registry exists and its toolchain is shown; ~/.pyenv/shims exists but
    // ~/.pyenv is not on PATH; ~/.cargo/git does not exist; ~/.ssh/bin
    // lies in a secret.
    r.toolchains.writable =
        vec![".cargo/registry".into(), ".pyenv/shims".into(), ".cargo/git".into(), ".ssh/bin".into()];
    let steps = build(&toolchain_host(), &r).unwrap();
    assert_eq!(
        grabs(&steps),
        [("/root/.cargo".into(), true), ("/root/.cargo/registry".into(), false), ("/root/.rustup".into(), true)]
    );
    let outer = at(&steps, &Step::Attach { slot: 0, path: "/root/.cargo".into() });
    let inner = at(&steps, &Step::Attach { slot: 1, path: "/root/.cargo/registry".into() });
    assert!(outer < inner, "{steps:#?}");
    // A secret inside a writable path stays masked after it is attached.
    let mut h = toolchain_host();
    h.entries.insert("/root/.cargo/registry/.npmrc".into(), false);
    r.home_secrets.push(".cargo/registry/.npmrc".into());
    let steps = build(&h, &r).unwrap();
    let inner = at(&steps, &Step::Attach { slot: 1, path: "/root/.cargo/registry".into() });
    assert!(inner < at(&steps, &Step::MaskFile { path: "/root/.cargo/registry/.npmrc".into() }), "{steps:#?}");
    // A toolchain listed as writable itself is shown copy-on-write (its
    // secrets still masked); ~/.rustup, of its group, stays read-only.
    r.toolchains.writable = vec![".cargo".into()];
    let steps = build(&h, &r).unwrap();
    assert_eq!(grabs(&steps), [("/root/.cargo".into(), false), ("/root/.rustup".into(), true)]);
    assert!(steps.contains(&Step::MaskFile { path: "/root/.cargo/credentials.toml".into() }), "{steps:#?}");
}
