//! Kept worlds that last across runs: continued (a run, or a batch, on top
//! of what the world's earlier runs left) and forked (a copy to try another
//! way).
//!
//! **Continuing.** [`take`] holds a kept world for one runner: its id's
//! liveness lock (the one a running world holds: a second runner, a sweep,
//! a discard or a commit finds it live and is refused at once, never
//! waits) and its review lock (`kept::lock`: taken while a commit reads
//! it). The run then mounts the world's own upper again
//! (`upper::Upper::resume`: its subvolume, capped by the policy in force
//! now), so that the fs_diff stays relative to the base, the host, and a
//! review or commit sees everything the world did in all its runs. What
//! must stay the same for that to be safe and honest is the world's
//! [`Frame`], recorded when it was made: the user it runs as, its project
//! (cwd: the masks relative to it, the commit roots) and what it hides (a
//! continuation may hide more, never less: a secret hidden in run 1 stays
//! hidden in run 2); and its layers, each over the same host data mount
//! (by path: [`Taken::assign_slots`]). Everything else
//! (policy, limits, network, seccomp) is the one in force for the new run.
//!
//! **Records.** Each run of a kept world is a line of `runs.jsonl`
//! ([`RunRecord`]: its number, command or batch, exit, what it changed
//! itself); `fs_diff.json` is the world's fs_diff at the end of its last
//! run, from which the next run's own changes are derived
//! (`diff::delta`), as a batch derives each entry's.
//!
//! **Forking.** [`fork`] snapshots the world's subvolume (btrfs: no data
//! is copied, extents are shared until either side writes), gives the copy
//! a new id, its own description and the records so far, and clears the
//! overlays' work directories (their index names the original's upper).
//! Its scratch directories (the last run's `/tmp`, ...) are set aside by
//! its first run, as any continued world's.

use crate::diff::{FsDiff, Totals};
use crate::error::WorldError;
use crate::kept::{self, KeptWorld};
use crate::layers::HostMount;
use crate::pool;
use crate::spec::Spec;
use crate::state::{Claim, StateDir};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a kept world cannot be continued or forked.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    /// No kept world with that id (never made, discarded, or still being
    /// made: its first run has not ended).
    #[error("no kept world {0}")]
    NotFound(String),
    /// Another runner holds it (a run or batch continuing it, a fork, a
    /// commit or a discard in progress).
    #[error("{0}")]
    Busy(String),
    /// The run would differ from the world in what a continuation keeps.
    #[error("{0}")]
    Differs(String),
    #[error("world {id}: {step}: {source}")]
    Io { id: String, step: &'static str, source: io::Error },
}

fn io_at(id: &str, step: &'static str) -> impl FnOnce(io::Error) -> KeptError {
    let id = id.to_string();
    move |source| KeptError::Io { id, step, source }
}

/// The user a world's processes run as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameUser {
    pub uid: u32,
    pub gid: u32,
}

/// What a world was made with that every run of it keeps (`world.json`,
/// `frame`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// `None`: root, as a world made by `cloche` in the process.
    pub user: Option<FrameUser>,
    /// The project: the masks relative to it, the commit roots.
    pub cwd: PathBuf,
    pub mask: Vec<PathBuf>,
    pub mask_homes: bool,
    pub home_secrets: Vec<PathBuf>,
    pub expose: Vec<PathBuf>,
    pub toolchains: Vec<Vec<PathBuf>>,
    pub toolchain_writable: Vec<PathBuf>,
}

impl Frame {
    /// The frame of a world of `spec`.
    pub fn of(spec: &Spec) -> Frame {
        Frame {
            user: spec.user.as_ref().map(|u| FrameUser { uid: u.uid, gid: u.gid }),
            cwd: spec.cwd.clone(),
            mask: spec.mask.clone(),
            mask_homes: spec.mask_homes,
            home_secrets: spec.home_secrets.clone(),
            expose: spec.expose.clone(),
            toolchains: spec.toolchains.groups.clone(),
            toolchain_writable: spec.toolchains.writable.clone(),
        }
    }

