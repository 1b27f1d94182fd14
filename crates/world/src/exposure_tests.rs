use super::*;
use crate::plan::tests::req;

/// A host where every path the tests name exists (as a directory, except
/// those with a dot in the last component and no children).
struct Host;

impl HostFacts for Host {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        // /srv/link -> /root/.aws
        match p.strip_prefix("/srv/link") {
            Ok(rest) => Some(Path::new("/root/.aws").join(rest)),
            Err(_) => Some(p.to_path_buf()),
        }
    }
    fn is_dir(&self, _: &Path) -> bool {
        true
    }
    fn exists(&self, p: &Path) -> bool {
        p != Path::new("/home/ann/.netrc")
    }
}

fn judge(cwd: &str) -> Result<(), String> {
    check(&Host, &req(cwd), "project").map(drop).map_err(|e| e.to_string())
}

#[test]
fn projects_inside_homes_are_the_normal_case() {
    for p in ["/root/work", "/home/ann/proj", "/home/ann/a/b", "/srv/app", "/etc", "/home", "/tmp/p", "/var/lib/x"] {
        assert_eq!(judge(p), Ok(()), "{p}");
    }
}

#[test]
fn refusals_name_the_mask_in_one_line() {
    let cases = [
        ("/", "project / is the root directory"),
        ("/root", "project /root is a home directory"),
        ("/home/ann", "project /home/ann is a home directory"),
        ("/root/.aws", "project /root/.aws is the masked path /root/.aws (fs.home_secrets .aws)"),
        ("/root/.aws/sub", "project /root/.aws/sub lies inside the masked path /root/.aws (fs.home_secrets .aws)"),
        ("/home/ann/.ssh/k", "lies inside the masked path /home/ann/.ssh (fs.home_secrets .ssh)"),
        ("/etc/shadow", "project /etc/shadow is the masked path /etc/shadow (fs.mask)"),
        ("/var/lib/cloche", "is the masked path /var/lib/cloche (cloche's state directory)"),
        ("/var/lib/cloche/worlds", "lies inside the masked path /var/lib/cloche (cloche's state directory)"),
        ("/var/lib", "project /var/lib contains cloche's state directory /var/lib/cloche"),
        ("/var", "contains cloche's state directory"),
        ("/tmp", "project /tmp is a scratch directory"),
        ("/run/secrets", "lies inside the masked path /run (the host's runtime directory)"),
        // By name, wherever the project is: a cwd above it would mask it.
        ("/srv/backup/.aws/x", "lies inside the masked path /srv/backup/.aws (fs.home_secrets .aws)"),
        // Judged on the canonical path.
        ("/srv/link/sub", "project /root/.aws/sub lies inside the masked path /root/.aws"),
    ];
    for (p, want) in cases {
        let err = judge(p).unwrap_err();
        assert!(err.contains(want), "{p}: {err:?} lacks {want:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn a_policy_mask_is_a_secret_unless_it_is_a_home() {
    // The default policy of old listed /root in fs.mask: still a home.
    let mut r = req("/root/work");
    r.mask.push("/root".into());
    r.mask_homes = false;
    assert_eq!(check(&Host, &r, "project").map(drop), Ok(()));
    // Any other fs.mask directory: nothing inside may be a project.
    let mut r = req("/srv/data/app");
    r.mask.push("/srv/data".into());
    let err = check(&Host, &r, "project").unwrap_err().to_string();
    assert!(err.contains("lies inside the masked path /srv/data (fs.mask)"), "{err}");
    // Homes are homes even when not masked as a whole.
    let mut r = req("/home/ann");
    r.mask_homes = false;
    assert!(check(&Host, &r, "project").is_err());
}

#[test]
fn explicit_exposures_are_relaxations_except_the_state_dir() {
    let mut r = req("/srv/app");
    r.expose = vec!["/root/.ssh".into(), "/etc/shadow".into(), "/root/work".into(), "/srv/x/.aws".into()];
    let got: Vec<String> = check(&Host, &r, "cwd").unwrap().iter().map(|x| x.to_string()).collect();
    assert_eq!(
        got,
        vec![
            "exposure /root/.ssh unmasks the masked path /root/.ssh (fs.home_secrets .ssh)",
            "exposure /etc/shadow unmasks the masked path /etc/shadow (fs.mask)",
            "exposure /srv/x/.aws unmasks the masked path /srv/x/.aws (fs.home_secrets .aws)",
        ]
    );
    r.expose = vec!["/var/lib/cloche/broker.db".into()];
    let err = check(&Host, &r, "cwd").unwrap_err().to_string();
    assert_eq!(
        err,
        "exposure /var/lib/cloche/broker.db lies inside the masked path /var/lib/cloche (cloche's state directory); \
         no exposure reaches it"
    );
}
