//! Content of regular files: streaming SHA-256 and upper/lower comparison
//! with bounded memory (two 64 KiB buffers, whatever the file size).

use std::ffi::CStr;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use sha2::{Digest, Sha256};

use super::sys::{open_file, stat_fd, St};

const BUF: usize = 64 * 1024;

/// A file whose holes exceed this is not hashed: hashing reads every byte of
/// the apparent size, and a hole costs the world nothing to create.
pub(crate) const SPARSE_HASH_LIMIT: u64 = 64 * 1024 * 1024;

/// Bytes a file claims but does not store.
pub(crate) fn hole_bytes(st: &St) -> u64 {
    st.size.saturating_sub(st.blocks.saturating_mul(512))
}

/// Whether hashing `st` is refused because of its holes.
pub(crate) fn too_sparse(st: &St) -> bool {
    hole_bytes(st) > SPARSE_HASH_LIMIT
}

/// Failure of one content operation: which one, on which side, and why.
#[derive(Debug)]
pub(crate) enum ContentError {
    Sys(&'static str, std::io::Error),
    /// The inode opened is not the one listed.
    Changed(&'static str),
}

impl From<(&'static str, Errno)> for ContentError {
    fn from((op, e): (&'static str, Errno)) -> Self {
        ContentError::Sys(op, e.into())
    }
}

type R<T> = Result<T, ContentError>;

pub(crate) struct Content {
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Opens the upper regular file `name` in `dir` and checks it is the one
/// listed as `want` (the upper is static once the world exited: a mismatch
/// means something is changing it, and the diff fails).
pub(crate) fn open_upper(dir: BorrowedFd<'_>, name: &CStr, want: &St) -> R<File> {
    let fd = open_file(dir, name).map_err(|e| ("open upper file", e))?;
    let got = stat_fd(fd.as_fd()).map_err(|e| ("fstat", e))?;
    if !got.is_reg() || got.key() != want.key() {
        return Err(ContentError::Changed("upper"));
    }
    Ok(File::from(fd))
}

/// Fills `buf` as far as the file allows; returns the bytes read (short only at EOF).
fn read_full(f: &mut File, buf: &mut [u8]) -> R<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ContentError::Sys("read", e)),
        }
    }
    Ok(n)
}

fn pread_full(f: &File, buf: &mut [u8], mut off: u64) -> R<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                off += k as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ContentError::Sys("read", e)),
        }
    }
    Ok(n)
}

impl Content {
    pub fn new() -> Content {
        Content { a: vec![0; BUF], b: vec![0; BUF] }
    }

    /// SHA-256 of an upper regular file opened with [`open_upper`] (or by
    /// the caller, identity checked), listed as `st`.
    pub fn hash(&mut self, f: &mut File, st: &St) -> R<[u8; 32]> {
        let mut h = Sha256::new();
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut self.a) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContentError::Sys("read", e)),
            };
            h.update(&self.a[..n]);
            total += n as u64;
            // a short read that reaches the listed size is the end: this
            // saves the read that would return 0 on every small file
            if n == 0 || (n < self.a.len() && total == st.size) {
                return Ok(h.finalize().into());
            }
        }
    }

    /// Compares an upper and a lower regular file of equal listed size.
    /// Returns whether the bytes are equal, and the upper's SHA-256 when
    /// `want_hash` (then the upper is read to the end even after a difference).
    ///
    /// The lower is the live host filesystem: if its file was replaced or
    /// removed since it was listed, the two are simply not equal (the diff
    /// does not fail because the host changed).
    pub fn compare(
        &mut self,
        u: &mut File,
        ldir: BorrowedFd<'_>,
        name: &CStr,
        ust: &St,
        want_hash: bool,
    ) -> R<(bool, Option<[u8; 32]>)> {
        let lower = match open_file(ldir, name) {
            Ok(fd) => {
                let st = stat_fd(fd.as_fd()).map_err(|e| ("fstat", e))?;
                (st.is_reg() && st.size == ust.size).then(|| (File::from(fd), st))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENXIO | Errno::ENODEV) => None,
            Err(e) => return Err(("open lower file", e).into()),
        };
        let Some((mut l, lst)) = lower else {
            let h = if want_hash { Some(self.hash(u, ust)?) } else { None };
            return Ok((false, h));
        };
        if !want_hash && (hole_bytes(ust) > 0 || hole_bytes(&lst) > 0) {
            return Ok((self.compare_sparse(u, &l, ust.size)?, None));
        }
        let mut h = want_hash.then(Sha256::new);
        let mut equal = true;
        loop {
            let n = read_full(u, &mut self.a)?;
            if let Some(h) = h.as_mut() {
                h.update(&self.a[..n]);
            }
            if equal {
                let m = read_full(&mut l, &mut self.b[..n.max(1)])?;
                if m != n || self.a[..n] != self.b[..m] {
                    equal = false;
                }
            }
            if n < self.a.len() {
                break;
            }
            if !equal && h.is_none() {
                break;
            }
        }
        if equal {
            // the lower must end where the upper ended
            let mut one = [0u8; 1];
            if read_full(&mut l, &mut one)? != 0 {
                equal = false;
            }
        }
        Ok((equal, h.map(|h| h.finalize().into())))
    }

    /// Compares two files of equal size, skipping ranges that are holes in
    /// both, so the cost follows the data actually stored, not the apparent size.
    fn compare_sparse(&mut self, u: &File, l: &File, size: u64) -> R<bool> {
        let mut off = 0u64;
        while off < size {
            let (ud, uend) = region(u, off, size)?;
            let (ld, lend) = region(l, off, size)?;
            let end = uend.min(lend).max(off + 1).min(size);
            if ud || ld {
                let mut pos = off;
                while pos < end {
                    let want = ((end - pos) as usize).min(BUF);
                    let n = pread_full(u, &mut self.a[..want], pos)?;
                    let m = pread_full(l, &mut self.b[..want], pos)?;
                    if n != m || self.a[..n] != self.b[..m] {
                        return Ok(false);
                    }
                    if n < want {
                        return Ok(true);
                    }
                    pos += n as u64;
                }
            }
            off = end;
        }
        Ok(true)
    }
}

/// Whether `off` is in data, and where that data (or hole) region ends.
fn region(f: &File, off: u64, size: u64) -> R<(bool, u64)> {
    let fd = f.as_fd();
    match lseek(fd, off as i64, Whence::SeekData) {
        Ok(d) if d as u64 == off => {
            let h = lseek(fd, off as i64, Whence::SeekHole).map_err(|e| ("lseek", e))?;
            Ok((true, (h as u64).min(size)))
        }
        Ok(d) => Ok((false, (d as u64).min(size))),
        Err(Errno::ENXIO) => Ok((false, size)),
        // no SEEK_DATA support: treat everything as data
        Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => Ok((true, size)),
        Err(e) => Err(("lseek", e).into()),
    }
}