    /// Why a run with frame `now` may not continue world `id` made with
    /// this one; `None` when it may.
    pub fn refuses(&self, id: &str, now: &Frame) -> Option<String> {
        let who = |u: &Option<FrameUser>| u.as_ref().map_or("root".to_string(), |u| format!("uid {}", u.uid));
        if self.user != now.user {
            return Some(format!(
                "world {id} runs as {}; this run would be {}: a world is continued by the user it runs as",
                who(&self.user),
                who(&now.user)
            ));
        }
        if self.cwd != now.cwd {
            return Some(format!(
                "world {id} works in {}; a run that continues it works there too (its masks and commit roots \
                 are that project's), not in {}",
                self.cwd.display(),
                now.cwd.display()
            ));
        }
        let missing = |old: &[PathBuf], new: &[PathBuf]| old.iter().find(|p| !new.contains(p)).cloned();
        let hides_less = |what: &str, p: &Path| {
            Some(format!(
                "world {id} hid {} ({what}) and the policy in force now does not: a continuation may hide more, \
                 never less",
                p.display()
            ))
        };
        if let Some(p) = missing(&self.mask, &now.mask) {
            return hides_less("fs.mask", &p);
        }
        if self.mask_homes && !now.mask_homes {
            return hides_less("fs.mask_homes", Path::new("every home"));
        }
        if let Some(p) = missing(&self.home_secrets, &now.home_secrets) {
            return hides_less("fs.home_secrets", &p);
        }
        if let Some(p) = missing(&now.expose, &self.expose) {
            return Some(format!(
                "{} would be exposed now and was not in world {id}: a continuation exposes nothing new",
                p.display()
            ));
        }
        let new_group = now.toolchains.iter().find(|g| !self.toolchains.contains(g));
        if let Some(g) = new_group {
            return Some(format!("the toolchain {g:?} (fs.toolchains) was not shown in world {id}"));
        }
        if let Some(p) = missing(&now.toolchain_writable, &self.toolchain_writable) {
            return Some(format!(
                "{} (fs.toolchain_writable) was not writable in world {id}: a continuation exposes nothing new",
                p.display()
            ));
        }
        None
    }
}

/// One run of a kept world (`runs.jsonl`, one line each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 1 for the run that made the world, then 2, 3, ... (a fork goes on
    /// from its original's number).
    pub run: u32,
    /// `run` (one command) or `batch`.
    pub kind: String,
    /// The batch, for a batch's run.
    #[serde(default)]
    pub batch: Option<String>,
    /// A run's command (argv), a batch's entries' commands.
    pub command: Vec<String>,
    /// Who ran it (`uid:N`, `agent:NAME`), when known.
    #[serde(default)]
    pub actor: Option<String>,
    /// The policy version it ran with, when known.
    #[serde(default)]
    pub policy: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub exit_code: i32,
    /// What this run changed itself (against the world as the run before
    /// left it).
    pub changes: Totals,
}

/// Appends `r` to world `id`'s `runs.jsonl` (synced).
pub fn append_run(state: &StateDir, id: &str, r: &RunRecord) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    let path = state.world_path(id).join("runs.jsonl");
    let mut f =
        fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// The runs recorded in world directory `dir`, in order (a torn last line,
/// from a crash while appending, is left out).
pub fn read_runs(dir: &Path) -> Vec<RunRecord> {
    let Ok(f) = fs::File::open(dir.join("runs.jsonl")) else { return Vec::new() };
    io::BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect()
}

/// Writes the world's fs_diff at the end of a run (`fs_diff.json`,
/// replaced whole), for the next run's own changes. Not synced: keeping
/// the world syncs the pool.
pub(crate) fn save_diff(state: &StateDir, id: &str, d: &FsDiff) -> io::Result<()> {
    let path = state.world_path(id).join("fs_diff.json");
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec(d).map_err(io::Error::other)?)?;
    fs::rename(&tmp, &path)
}

