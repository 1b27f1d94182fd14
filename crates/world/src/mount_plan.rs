//! A world's mount plan (after /proc and /dev) as the parent builds it from
//! host facts while the child mounts, and as it was made ([`PlanPrint`]):
//! what a world made ahead of its command is compared with.

use crate::layers::HostMount;
use crate::plan::FsRequest;
use crate::spec::Spec;
use crate::state::StateDir;

/// A world's mount plan as it was made: the plan the child applied (the
/// steps after /proc and /dev, encoded) and the identity (device and
/// inode) of each host path it grabbed for an exposure. A world made ahead
/// of its command compares it with the plan a world made now would get
/// (`batch::World::plan_holds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanPrint {
    pub(crate) wire: Vec<u8>,
    grabbed: Vec<Option<(u64, u64)>>,
}

impl PlanPrint {
    /// The plan of a world of `spec` on the host as it is now.
    pub(crate) fn of(
        spec: &Spec,
        state: &StateDir,
        layers: &[HostMount],
    ) -> Result<PlanPrint, crate::exposure::Refusal> {
        Ok(PlanPrint::from_steps(&mount_plan(spec, state, layers)?.3, true))
    }

    /// `steps` encoded, with the identity of what they grab when `grabbed`
    /// (a world that may be compared with the host later).
    pub(crate) fn from_steps(steps: &[crate::plan::Step], grabbed: bool) -> PlanPrint {
        use std::os::unix::fs::MetadataExt;
        let grabbed = steps
            .iter()
            .filter(|_| grabbed)
            .filter_map(|s| match s {
                crate::plan::Step::Grab { path, .. } => {
                    Some(std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino())))
                }
                _ => None,
            })
            .collect();
        PlanPrint { wire: crate::plan_wire::encode(steps), grabbed }
    }
}

/// The mount plan of a world of `spec` on the host as it is now (after
/// /proc and /dev), with what it was built from (the PATH note is
/// judged against them).
pub(crate) fn mount_plan(
    spec: &Spec,
    state: &StateDir,
    layers: &[HostMount],
) -> Result<(crate::host::CachedHost, FsRequest, crate::view::View, Vec<crate::plan::Step>), crate::exposure::Refusal> {
    let mut fs = FsRequest::of_spec(spec, &state.root);
    fs.data_mounts = layers.iter().map(|m| (m.path.clone(), m.read_only)).collect();
    crate::profile::mark("plan: the request (homes listed)");
    let host = crate::host::CachedHost::default();
    let view = crate::view::View::new(&host, &fs)?;
    crate::profile::mark("plan: the view (masks, exposures, toolchains)");
    let mut steps = crate::plan::steps(&view);
    if let Some(c) = spec.rootless {
        steps = crate::rootless::homes_of_others(steps, c.uid);
    }
    Ok((host, fs, view, steps))
}
