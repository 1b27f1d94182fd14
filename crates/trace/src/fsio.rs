//! Append-only JSONL files: opening safely, locking, one-write appends with
//! fsync, and reading the last lines without reading the whole file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

const CHUNK: u64 = 16 * 1024;

/// Opens (creating with mode 0600) `path` for appending and reading. A
/// symlink is refused (O_NOFOLLOW), so is anything but a regular file. When
/// the file is new its directory is fsynced so that the name survives a crash.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let (file, created) = match opts.clone().create_new(true).open(path) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (opts.open(path)?, false),
        Err(e) => return Err(e),
    };
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() { "a fifo" } else { "not a regular file" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    if created {
        sync_parent(path)?;
    }
    Ok(file)
}

/// Opens `path` read-only (for verify and tail).
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// fsyncs the directory holding `path`.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// An flock(2) held on a file; released when dropped.
pub(crate) struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    /// Waits for an exclusive (writers) or shared (readers) lock.
    pub(crate) fn take(file: &'a File, exclusive: bool) -> io::Result<Flock<'a>> {
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a file descriptor we own; no memory involved.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Flock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above. Closing the file would release it as well.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Appends `line` (which ends with a newline) with a single write(2), then
/// fsyncs. The caller holds the exclusive lock and passes the file's length
/// before the write: when the write is short or fails, or the fsync fails,
/// the file is cut back to that length (best effort) and the error returned,
/// so a failed append leaves the old content.
pub(crate) fn append_line(file: &File, old_len: u64, line: &[u8]) -> io::Result<()> {
    let result = write_once(file, line).and_then(|()| file.sync_all());
    if result.is_err() {
        let _ = file.set_len(old_len);
        let _ = file.sync_all();
    }
    result
}

fn write_once(file: &File, line: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: the buffer is valid for line.len() bytes; the fd is ours.
        let n = unsafe { libc::write(file.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n as usize != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes (disk full?)", line.len()),
            ));
        }
        return Ok(());
    }
}

/// The last `n` lines of the first `len` bytes of `file`: the offset where
/// they start and their bytes (the last one may lack its newline). `None`
/// when more than `limit` bytes would have to be read.
pub(crate) fn tail_bytes(file: &File, len: u64, n: usize, limit: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    if n == 0 || len == 0 {
        return Ok(Some((len, Vec::new())));
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut pos = len;
    let mut found = 0usize;
    let mut start = 0u64;
    'outer: while pos > 0 {
        let take = CHUNK.min(pos);
        pos -= take;
        let mut chunk = vec![0u8; take as usize];
        file.read_exact_at(&mut chunk, pos)?;
        for i in (0..chunk.len()).rev() {
            let abs = pos + i as u64;
            if chunk[i] == b'\n' && abs != len - 1 {
                found += 1;
                if found == n {
                    start = abs + 1;
                    chunks.push(chunk.split_off(i + 1));
                    break 'outer;
                }
            }
        }
        chunks.push(chunk);
        if len - pos > limit {
            return Ok(None);
        }
    }
    if len - start > limit {
        return Ok(None);
    }
    chunks.reverse();
    Ok(Some((start, chunks.concat())))
}

/// How many newlines the first `len` bytes of `file` hold (for error messages).
pub(crate) fn count_newlines(file: &File, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let (mut pos, mut count) = (0u64, 0u64);
    while pos < len {
        let want = CHUNK.min(len - pos) as usize;
        let got = file.read_at(&mut buf[..want], pos)?;
        if got == 0 {
            break;
        }
        count += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        pos += got as u64;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().write_all(data).unwrap();
        let f = File::open(&path).unwrap();
        (dir, f)
    }

    #[test]
    fn tail_finds_last_lines() {
        let mut data = Vec::new();
        for i in 0..5000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let (_d, f) = file_with(&data);
        let len = data.len() as u64;
        let (_, got) = tail_bytes(&f, len, 2, 1 << 20).unwrap().unwrap();
        assert_eq!(got, b"line 4998\nline 4999\n");
        let (start, all) = tail_bytes(&f, len, 10_000, 1 << 20).unwrap().unwrap();
        assert_eq!((start, all.len()), (0, data.len()));
        assert!(tail_bytes(&f, len, 10_000, 100).unwrap().is_none());
        assert_eq!(count_newlines(&f, len).unwrap(), 5000);
    }

    #[test]
    fn tail_keeps_a_torn_last_line() {
        let (_d, f) = file_with(b"a\nb\ntorn");
        assert_eq!(tail_bytes(&f, 8, 1, 100).unwrap().unwrap(), (4, b"torn".to_vec()));
        assert_eq!(tail_bytes(&f, 8, 2, 100).unwrap().unwrap(), (2, b"b\ntorn".to_vec()));
    }

    #[test]
    fn open_append_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        File::create(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_append(&link).is_err());
        let f = open_append(&dir.path().join("new")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}