/// The world's fs_diff at the end of its last run (empty when not
/// recorded: a world kept before runs were recorded).
fn last_diff(dir: &Path) -> FsDiff {
    fs::read(dir.join("fs_diff.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// A kept world held for one runner (see the module's text). Dropping it
/// releases the world (kept as its last run left it).
pub struct Taken {
    pub(crate) claim: Claim,
    _review: fs::File,
    world: KeptWorld,
    meta: serde_json::Value,
}

/// Holds kept world `id` for one runner: refused at once when it does not
/// exist, is not settled yet, or is in use. A world left on a tmpfs (no
/// room on disk when it was kept) is moved to the disk pool first.
pub fn take(state: &StateDir, id: &str) -> Result<Taken, KeptError> {
    if !crate::state::valid_id(id) {
        return Err(KeptError::NotFound(id.chars().take(40).collect()));
    }
    let busy =
        || KeptError::Busy(format!("world {id} is in use (a run, a batch or a fork holds it): try again when it ends"));
    let claim = state.claim_id(id).map_err(io_at(id, "claim the world's id"))?.ok_or_else(busy)?;
    let path = state.world_path(id);
    if !path.join("kept").exists() {
        // Not a kept world (never made, discarded, or a world whose first
        // run died before it was kept: the sweep settles it).
        return Err(KeptError::NotFound(id.to_string()));
    }
    let review = kept::lock(&path, false).map_err(|e| match e.kind() {
        io::ErrorKind::ResourceBusy => KeptError::Busy(format!("world {id} is being committed or discarded")),
        _ => io_at(id, "lock the world for review")(e),
    })?;
    let mut world = kept::find(state, id).ok_or_else(|| KeptError::NotFound(id.to_string()))?;
    if world.store != "disk" {
        pool::ensure(&state.root).and_then(|()| pool::adopt(&state.root, id)).map_err(|e| KeptError::Io {
            id: id.to_string(),
            step: "move the world to disk",
            source: io::Error::other(e),
        })?;
        let _ = state.forget_store_error(id);
        world = kept::find(state, id).ok_or_else(|| KeptError::NotFound(id.to_string()))?;
    }
    let meta: serde_json::Value = fs::read(path.join("world.json"))
        .map_err(io_at(id, "read world.json"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| io_at(id, "parse world.json")(io::Error::other(e))))?;
    Ok(Taken { claim, _review: review, world, meta })
}

impl Taken {
    pub fn id(&self) -> &str {
        &self.claim.id
    }

    /// The world as it was taken.
    pub fn world(&self) -> &KeptWorld {
        &self.world
    }

    /// The world's frame; refused for a world kept before frames were
    /// recorded.
    pub fn frame(&self) -> Result<Frame, KeptError> {
        serde_json::from_value(self.meta["frame"].clone()).map_err(|_| {
            KeptError::Differs(format!(
                "world {} was kept by an earlier cloche, without what a continuation must keep: it can be \
                 reviewed, committed or discarded, not continued",
                self.id()
            ))
        })
    }

    /// The number the next run of the world gets.
    pub fn next_run(&self) -> u32 {
        self.meta["runs"].as_u64().map_or(2, |n| n as u32 + 1)
    }

    /// Whether a run of `spec` may continue the world (its [`Frame`]),
    /// with the host's data mounts as they are now.
    pub fn check(&self, spec: &Spec, state: &StateDir) -> Result<(), WorldError> {
        let (_, layers, _) = crate::world::host_facts(spec, state)?;
        self.check_frame(spec)?;
        self.assign_slots(layers).map(drop).map_err(WorldError::Kept)
    }

    pub(crate) fn check_frame(&self, spec: &Spec) -> Result<(), KeptError> {
        match self.frame()?.refuses(self.id(), &Frame::of(spec)) {
            Some(why) => Err(KeptError::Differs(why)),
            None => Ok(()),
        }
    }

    /// The world's layers (`world.json`: host mount path, `fs/layers/<k>/upper`).
    fn recorded_layers(&self) -> Vec<(PathBuf, usize)> {
        let slot = |u: &str| u.strip_prefix("fs/layers/")?.strip_suffix("/upper")?.parse::<usize>().ok();
        let list = self.meta["layers"].as_array().cloned().unwrap_or_default();
        list.iter().filter_map(|l| Some((PathBuf::from(l["path"].as_str()?), slot(l["upper"].as_str()?)?))).collect()
    }

    /// The host's data mounts now (`layers`, in their order), each given
    /// the directories of the world's store its earlier runs used for that
    /// path (a mount the host gained since gets a slot of its own): the
    /// world's files under `/home` stay over `/home` whatever mounts came
    /// and went beside it. Refused when a mount the world has a layer of
    /// is no longer a writable data mount of the host (its files would be
    /// neither seen by the run nor reviewed against the right base).
    pub(crate) fn assign_slots(&self, layers: Vec<HostMount>) -> Result<Vec<HostMount>, KeptError> {
        slots(self.id(), &self.recorded_layers(), layers)
    }

    /// The world's fs_diff as its last run left it.
    pub(crate) fn last_diff(&self) -> FsDiff {
        last_diff(&self.world.path)
    }

    /// The world's description after a run of `spec` that exited `code`:
    /// the frame and the creation as they were; one run more; a batch that
    /// ran in it named among its batches.
    pub(crate) fn after_run(&self, spec: &Spec, layers: &[HostMount], code: i32) -> serde_json::Value {
        let mut meta = self.meta.clone();
        // Its layers: the earlier runs' and this run's (by path).
        let mut list = self.meta["layers"].as_array().cloned().unwrap_or_default();
        for m in layers.iter().filter(|m| !m.read_only) {
            if !list.iter().any(|l| l["path"].as_str() == m.path.to_str()) {
                list.push(serde_json::json!({"path": m.path, "upper": format!("fs/layers/{}/upper", m.slot)}));
            }
        }
        meta["layers"] = list.into();
        meta["state"] = "kept".into();
        meta["exit_code"] = code.into();
        meta["runs"] = self.next_run().into();
        meta["updated_ms"] = crate::world::now_ms().into();
        if let Some(b) = spec.owner.as_deref().and_then(|o| o.strip_prefix("batch:")) {
            if meta["owner"].as_str() != spec.owner.as_deref() {
                let mut list: Vec<serde_json::Value> = meta["batches"].as_array().cloned().unwrap_or_default();
                list.push(b.into());
                meta["batches"] = list.into();
            }
        }
        meta
    }
}

/// [`Taken::assign_slots`] for world `id` with the layers `recorded` (host
/// mount path, slot).
fn slots(id: &str, recorded: &[(PathBuf, usize)], mut layers: Vec<HostMount>) -> Result<Vec<HostMount>, KeptError> {
    for (path, _) in recorded {
        if !layers.iter().any(|m| &m.path == path && !m.read_only) {
            return Err(KeptError::Differs(format!(
                "world {id} has a layer over the host's data mount {}, which is no longer mounted (or is read-only \
                 now): mount it again to continue the world",
                path.display()
            )));
        }
    }
    let mut used: Vec<usize> = recorded.iter().map(|(_, k)| *k).collect();
    for m in layers.iter_mut() {
        m.slot = match recorded.iter().find(|(p, _)| p == &m.path) {
            Some((_, k)) => *k,
            None => {
                let free = (0..).find(|k| !used.contains(k)).expect("a free slot");
                used.push(free);
                free
            }
        };
    }
    Ok(layers)
}

/// Forks kept world `id`: a new kept world, a copy of it as it is (files,
/// records, history), owned by `owner` and named by a new id. The original
/// is held meanwhile (refused while it is in use) and left as it was.
pub fn fork(state: &StateDir, id: &str, owner: Option<&str>) -> Result<KeptWorld, KeptError> {
    let src = take(state, id)?;
    let claim = state.claim().map_err(io_at(id, "claim an id for the fork"))?;
    let new = claim.id.clone();
    let worlds = state.worlds_dir();
    let pool = pool::open(&worlds).map_err(io_at(id, "open the disk pool"))?;
    let root = pool::snapshot_world(pool.as_fd(), id, &new).map_err(|e| KeptError::Io {
        id: id.to_string(),
        step: "snapshot",
        source: io::Error::other(e),
    })?;
    let tmp = format!("{}{new}", pool::FORKING);
    let made = (|| -> io::Result<()> {
        let fs_dir = open_dir(root.as_fd(), "fs")?;
        for w in work_dirs(fs_dir.as_fd())? {
            let wd = open_dir(fs_dir.as_fd(), &w)?;
            pool::tree::remove(wd.as_fd(), "work")?;
            pool::tree::remove(wd.as_fd(), "index")?;
        }
        let now = crate::world::now_ms();
        let mut meta = src.meta.clone();
        meta["id"] = new.clone().into();
        meta["state"] = "kept".into();
        meta["owner"] = owner.into();
        meta["created"] = (now / 1000).into();
        meta["created_ms"] = now.into();
        meta["updated_ms"] = now.into();
        meta["forked_from"] = id.into();
        meta["batches"] = serde_json::Value::Array(Vec::new());
        let dir = worlds.join(&tmp);
        crate::state::write_replace(&dir.join("world.json"), &meta)?;
        sync(root.as_fd())?;
        crate::rename::renameat2(
            &pool,
            tmp.as_str(),
            &pool,
            new.as_str(),
            crate::rename::RenameFlags::RENAME_NOREPLACE,
        )?;
        sync(root.as_fd())
    })();
    if let Err(e) = made {
        let _ = pool::destroy(pool.as_fd(), &tmp);
        return Err(io_at(id, "make the fork")(e));
    }
    drop(src);
    kept::find(state, &new).ok_or(KeptError::NotFound(new))
}

fn open_dir(dir: BorrowedFd<'_>, name: &str) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty()).map_err(io::Error::from)
}

/// The overlays' work directories of a store's `fs/`: `work`, and
/// `layers/<k>/work` for each layer it has.
pub(crate) fn work_dirs(fs_dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut out = vec!["work".to_string()];
    let layers = match open_dir(fs_dir, "layers") {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut ks: Vec<usize> = nix::dir::Dir::from_fd(layers)
        .map_err(io::Error::from)?
        .iter()
        .flatten()
        .filter_map(|e| e.file_name().to_str().ok()?.parse().ok())
        .collect();
    ks.sort_unstable();
    out.extend(ks.into_iter().map(|k| format!("layers/{k}/work")));
    Ok(out)
}

/// `syncfs` of the filesystem of `fd`.
fn sync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: syncfs on a descriptor we hold.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&fd)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            user: Some(FrameUser { uid: 1000, gid: 1000 }),
            cwd: "/srv/p".into(),
            mask: vec!["/srv/secret".into()],
            mask_homes: true,
            home_secrets: vec![".aws".into(), ".ssh".into()],
            expose: vec!["/opt/tool".into()],
            toolchains: vec![vec![".cargo".into()]],
            toolchain_writable: vec![".cargo/registry".into()],
        }
    }

    #[test]
    fn a_continuation_keeps_the_frame_and_may_only_hide_more() {
        let old = frame();
        assert_eq!(old.refuses("w", &old), None);
        let mut more = frame();
        more.mask.push("/srv/more".into());
        more.home_secrets.push(".npmrc".into());
        more.expose.clear();
        more.toolchains.clear();
        more.toolchain_writable.clear();
        assert_eq!(old.refuses("w", &more), None, "hiding more is fine");
        type Change = fn(&mut Frame);
        let cases: [(&str, Change); 9] = [
            ("runs as uid 1000", |f| f.user = None),
            ("runs as uid 1000", |f| f.user = Some(FrameUser { uid: 1001, gid: 1000 })),
            ("works in /srv/p", |f| f.cwd = "/srv/p/sub".into()),
            ("hid /srv/secret (fs.mask)", |f| f.mask.clear()),
            ("fs.mask_homes", |f| f.mask_homes = false),
            ("hid .ssh (fs.home_secrets)", |f| f.home_secrets.truncate(1)),
            ("/etc would be exposed", |f| f.expose.push("/etc".into())),
            ("toolchain", |f| f.toolchains.push(vec![".rustup".into()])),
            (".npm (fs.toolchain_writable)", |f| f.toolchain_writable.push(".npm".into())),
        ];
        for (want, change) in cases {
            let mut now = frame();
            change(&mut now);
            let why = old.refuses("w", &now).unwrap_or_else(|| panic!("not refused: {want}"));
            assert!(why.contains(want), "{why} (wanted {want})");
        }
    }

    #[test]
    fn layers_keep_their_directories_by_path_whatever_mounts_come_and_go() {
        let m = |p: &str, ro: bool| HostMount { path: p.into(), fstype: "ext4".into(), read_only: ro, slot: 99 };
        let recorded: Vec<(PathBuf, usize)> = vec![("/home".into(), 1), ("/srv".into(), 0)];
        // A mount appeared before both (its index would shift theirs).
        let got =
            slots("w", &recorded, vec![m("/data", false), m("/home", false), m("/mnt/ro", true), m("/srv", false)]);
        let got: Vec<(String, usize)> =
            got.unwrap().into_iter().map(|m| (m.path.display().to_string(), m.slot)).collect();
        let want = [("/data", 2), ("/home", 1), ("/mnt/ro", 3), ("/srv", 0)];
        assert_eq!(got, want.map(|(p, k)| (p.to_string(), k)));
        // A mount the world has a layer of, gone or read-only: refused.
        for now in [vec![m("/home", false)], vec![m("/home", false), m("/srv", true)]] {
            let e = slots("w", &recorded, now).unwrap_err().to_string();
            assert!(e.contains("/srv, which is no longer mounted"), "{e}");
        }
    }

    #[test]
    fn runs_are_appended_and_read_back_past_a_torn_line() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let c = sd.claim().unwrap();
        std::fs::create_dir_all(sd.world_path(&c.id)).unwrap();
        let r = |n: u32| RunRecord {
            run: n,
            kind: "run".into(),
            batch: None,
            command: vec!["make".into()],
            actor: Some("uid:0".into()),
            policy: None,
            started_ms: 1,
            ended_ms: 2,
            exit_code: 0,
            changes: Totals { added: n as u64, ..Totals::default() },
        };
        append_run(&sd, &c.id, &r(1)).unwrap();
        append_run(&sd, &c.id, &r(2)).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(sd.world_path(&c.id).join("runs.jsonl")).unwrap();
        f.write_all(b"{\"run\":3,\"ki").unwrap();
        assert_eq!(read_runs(&sd.world_path(&c.id)), vec![r(1), r(2)]);
        crate::state::remove_world_dir(&sd.world_path(&c.id)).unwrap();
    }
}
