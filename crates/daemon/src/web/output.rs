//! Batch entries' output for the page. The broker keeps only each
//! stream's hash; the event bus carries every chunk as it is read. While
//! the page is on, a subscriber of the bus writes each entry's chunks to
//! `<state>/web/output/<batch>/<entry>.<stream>` (at most [`CAP`] bytes a
//! stream, 0600, root's), on a thread of its own so that no async worker
//! waits on a disk. A batch's files go when its world is discarded, and
//! the oldest batches' beyond [`MAX_BATCHES`] or [`TOTAL_CAP`] bytes in
//! all (checked at start and whenever the store grows past either).
//!
//! The page shows the first and last [`SHOWN`] bytes of a stream and
//! offers the whole as a `text/plain` download; a subscriber that fell
//! behind the bus's buffer (`lagged`) has a gap, said in the log.

use crate::events::{Bus, Read};
use base64::Engine;
use std::io::{Read as _, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The most of one stream kept (64 MiB).
pub const CAP: u64 = 64 << 20;
/// The head and the tail the page shows of a stream.
pub const SHOWN: u64 = 16 << 10;
/// The batches whose output is kept.
const MAX_BATCHES: usize = 500;
/// The most bytes kept in all (1 GiB): beyond, the oldest batches' output
/// goes until a quarter is free again.
const TOTAL_CAP: u64 = 1 << 30;

/// Where the output is kept.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// [`TOTAL_CAP`] (smaller in tests).
    total_cap: u64,
}

enum Op {
    Chunk { batch: String, entry: String, stream: &'static str, bytes: Vec<u8> },
    Drop { batch: String },
}

/// An entry's id or a batch's: what names a file here.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Subscribes to the bus (from now on) and starts the writer.
    pub fn start(state: &Path, bus: &Bus) -> Store {
        let dir = state.join("web").join("output");
        let store = Store { dir: dir.clone(), total_cap: TOTAL_CAP };
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = store.clone();
        let spawned = std::thread::Builder::new().name("cloched-web-output".into()).spawn(move || {
            let mut used = writer.prune(None);
            for op in rx {
                used = writer.apply(op, used);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "web: no thread for entries' output: the page shows none");
            return store;
        }
        let mut sub = bus.subscribe(None);
        tokio::spawn(async move {
            while let Some(read) = sub.next().await {
                let events = match read {
                    Read::Events(v) => v,
                    Read::Lagged { first, last } => {
                        tracing::warn!(?first, last, "web: the output recorder fell behind: a gap in entries' output");
                        continue;
                    }
                };
                for h in events {
                    let Some(batch) = h.batch.clone() else { continue };
                    let op = match h.kind.as_str() {
                        "output" => {
                            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&h.json) else { continue };
                            let d = &ev["data"];
                            let stream = match d["stream"].as_str() {
                                Some("stdout") => "stdout",
                                Some("stderr") => "stderr",
                                _ => continue,
                            };
                            let (Some(entry), Some(b64)) = (d["entry"].as_str(), d["data_b64"].as_str()) else {
                                continue;
                            };
                            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
                            Op::Chunk { batch, entry: entry.to_string(), stream, bytes }
                        }
                        "discarded" => Op::Drop { batch },
                        _ => continue,
                    };
                    if tx.send(op).is_err() {
                        return;
                    }
                }
            }
        });
        store
    }

    fn file(&self, batch: &str, entry: &str, stream: &str) -> Option<PathBuf> {
        (plain(batch) && plain(entry) && matches!(stream, "stdout" | "stderr"))
            .then(|| self.dir.join(batch).join(format!("{entry}.{stream}")))
    }

