//! A world's writes on disk, and hard links as on the host.
//!
//! - Hard links and inode identity: a local `git clone`, `cp -al`, `ln` of a
//!   base file, tar's (and rsync's) hard-link detection, a write through one
//!   name of a base file seen through its other names (overlay `index=on`).
//! - The upper layer on disk (the state directory's pool), `/tmp` and
//!   `/var/tmp` with it: a world that writes gigabytes and then allocates
//!   memory is not killed for its files, which do not take the host's RAM;
//!   the upper's own cap stops it, not the memory limit; a killed run's
//!   world is swept by the next run; a discarded world's subvolume is gone
//!   by the end of the next run; another state directory's pool is not
//!   visible in a world; `--upper tmpfs` keeps the old way.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `key value...` lines of a world's stdout.
fn fields(o: &Outcome) -> BTreeMap<String, Vec<String>> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().map(str::to_string);
            Some((w.next()?, w.collect()))
        })
        .collect()
}

fn host_git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=cloche-test", "-c", "user.email=test@cloche.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .status()
        .expect("git on the host");
    assert!(st.success(), "git {args:?} failed on the host");
}

#[test]
fn a_local_git_clone_in_a_world_works() {
    let fx = Fixture::new();
    let repo = fx.mkdir("repo");
    host_git(&repo, &["init", "-q"]);
    for i in 0..3 {
        std::fs::write(repo.join(format!("f{i}")), format!("{i}\n")).unwrap();
        host_git(&repo, &["add", "."]);
        host_git(&repo, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    // git hard-links the objects of a local clone, then checks that each
    // link is the same inode as its source (git 2.47: "hardlink different
    // from source" when the world's link is not).
    let o = fx.sh(
        &[] as &[&str],
        "git clone -q repo clone 2>&1 || exit 3\n\
         echo commits $(git -C clone log --oneline | wc -l)\n\
         echo linked $(find clone/.git/objects -type f -links +1 | wc -l)",
    );
    o.expect_code(0);
    let f = fields(&o);
    assert_eq!(f.get("commits"), Some(&vec!["3".to_string()]), "{}", o.describe());
    let linked: u64 = f.get("linked").and_then(|v| v.first()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(linked > 0, "the clone copied its objects instead of linking them\n{}", o.describe());
    assert!(!repo.parent().unwrap().join("clone").exists(), "the clone reached the host");
    fx.finish();
}

#[test]
fn hard_links_to_base_files_are_the_same_inode() {
    let fx = Fixture::new();
    let a = fx.write("a", b"alpha\n", 0o644);
    let x = fx.write("d/x", b"x\n", 0o644);
    fx.write("d/y", b"y\n", 0o644);
    let h1 = fx.write("h1", b"one\n", 0o644);
    std::fs::hard_link(&h1, fx.dir().join("h2")).unwrap();
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino().to_string();
    let (ia, ix) = (ino(&a), ino(&x));
    let o = fx.sh(
        &[] as &[&str],
        "set -e\n\
         i0=$(stat -c %i a); ln a b; echo ln $i0 $(stat -c %i a) $(stat -c %i b)\n\
         cp -al d d2; echo cpal $(stat -c %i d/x) $(stat -c %i d2/x)\n\
         echo more >> h1; echo through $(tail -n 1 h2)\n\
         echo tar $(tar cf - a b | tar tvf - | grep -c 'link to a')\n\
         if command -v rsync >/dev/null; then mkdir r; rsync -aH a b r/; \
            echo rsync $(stat -c %i r/a) $(stat -c %i r/b); fi",
    );
    o.expect_code(0);
    let f = fields(&o);
    let want = |k: &str, v: &[&str]| {
        let got = f.get(k).cloned().unwrap_or_default();
        assert_eq!(got, v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{k}\n{}", o.describe());
    };
    // As on the host: the link, its source before and after, and the
    // host's own file are one inode.
    want("ln", &[&ia, &ia, &ia]);
    want("cpal", &[&ix, &ix]);
    // A write through one name of a base file shows through its other name.
    want("through", &["more"]);
    want("tar", &["1"]);
    if let Some(r) = f.get("rsync") {
        assert_eq!(r[0], r[1], "rsync -H did not keep the link\n{}", o.describe());
    }
    // The host is untouched; the fs_diff has the new names.
    assert_eq!(std::fs::read(fx.dir().join("h2")).unwrap(), b"one\n");
    assert!(!fx.dir().join("b").exists() && !fx.dir().join("d2").exists());
    let r = o.report();
    for p in ["b", "d2/x"] {
        assert!(find_entry(&r, "added", &fx.dir().join(p)).is_some(), "{p} not added: {}", r["fs_diff"]);
    }
    fx.finish();
}

/// `/proc/meminfo` in KiB.
fn meminfo() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_world_writing_gigabytes_then_allocating_fits_the_default_limits() {
    let fx = Fixture::new();
    let before = meminfo();
    // 3 GiB written (2.5 GiB allocated at once, 512 MiB of real data; in
    // the project, /tmp and /var/tmp), then 1.5 GiB of memory, under the
    // default 4 GiB memory limit.
    let o = fx.sh(
        &["--keep"],
        "fallocate -l 1536M big && fallocate -l 1024M /tmp/big && \
         dd if=/dev/zero of=/var/tmp/data bs=16M count=32 status=none && \
         du -sm big /tmp/big /var/tmp/data >&2 && exec \"$PROBE\" alloc 1536",
    );
    let kept = meminfo();
    let id = o.report()["world"].as_str().map(str::to_string);
    let _discard = id.as_deref().map(|id| Discard { fx: &fx, id: id.to_string() });
    o.expect_code(0);
    assert_eq!(o.one()["done"], true, "{}", o.describe());
    // While the world waits, kept: its 3 GiB are on disk, not in memory.
    let kib = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0) as i64;
    let shmem = kib(&kept, "Shmem") - kib(&before, "Shmem");
    let avail = kib(&before, "MemAvailable") - kib(&kept, "MemAvailable");
    assert!(shmem < 1 << 20, "shared memory grew by {} MiB while the world is kept", shmem >> 10);
    assert!(avail < 2 << 20, "available memory dropped by {} MiB while the world is kept", avail >> 10);
    // `cloche worlds` counts them.
    let w = fx.cloche(&["worlds", "list", "--json"]);
    w.expect_code(0);
    let listed: serde_json::Value = serde_json::from_slice(&w.stdout).unwrap();
    let size = listed["worlds"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"].as_str() == id.as_deref()))
        .and_then(|x| x["size"].as_u64())
        .unwrap_or(0);
    assert!(size >= 3 << 30, "the kept world holds {size} bytes: {listed}");
    drop(_discard);
    fx.finish();
}

/// Discards a kept world on drop.
struct Discard<'a> {
    fx: &'a Fixture,
    id: String,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        let o = self.fx.cloche(&["discard", &self.id]);
        assert!(o.code == Some(0) || std::thread::panicking(), "{}", o.describe());
    }
}

#[test]
fn the_upper_cap_stops_a_world_not_the_memory_limit() {
    let fx = Fixture::new();
    let default_policy = include_str!("../policies/default.toml");
    let line = "upper_size = \"16GiB\"";
    assert!(default_policy.contains(line), "policies/default.toml no longer says {line}");
    let policy = fx.out.path().join("small-upper.toml");
    std::fs::write(&policy, default_policy.replace(line, "upper_size = \"1GiB\"")).unwrap();
    let policy = policy.to_str().unwrap();
    // The cap counts the world's /tmp and /var/tmp with its upper.
    let o = fx.sh(
        &["--policy", policy, "--memory", "256M"],
        "fallocate -l 500M a && fallocate -l 200M /tmp/t && \
         dd if=/dev/zero of=b bs=1M count=200 status=none && echo fits\n\
         fallocate -l 400M /var/tmp/c 2>&1; echo over $?\n\
         dd if=/dev/zero of=e bs=1M count=400 status=none 2>&1; echo dd $?",
    );
    let f = fields(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    // 900 MiB fit in a 256 MiB world: the cap is not the memory limit...
    assert!(f.contains_key("fits"), "900 MiB did not fit under a 1 GiB cap\n{}", o.describe());
    // ...and past 1 GiB the world gets an error, not the host's disk.
    assert!(f.get("over").is_some_and(|v| v[0] != "0"), "fallocate past the cap succeeded\n{}", o.describe());
    assert!(f.get("dd").is_some_and(|v| v[0] != "0"), "dd past the cap succeeded\n{}", o.describe());
    assert!(out.contains("quota exceeded") || out.contains("No space left"), "{}", o.describe());
    assert!(o.report()["limits_hit"].as_array().is_some_and(|l| l.is_empty()), "{}", o.describe());
    fx.finish();
}

#[test]
fn a_killed_run_leaves_nothing_the_next_run_does_not_sweep() {
    let fx = Fixture::new();
    let mut cmd = fx.command();
    cmd.args(["run", "--", "sh", "-c", "echo x > written; sleep 30"]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut running = HostChild::spawn(&mut cmd);
    // The world is on disk while it runs: wait for its write.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rel = fx.dir().strip_prefix("/").unwrap().join("written");
    let written = || fx.worlds_now().iter().any(|id| fx.worlds_dir().join(id).join("fs/upper").join(&rel).exists());
    while !written() {
        assert!(Instant::now() < deadline, "no world on disk wrote its file; worlds: {:?}", fx.worlds_now());
        assert!(running.alive(), "cloche ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) of the child we started.
    unsafe { libc::kill(running.pid(), libc::SIGKILL) };
    let _ = running.0.wait();
    assert_eq!(fx.worlds_now().len(), 1, "the killed run's world is not on disk: {:?}", fx.worlds_now());
    // The next run sweeps it.
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    assert!(fx.worlds().is_empty(), "the next run left {:?}", fx.worlds());
    assert!(!fx.dir().join("written").exists());
    fx.finish();
}

#[test]
fn upper_tmpfs_keeps_writes_in_memory_and_makes_no_pool() {
    let fx = Fixture::new();
    let o = fx.sh(&["--upper", "tmpfs"], "echo hi > note; df -P . | tail -1");
    o.expect_code(0);
    assert!(find_entry(&o.report(), "added", &fx.dir().join("note")).is_some(), "{}", o.describe());
    assert!(!mount_points().contains(&fx.worlds_dir()), "a tmpfs world made the disk pool");
    let o = fx.cloche(&["run", "--upper", "ram", "--", "true"]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--upper"), "{}", o.describe());
    fx.finish();
}

#[test]
fn a_discarded_world_is_gone_from_the_pool_by_the_end_of_the_next_run() {
    let fx = Fixture::new();
    let trash =
        |fx: &Fixture| -> Vec<String> { fx.pool_entries().into_iter().filter(|n| n.starts_with(".trash-")).collect() };
    // A world that wrote 64 MiB, in its upper and its /tmp.
    let o = fx.sh(&[] as &[&str], "head -c 32M /dev/urandom > f && head -c 32M /dev/urandom > /tmp/g");
    o.expect_code(0);
    let first = o.report()["world"].as_str().unwrap().to_string();
    // Moved aside by its teardown, a moment after cloche answered (its
    // deletion is not on the run's path)...
    assert!(fx.worlds().is_empty(), "{:?}", fx.pool_entries());
    assert_eq!(trash(&fx), vec![format!(".trash-{first}")], "{:?}", fx.pool_entries());
    // ...and deleted by the next run, which leaves only its own.
    let o = fx.run(&[] as &[&str], &["true"]);
    o.expect_code(0);
    let second = o.report()["world"].as_str().unwrap().to_string();
    assert!(fx.worlds().is_empty(), "{:?}", fx.pool_entries());
    assert_eq!(trash(&fx), vec![format!(".trash-{second}")], "{:?}", fx.pool_entries());
    // `worlds gc` empties the trash at once.
    fx.cloche(&["worlds", "gc"]).expect_code(0);
    assert!(trash(&fx).is_empty(), "{:?}", fx.pool_entries());
    // Housekeeping never looks like a world.
    fx.cloche(&["worlds", "list", "--json"]).expect_code(0);
    assert!(fx.worlds().is_empty(), "{:?}", fx.pool_entries());
    fx.finish();
}

#[test]
fn another_state_directorys_worlds_are_not_visible_in_a_world() {
    let fx = Fixture::new();
    // Another state directory, inside this project (so inside the world's
    // view), with a world kept on disk that wrote a secret.
    let other = fx.mkdir("other-state");
    let elsewhere = fx.out.path();
    let mut cmd = fx.command();
    cmd.env("CLOCHE_STATE_DIR", &other).current_dir(elsewhere);
    cmd.args(["run", "--keep", "--", "sh", "-c", "echo other-secret-8c1f > note; echo other-secret-8c1f > /tmp/t"]);
    let kept = run_cmd(&mut cmd, DEADLINE);
    kept.expect_code(0);
    let discard = || {
        let mut c = fx.command();
        c.env("CLOCHE_STATE_DIR", &other).args(["worlds", "list", "--json"]);
        let listed: serde_json::Value = serde_json::from_slice(&run_cmd(&mut c, DEADLINE).stdout).unwrap();
        let worlds = listed["worlds"].as_array().cloned().expect("worlds list --json: {\"worlds\": [...]}");
        assert_eq!(worlds.len(), 1, "{listed}");
        for w in worlds {
            let mut c = fx.command();
            c.env("CLOCHE_STATE_DIR", &other).args(["discard", w["id"].as_str().unwrap()]);
            run_cmd(&mut c, DEADLINE).expect_code(0);
        }
    };
    // The other state directory's pool image, made by its kept world, is
    // there (a file of the state dir), but the world can neither read it,
    // copy it, nor change its mode or owner to read it.
    assert!(other.join("pool.img").is_file(), "no pool image in the other state dir");
    let o = fx.sh(
        &[] as &[&str],
        "echo grep $(grep -rs other-secret-8c1f other-state | wc -l)\n\
         echo worlds $(ls -A other-state/worlds | wc -l)\n\
         head -c 1 other-state/pool.img >/dev/null 2>&1; echo read $?\n\
         cp other-state/pool.img /tmp/copy 2>/dev/null; echo copy $?\n\
         chmod 644 other-state/pool.img 2>/dev/null; echo chmod $?\n\
         chown 0:0 other-state/pool.img 2>/dev/null; echo chown $?\n\
         head -c 1 other-state/pool.img >/dev/null 2>&1; echo reread $?",
    );
    discard();
    o.expect_code(0);
    let f = fields(&o);
    let got = |k: &str| f.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
    assert_eq!((got("grep"), got("worlds")), ("0".into(), "0".into()), "{}", o.describe());
    for k in ["read", "copy", "chmod", "chown", "reread"] {
        assert_ne!(got(k), "0", "{k} of another state dir's pool image succeeded in a world\n{}", o.describe());
        assert!(!got(k).is_empty(), "{k}: no answer\n{}", o.describe());
    }
    fx.finish();
}

#[test]
fn the_root_overlay_keeps_inodes_and_never_syncs_its_disk_upper() {
    let fx = Fixture::new();
    // 200 base files changed: each copy-up on disk would fsync without
    // `volatile` (4-8 ms each here, benches/overlay.py).
    for i in 0..200 {
        fx.write(&format!("base/f{i}"), b"x\n", 0o644);
    }
    let o = fx.sh(
        &[] as &[&str],
        "for f in base/*; do echo y >> \"$f\"; done\n\
         grep ' / / .* - overlay ' /proc/self/mountinfo | head -n 1 | awk '{print \"root\", $NF}'",
    );
    o.expect_code(0);
    let f = fields(&o);
    let opts: Vec<&str> = f.get("root").and_then(|v| v.first()).map(|s| s.split(',').collect()).unwrap_or_default();
    // index=on: links keep inodes; fsync=volatile: no sync to the pool (a
    // world's upper is disposable); no xino (inode numbers stay the lower
    // filesystem's).
    for want in ["index=on", "fsync=volatile"] {
        assert!(opts.contains(&want), "{want} missing from the root overlay's options {opts:?}\n{}", o.describe());
    }
    assert!(!opts.iter().any(|o| o.starts_with("xino=on")), "{opts:?}");
    assert_eq!(o.report()["fs_diff"]["totals"]["modified"], 200, "{}", o.describe());
    fx.finish();
}
