//! What a world can learn from the kernel and which sockets it can make:
//! `socket-walk` (every family number, netlink protocol and the IP
//! protocols that matter) and `read-tree` (every file under some roots).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde_json::{json, Value};

/// Socket types tried with every family: the common ones, and SOCK_RDM and
/// SOCK_PACKET (which `AF_INET` turns into a packet socket).
const TYPES: &[i32] = &[libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_RAW, 4, libc::SOCK_SEQPACKET, 10];
/// Family numbers beyond the walk's range, as a program could pass them.
const FAR_FAMILIES: &[i32] = &[255, 256, 0xffff, 0x7fff_ffff, -1];
/// IP protocols tried with AF_INET and AF_INET6: the allowed ones (IP,
/// ICMP, TCP, UDP, ICMPv6) and others the kernel has or may load (DCCP,
/// L2TP, SCTP, UDP-Lite, raw, SMC, MPTCP).
const IP_PROTOCOLS: &[i32] = &[0, 1, 6, 17, 58, 33, 115, 132, 136, 255, 256, 262];

/// One line per attempt: `{"call", "family", "type", "protocol", "ret", "errno", "err"}`
/// (`ret` 0 when a socket was made; it is closed at once).
pub fn socket_walk(max_family: i32, emit: &mut dyn FnMut(Value)) {
    let mut line = |call: &str, family: i32, ty: i32, protocol: i32, r: crate::sys::Ret| {
        emit(crate::ret_json(json!({"call": call, "family": family, "type": ty, "protocol": protocol}), r));
    };
    for family in (0..=max_family).chain(FAR_FAMILIES.iter().copied()) {
        for &ty in TYPES {
            line("socket", family, ty, 0, crate::sys::socket(family, ty, 0));
        }
        for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            line("socketpair", family, ty, 0, crate::sys::socketpair(family, ty, 0));
        }
    }
    for protocol in 0..=33 {
        for ty in [libc::SOCK_RAW, libc::SOCK_DGRAM] {
            line("socket", libc::AF_NETLINK, ty, protocol, crate::sys::socket(libc::AF_NETLINK, ty, protocol));
        }
    }
    for family in [libc::AF_INET, libc::AF_INET6] {
        for &protocol in IP_PROTOCOLS {
            for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET, libc::SOCK_RAW] {
                line("socket", family, ty, protocol, crate::sys::socket(family, ty, protocol));
            }
        }
    }
}

/// `read-tree [--skip PATH]... ROOT...`
pub fn read_tree_args(args: &[String], emit: &mut dyn FnMut(Value)) {
    let (mut skip, mut roots) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => skip.push(it.next().unwrap_or_else(|| crate::usage("--skip needs a PATH")).clone()),
            _ => roots.push(a.clone()),
        }
    }
    if roots.is_empty() {
        crate::usage("read-tree needs at least one ROOT");
    }
    read_tree(&roots, &skip, emit)
}

/// Reads every file under `roots` (not following symlinks, not descending
/// into `skip` paths nor into the numeric pid directories right under
/// `/proc`). One line per file: `{"path", "ok", "len", "writable", "null"}`
/// with the bytes one read of up to 64 KiB returned, or `{"path", "ok":
/// false, "errno", "err", ...}`; `null`: the file is /dev/null's device (a
/// mask). A directory that cannot be listed is a line with `"dir": true`.
pub fn read_tree(roots: &[String], skip: &[String], emit: &mut dyn FnMut(Value)) {
    let mut stack: Vec<String> = roots.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        if skip.contains(&path) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                emit(crate::outcome(json!({"path": path}), Err(e)));
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_symlink() || ft.is_socket() || ft.is_fifo() {
            continue;
        }
        if ft.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(rd) => {
                    let mut names: Vec<String> =
                        rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    names.sort();
                    let is_proc = Path::new(&path) == Path::new("/proc");
                    for name in names.iter().rev() {
                        if is_proc && name.bytes().all(|b| b.is_ascii_digit()) {
                            continue;
                        }
                        stack.push(format!("{}/{name}", path.trim_end_matches('/')));
                    }
                }
                Err(e) => emit(crate::outcome(json!({"path": path, "dir": true}), Err(e))),
            }
            continue;
        }
        emit(read_once(&path));
    }
}

/// One read of up to 64 KiB (a multiple of 8, which /proc/kpage* insist
/// on), non-blocking so that nothing can hang the walk; and whether the file
/// opens for writing (nothing is written).
fn read_once(path: &str) -> Value {
    let writable =
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).is_ok();
    // A mask is a bind of /dev/null (char 1:3): writes to it are discarded.
    let is_null = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3));
    let r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).and_then(
        |mut f| {
            let mut buf = vec![0u8; 64 << 10];
            f.read(&mut buf)
        },
    );
    match r {
        Ok(n) => json!({"path": path, "ok": true, "len": n, "writable": writable, "null": is_null}),
        Err(e) => crate::outcome(json!({"path": path, "writable": writable, "null": is_null}), Err(e)),
    }
}