    /// Applies one operation; `used` is what the store holds (batches,
    /// bytes) before it, and the result what it holds after.
    fn apply(&self, op: Op, used: (usize, u64)) -> (usize, u64) {
        match op {
            Op::Chunk { batch, entry, stream, bytes } => {
                let Some(path) = self.file(&batch, &entry, stream) else { return used };
                let new_batch = !self.dir.join(&batch).exists();
                let (batches, total) = match append(&path, &bytes) {
                    Ok(n) => (used.0 + usize::from(new_batch), used.1 + n),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "web: entry output not kept");
                        return used;
                    }
                };
                if batches > MAX_BATCHES || total > self.total_cap {
                    return self.prune(Some(&batch));
                }
                (batches, total)
            }
            Op::Drop { batch } => {
                if plain(&batch) {
                    let _ = std::fs::remove_dir_all(self.dir.join(batch));
                }
                self.usage()
            }
        }
    }

    /// The batches' directories, oldest first, with their bytes.
    fn batches(&self) -> Vec<(std::time::SystemTime, u64, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut dirs: Vec<_> = rd
            .flatten()
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                let bytes = std::fs::read_dir(e.path())
                    .map(|f| f.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum())
                    .unwrap_or(0);
                Some((modified, bytes, e.path()))
            })
            .collect();
        dirs.sort();
        dirs
    }

    /// What the store holds: batches and bytes.
    fn usage(&self) -> (usize, u64) {
        let dirs = self.batches();
        (dirs.len(), dirs.iter().map(|d| d.1).sum())
    }

    /// Drops the oldest batches' output (never `keep`'s) until at most
    /// [`MAX_BATCHES`] are kept and a quarter of [`TOTAL_CAP`] is free;
    /// returns what is left.
    fn prune(&self, keep: Option<&str>) -> (usize, u64) {
        let dirs = self.batches();
        let (mut batches, mut total) = (dirs.len(), dirs.iter().map(|d| d.1).sum::<u64>());
        for (_, bytes, d) in &dirs {
            if batches <= MAX_BATCHES && total <= self.total_cap / 4 * 3 {
                break;
            }
            if keep.is_some_and(|k| d.file_name().is_some_and(|n| n == k)) {
                continue;
            }
            if std::fs::remove_dir_all(d).is_ok() {
                batches -= 1;
                total -= bytes;
            }
        }
        (batches, total)
    }

    /// What is kept of a stream: its size, its head and its tail (the tail
    /// empty when the head has it all).
    pub fn excerpt(&self, batch: &str, entry: &str, stream: &str) -> Option<(u64, Vec<u8>, Vec<u8>)> {
        let mut f = std::fs::File::open(self.file(batch, entry, stream)?).ok()?;
        let size = f.metadata().ok()?.len();
        let mut head = Vec::new();
        (&mut f).take(SHOWN).read_to_end(&mut head).ok()?;
        let mut tail = Vec::new();
        if size > 2 * SHOWN {
            f.seek(SeekFrom::Start(size - SHOWN)).ok()?;
            f.take(SHOWN).read_to_end(&mut tail).ok()?;
        } else if size > SHOWN {
            f.read_to_end(&mut tail).ok()?;
        }
        Some((size, head, tail))
    }

    /// The whole kept stream, to send.
    pub fn open(&self, batch: &str, entry: &str, stream: &str) -> Option<(std::fs::File, u64)> {
        let f = std::fs::File::open(self.file(batch, entry, stream)?).ok()?;
        let size = f.metadata().ok()?.len();
        Some((f, size))
    }
}

/// Appends to a stream's file (made 0600 with its directory 0700), up to
/// [`CAP`]; returns how many bytes were written.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<u64> {
    if let Some(d) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let have = f.metadata()?.len();
    let room = CAP.saturating_sub(have) as usize;
    let n = bytes.len().min(room);
    f.write_all(&bytes[..n])?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_kept_up_to_its_cap_and_shown_as_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store { dir: dir.path().to_path_buf(), total_cap: TOTAL_CAP };
        let chunk = |b: u8, n: usize| Op::Chunk {
            batch: "0123456789abcdef".into(),
            entry: "e1".into(),
            stream: "stdout",
            bytes: vec![b; n],
        };
        let used = s.apply(chunk(b'a', SHOWN as usize), (0, 0));
        let used = s.apply(chunk(b'b', SHOWN as usize * 3), used);
        let used = s.apply(chunk(b'c', 10), used);
        assert_eq!(used, (1, SHOWN * 4 + 10));
        let (size, head, tail) = s.excerpt("0123456789abcdef", "e1", "stdout").unwrap();
        assert_eq!(size, SHOWN * 4 + 10);
        assert!(head.iter().all(|b| *b == b'a') && head.len() as u64 == SHOWN);
        assert!(tail.ends_with(b"cccccccccc") && tail.len() as u64 == SHOWN);
        // Names that are not ids reach no file.
        assert!(s.file("../x", "e1", "stdout").is_none() && s.file("a", "e1", "stdin").is_none());
        assert_eq!(s.apply(Op::Drop { batch: "0123456789abcdef".into() }, used), (0, 0));
        assert!(s.excerpt("0123456789abcdef", "e1", "stdout").is_none());
    }

    #[test]
    fn the_oldest_batches_go_beyond_the_caps_never_the_one_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store { dir: dir.path().to_path_buf(), total_cap: MAX_BATCHES as u64 * 16 };
        let mut used = (0, 0);
        for b in 0..MAX_BATCHES + 3 {
            let op =
                Op::Chunk { batch: format!("b{b:04}"), entry: "e1".into(), stream: "stdout", bytes: vec![b'x'; 8] };
            used = s.apply(op, used);
        }
        assert_eq!(used, (MAX_BATCHES, MAX_BATCHES as u64 * 8));
        assert_eq!(s.usage(), used);
        assert!(s.excerpt("b0000", "e1", "stdout").is_none(), "the oldest went");
        assert!(s.excerpt(&format!("b{:04}", MAX_BATCHES + 2), "e1", "stdout").is_some());
        // Past the bytes cap, older batches go until a quarter is free; the
        // batch being written stays.
        let big = s.total_cap as usize;
        let used = s.apply(
            Op::Chunk { batch: "big".into(), entry: "e1".into(), stream: "stdout", bytes: vec![b'y'; big] },
            used,
        );
        assert_eq!(used, (1, big as u64), "every other batch went, not the one being written");
        assert!(s.excerpt("big", "e1", "stdout").is_some());
    }
}
