//! The mount plan on the wire: the parent builds it after clone3 (while the
//! child already mounts what needs no host facts) and sends it through the
//! go pipe. A compact, lossless binary form: paths are raw bytes, so a
//! non-UTF-8 working directory survives. Only the parent writes it; the
//! child still checks every length.

use crate::plan::Step;
use crate::rootless::Piece;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

const FSTYPES: [&str; 4] = ["proc", "sysfs", "tmpfs", "devpts"];

/// Encodes steps as `[u32 length][body]`.
pub fn encode(steps: &[Step]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(&[0; 4]);
    for s in steps {
        match s {
            Step::Grab { slot, path, read_only } => {
                b.push(1);
                u32s(&mut b, *slot as u32);
                bytes(&mut b, path);
                b.push(*read_only as u8);
            }
            Step::Mount { path, fstype, flags, data } => {
                b.push(2);
                bytes(&mut b, path);
                b.push(FSTYPES.iter().position(|f| f == fstype).expect("known fstype") as u8);
                b.extend_from_slice(&flags.to_le_bytes());
                bytes(&mut b, Path::new(data));
            }
            Step::Mkdir { path, mode } => {
                b.push(3);
                bytes(&mut b, path);
                u32s(&mut b, *mode);
            }
            Step::Touch { path } => {
                b.push(4);
                bytes(&mut b, path);
            }
            Step::Mknod { path, major, minor } => {
                b.push(5);
                bytes(&mut b, path);
                u32s(&mut b, *major);
                u32s(&mut b, *minor);
            }
            Step::Symlink { path, target } => {
                b.push(6);
                bytes(&mut b, path);
                bytes(&mut b, target);
            }
            Step::MaskFile { path } => {
                b.push(7);
                bytes(&mut b, path);
            }
            Step::ReadOnly { path } => {
                b.push(8);
                bytes(&mut b, path);
            }
            Step::Attach { slot, path } => {
                b.push(9);
                u32s(&mut b, *slot as u32);
                bytes(&mut b, path);
            }
            Step::RemountRo { path } => {
                b.push(10);
                bytes(&mut b, path);
            }
            Step::MaskDir { path } => {
                b.push(11);
                bytes(&mut b, path);
            }
            Step::Scratch { path, mode, index } => {
                b.push(12);
                bytes(&mut b, path);
                u32s(&mut b, *mode);
                u32s(&mut b, *index);
            }
            Step::CopyUp { path } => {
                b.push(13);
                bytes(&mut b, path);
            }
            Step::Home { path } => {
                b.push(14);
                bytes(&mut b, path);
            }
            Step::Sysfs { path } => {
                b.push(15);
                bytes(&mut b, path);
            }
        }
    }
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_le_bytes());
    b
}

fn u32s(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn bytes(b: &mut Vec<u8>, p: &Path) {
    let raw = p.as_os_str().as_bytes();
    u32s(b, raw.len() as u32);
    b.extend_from_slice(raw);
}

/// Encodes a world without root's pieces (`rootless::frame`) as
/// `[u32 length][body]`: the parent lists them after clone3, while the
/// child makes its network namespace and its store, and sends them before
/// the plan.
pub fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8192);
    b.extend_from_slice(&[0; 4]);
    for p in pieces {
        match p {
            Piece::Dir { path, mode } => {
                b.push(1);
                bytes(&mut b, path);
                u32s(&mut b, *mode);
            }
            Piece::Overlay { path, index } => {
                b.push(2);
                bytes(&mut b, path);
                u32s(&mut b, *index as u32);
            }
            Piece::ReadOnly { path } => {
                b.push(3);
                bytes(&mut b, path);
            }
            Piece::Symlink { path, target } => {
                b.push(4);
                bytes(&mut b, path);
                bytes(&mut b, target);
            }
            Piece::File { path } => {
                b.push(5);
                bytes(&mut b, path);
            }
            Piece::ReadOnlyTree { path } => {
                b.push(6);
                bytes(&mut b, path);
            }
        }
    }
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_le_bytes());
    b
}

/// Decodes a body of [`encode_pieces`] (without its length prefix).
pub fn decode_pieces(body: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { b: body, at: 0 };
    let mut pieces = Vec::new();
    while r.at < body.len() {
        pieces.push(match r.u8()? {
            1 => Piece::Dir { path: r.path()?, mode: r.u32()? },
            2 => Piece::Overlay { path: r.path()?, index: r.u32()? as usize },
            3 => Piece::ReadOnly { path: r.path()? },
            4 => Piece::Symlink { path: r.path()?, target: r.path()? },
            5 => Piece::File { path: r.path()? },
            6 => Piece::ReadOnlyTree { path: r.path()? },
            t => return Err(format!("unknown piece tag {t}")),
        });
    }
    Ok(pieces)
}

