//! Batch entries' output for the page. The broker keeps only each
//! stream's hash; the event bus carries every chunk as it is read. While
//! the page is on, a subscriber of the bus writes each entry's chunks to
//! `<state>/web/output/<batch>/<entry>.<stream>` (at most [`CAP`] bytes a
//! stream, 0600, root's), on a thread of its own so that no async worker
//! waits on a disk. A batch's files go when its world is discarded, and
//! the oldest batches' beyond [`MAX_BATCHES`].
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

/// Where the output is kept.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
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
        let store = Store { dir: dir.clone() };
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = store.clone();
        let spawned = std::thread::Builder::new().name("cloched-web-output".into()).spawn(move || {
            writer.prune();
            for op in rx {
                writer.apply(op);
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

    fn apply(&self, op: Op) {
        match op {
            Op::Chunk { batch, entry, stream, bytes } => {
                let Some(path) = self.file(&batch, &entry, stream) else { return };
                if let Err(e) = append(&path, &bytes) {
                    tracing::warn!(file = %path.display(), error = %e, "web: entry output not kept");
                }
            }
            Op::Drop { batch } => {
                if plain(&batch) {
                    let _ = std::fs::remove_dir_all(self.dir.join(batch));
                }
            }
        }
    }

    /// Drops the oldest batches' output beyond [`MAX_BATCHES`].
    fn prune(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> =
            rd.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
        if dirs.len() <= MAX_BATCHES {
            return;
        }
        dirs.sort();
        for (_, d) in &dirs[..dirs.len() - MAX_BATCHES] {
            let _ = std::fs::remove_dir_all(d);
        }
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

/// Appends to a stream's file (made 0600 with its directory 0700), up to [`CAP`].
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    f.write_all(&bytes[..bytes.len().min(room)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_kept_up_to_its_cap_and_shown_as_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store { dir: dir.path().to_path_buf() };
        let chunk = |b: u8, n: usize| Op::Chunk {
            batch: "0123456789abcdef".into(),
            entry: "e1".into(),
            stream: "stdout",
            bytes: vec![b; n],
        };
        s.apply(chunk(b'a', SHOWN as usize));
        s.apply(chunk(b'b', SHOWN as usize * 3));
        s.apply(chunk(b'c', 10));
        let (size, head, tail) = s.excerpt("0123456789abcdef", "e1", "stdout").unwrap();
        assert_eq!(size, SHOWN * 4 + 10);
        assert!(head.iter().all(|b| *b == b'a') && head.len() as u64 == SHOWN);
        assert!(tail.ends_with(b"cccccccccc") && tail.len() as u64 == SHOWN);
        // Names that are not ids reach no file.
        assert!(s.file("../x", "e1", "stdout").is_none() && s.file("a", "e1", "stdin").is_none());
        s.apply(Op::Drop { batch: "0123456789abcdef".into() });
        assert!(s.excerpt("0123456789abcdef", "e1", "stdout").is_none());
    }
}
