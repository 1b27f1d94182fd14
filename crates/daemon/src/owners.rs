//! Whose a batch or a kept world is: the identity of the caller that
//! submitted it (or started the world), as the kernel gave it on its
//! connection (uid, gid, groups), kept at `<state>/owners/<id>.json`. A
//! commit writes as that caller; a batch's run checks that it can still
//! read its project.

use cloche_service::HostUser;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn path(state: &Path, id: &str) -> io::Result<PathBuf> {
    if !cloche_world::state::valid_id(id) {
        return Err(io::Error::other(format!("invalid id {id:?}")));
    }
    Ok(state.join("owners").join(format!("{id}.json")))
}

/// Records `id`'s owner (atomically: a temporary file, then rename).
pub fn write(state: &Path, id: &str, u: &HostUser) -> io::Result<()> {
    let p = path(state, id)?;
    let dir = state.join("owners");
    std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir)?;
    let tmp = dir.join(format!(".{id}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec(u).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)
}

/// `id`'s recorded owner.
pub fn read(state: &Path, id: &str) -> Option<HostUser> {
    serde_json::from_slice(&std::fs::read(path(state, id).ok()?).ok()?).ok()
}