/// Decodes a body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Vec<Step>, String> {
    let mut r = Reader { b: body, at: 0 };
    let mut steps = Vec::new();
    while r.at < body.len() {
        let tag = r.u8()?;
        steps.push(match tag {
            1 => Step::Grab {
                slot: r.u32()? as usize,
                path: r.path()?,
                read_only: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err("bad read-only flag".into()),
                },
            },
            2 => {
                let path = r.path()?;
                let fstype = *FSTYPES.get(r.u8()? as usize).ok_or("unknown fstype")?;
                let flags = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "short")?);
                let data = r.path()?.into_os_string().into_string().map_err(|_| "mount data is not UTF-8")?;
                Step::Mount { path, fstype, flags, data }
            }
            3 => Step::Mkdir { path: r.path()?, mode: r.u32()? },
            4 => Step::Touch { path: r.path()? },
            5 => Step::Mknod { path: r.path()?, major: r.u32()?, minor: r.u32()? },
            6 => Step::Symlink { path: r.path()?, target: r.path()? },
            7 => Step::MaskFile { path: r.path()? },
            8 => Step::ReadOnly { path: r.path()? },
            9 => Step::Attach { slot: r.u32()? as usize, path: r.path()? },
            10 => Step::RemountRo { path: r.path()? },
            11 => Step::MaskDir { path: r.path()? },
            12 => Step::Scratch { path: r.path()?, mode: r.u32()?, index: r.u32()? },
            13 => Step::CopyUp { path: r.path()? },
            14 => Step::Home { path: r.path()? },
            15 => Step::Sysfs { path: r.path()? },
            t => return Err(format!("unknown step tag {t}")),
        });
    }
    Ok(steps)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("truncated plan")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short")?))
    }
    fn path(&mut self) -> Result<PathBuf, String> {
        let n = self.u32()? as usize;
        Ok(PathBuf::from(OsString::from_vec(self.take(n)?.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_round_trips_losslessly() {
        let odd = PathBuf::from(OsString::from_vec(b"/srv/\xff\xfe proj".to_vec()));
        let pieces = vec![
            Piece::Dir { path: "/proc".into(), mode: 0o555 },
            Piece::Overlay { path: odd.clone(), index: 7 },
            Piece::ReadOnly { path: "/boot".into() },
            Piece::ReadOnlyTree { path: "/var".into() },
            Piece::Symlink { path: "/bin".into(), target: odd },
            Piece::File { path: "/lone".into() },
        ];
        let wire = encode_pieces(&pieces);
        assert_eq!(u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize, wire.len() - 4);
        assert_eq!(decode_pieces(&wire[4..]).unwrap(), pieces);
        assert!(decode_pieces(&wire[4..wire.len() - 1]).is_err(), "a truncated list is refused");
        assert!(decode_pieces(&[9]).is_err(), "an unknown tag is refused");
        assert_eq!(decode_pieces(&[]).unwrap(), vec![]);
    }

    #[test]
    fn every_step_round_trips_losslessly() {
        let odd = PathBuf::from(OsString::from_vec(b"/home/\xff\xfe proj".to_vec()));
        let steps = vec![
            Step::Grab { slot: 3, path: odd.clone(), read_only: false },
            Step::Grab { slot: 4, path: "/root/.cargo".into(), read_only: true },
            Step::CopyUp { path: odd.clone() },
            Step::Home { path: "/root".into() },
            Step::Mount { path: "/tmp".into(), fstype: "tmpfs", flags: 6, data: "mode=1777,size=10".into() },
            Step::Mkdir { path: odd.clone(), mode: 0o755 },
            Step::Touch { path: "/x".into() },
            Step::Mknod { path: "/dev/null".into(), major: 1, minor: 3 },
            Step::Symlink { path: "/dev/fd".into(), target: "/proc/self/fd".into() },
            Step::MaskFile { path: "/etc/shadow".into() },
            Step::ReadOnly { path: "/proc/sys".into() },
            Step::Attach { slot: 3, path: odd },
            Step::RemountRo { path: "/root".into() },
            Step::MaskDir { path: "/home".into() },
            Step::Scratch { path: "/var/tmp".into(), mode: 0o1777, index: 1 },
            Step::Sysfs { path: "/sys".into() },
        ];
        let wire = encode(&steps);
        let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4);
        assert_eq!(decode(&wire[4..]).unwrap(), steps);
        // Every truncation is an error, never a panic.
        for cut in 0..wire.len() - 4 {
            let r = decode(&wire[4..4 + cut]);
            assert!(r.is_err() || r.unwrap().len() < steps.len());
        }
        assert!(decode(&[99]).is_err());
    }
}
