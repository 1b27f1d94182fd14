//! A loop device over the pool's image file (`linux/loop.h`; `nix` and
//! `libc` have none of it).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
/// Detach the device when its last user (the mounted filesystem) lets go.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Read and write the image with O_DIRECT: the pool's data is cached once
/// (by btrfs), not a second time as the image file's pages.
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Binds `image` to a free loop device, auto-clearing, with direct I/O when
/// the image's filesystem allows it. Returns the device's path and an open
/// descriptor of it (the caller mounts it, then closes the descriptor: from
/// then on the mount alone holds the device).
pub fn attach(image: &File, name: &str) -> io::Result<(PathBuf, File)> {
    let ctl = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/loop-control")?;
    // Another process may take the device we were given: ask again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(&path)?;
        let mut err = None;
        for flags in [LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, LO_FLAGS_AUTOCLEAR] {
            match configure(&dev, image, name, flags) {
                Ok(()) => return Ok((path, dev)),
                // No O_DIRECT on the image's filesystem (tmpfs): buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && flags & LO_FLAGS_DIRECT_IO != 0 => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        match err {
            Some(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Some(e) => return Err(e),
            None => return Err(io::Error::other("loop device refused the image")),
        }
    }
    Err(io::Error::other("no free loop device"))
}

fn configure(dev: &File, image: &File, name: &str, flags: u32) -> io::Result<()> {
    let mut cfg = LoopConfig {
        fd: image.as_raw_fd() as u32,
        block_size: 4096,
        info: LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags,
            file_name: [0; 64],
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        },
        reserved: [0; 8],
    };
    // The name `losetup -l` shows (truncated, NUL-terminated).
    let b = name.as_bytes();
    let n = b.len().min(63);
    cfg.info.file_name[..n].copy_from_slice(&b[..n]);
    // SAFETY: LOOP_CONFIGURE reads one loop_config, which we own and which
    // names an open descriptor of ours.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The loop device bound to the file `(dev, ino)` (its `st_dev` and
/// `st_ino`), if there is one: the pool's image may still be bound when its
/// mount is gone from this mount namespace but alive in another (a world's
/// namespace being released, a daemon's private namespace). Mounting that
/// device again gives the same filesystem; binding the image to a second
/// device would open one btrfs through two devices at once.
pub fn find(dev: u64, ino: u64) -> Option<(PathBuf, File)> {
    for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only bound devices have `loop/`.
        if !name.starts_with("loop") || !e.path().join("loop").is_dir() {
            continue;
        }
        let path = PathBuf::from("/dev").join(&name);
        let Ok(f) = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(&path) else {
            continue;
        };
        if backing(&f).is_ok_and(|b| b == (dev, ino)) {
            return Some((path, f));
        }
    }
    None
}

/// `(st_dev, st_ino)` of the file bound to loop device `dev`.
pub fn backing(dev: &File) -> io::Result<(u64, u64)> {
    // SAFETY: loop_info64 is plain data; zeroed is a valid value to fill.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 fills one loop_info64, which we own.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.device, info.inode))
}

#[cfg(test)]
mod tests {
    #[test]
    fn structures_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<super::LoopConfig>(), 304);
    }
}
