//! Kept worlds waiting for review: listed, discarded (by a reviewer or by
//! the retention limit). Every discard is audited (`discarded`, with why)
//! before the world goes.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::{Discard, Discarded, Gc, MovedToDisk, Version};
use cloche_broker::Broker;
use cloche_world::kept::{self, KeptWorld, Retention};
use cloche_world::StateDir;

/// Actor of discards made by the retention limit.
pub const RETENTION_ACTOR: &str = "policy:retention";

impl Context {
    /// The kept worlds, oldest first (the worlds of runs that died settled first).
    pub fn worlds(&self) -> Result<Vec<KeptWorld>> {
        let state = self.kept_state()?;
        state.sweep();
        Ok(kept::list(state))
    }

    /// One kept world.
    pub fn world(&self, id: &str) -> Result<KeptWorld> {
        let state = self.kept_state()?;
        state.sweep();
        kept::get(state, id).ok_or_else(|| Error::NotFound(format!("no kept world {id}")))
    }

    /// One kept world, without its size (reading it costs no walk of its
    /// files), nothing swept: for what a run that continues it needs first.
    pub fn world_brief(&self, id: &str) -> Result<KeptWorld> {
        kept::find(self.kept_state()?, id).ok_or_else(|| Error::NotFound(format!("no kept world {id}")))
    }

    /// `worlds gc`: the retention limit of the default policy, applied (or
    /// only planned, with `dry_run`); then the disk pool's trash emptied.
    pub fn collect_worlds(&self, dry_run: bool) -> Result<Gc> {
        let state = self.kept_state()?;
        state.sweep();
        let (_, policy) = self.store()?.resolve("/").map_err(|e| Error::Policy(e.to_string()))?;
        let r = Retention { max_worlds: policy.retention.max_worlds, max_age: policy.retention.max_age };
        let gone = gc(state, &mut *self.broker()?, r, dry_run)?;
        let mut moved_to_disk = Vec::new();
        if !dry_run {
            // Worlds kept on a tmpfs (no room on disk when they were kept):
            // another try.
            moved_to_disk =
                kept::move_to_disk(state).into_iter().map(|(world, r)| MovedToDisk { world, error: r.err() }).collect();
            // The disk pool's trash (worlds that ended since the last run,
            // these ones too), deleted now rather than by the next run, and
            // freed blocks given back to the state directory's filesystem.
            cloche_world::pool::tidy(state);
            // The spare network namespace (a cache of the next world's):
            // nothing of cloche's but the pool stays mounted on the host.
            cloche_world::netns_spare::release(&state.root);
        }
        let discarded = gone.into_iter().map(|(world, why)| Discarded { world, why }).collect();
        Ok(Gc { schema_version: Version, dry_run, discarded, moved_to_disk })
    }

    /// Discards a kept world, by its id or its batch's id; audited.
    pub fn discard(&self, id: &str, actor: &str) -> Result<Discard> {
        let state = self.kept_state()?;
        state.sweep();
        let mut broker = self.broker()?;
        let world = match kept::get(state, id) {
            Some(w) => w,
            None => {
                // A batch id: its world.
                let view = broker.get(id).map_err(|_| Error::NotFound(format!("no kept world or batch {id}")))?;
                let owner = format!("batch:{}", view.id);
                kept::owned_by(state, &owner).ok_or_else(|| Error::NotFound(format!("batch {id} has no kept world")))?
            }
        };
        discard_one(state, &mut broker, &world, actor, "discarded by a reviewer")?;
        let batch = world.owner.as_deref().and_then(|o| o.strip_prefix("batch:")).map(str::to_string);
        Ok(Discard { schema_version: Version, world: world.id, batch })
    }
}

/// Applies a retention limit: audits and discards each world it drops.
/// Returns what it discarded (or would, with `dry_run`).
pub fn gc(state: &StateDir, broker: &mut Broker, r: Retention, dry_run: bool) -> Result<Vec<(String, String)>> {
    let worlds = kept::list(state);
    let plan = kept::plan_gc(&worlds, r, now());
    if dry_run {
        return Ok(plan);
    }
    let mut done = Vec::new();
    for (id, why) in plan {
        let Some(w) = worlds.iter().find(|w| w.id == id) else { continue };
        // A world still in use (a run holding it) stays for the next gc.
        if state.is_live(&id) {
            continue;
        }
        discard_one(state, broker, w, RETENTION_ACTOR, &why)?;
        done.push((id, why));
    }
    Ok(done)
}

/// Audits, then discards one kept world.
fn discard_one(state: &StateDir, broker: &mut Broker, w: &KeptWorld, actor: &str, why: &str) -> Result<()> {
    if state.is_live(&w.id) {
        return Err(Error::Busy(format!("world {} is still running", w.id)));
    }
    let batch = w.owner.as_deref().and_then(|o| o.strip_prefix("batch:"));
    broker.world_discarded(&w.id, batch, actor, why)?;
    kept::discard(state, &w.id).map_err(|e| Error::Discard(format!("discard world {}: {e}", w.id)))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
