//! `cloche worlds list|show|gc` and `cloche discard`: the kept worlds
//! waiting for review. Every discard is audited (`discarded`, with why)
//! before the world goes.

use crate::batch_cmd::open_broker;
use crate::output::{Discard, Discarded, Gc, Version};
use crate::policy_store_cmd::{open_store, uid_actor};
use crate::run::open_state;
use clap::Subcommand;
use cloche_broker::Broker;
use cloche_world::kept::{self, KeptWorld, Retention};
use cloche_world::StateDir;

/// Actor of discards made by the retention limit.
pub const RETENTION_ACTOR: &str = "policy:retention";

#[derive(Subcommand)]
pub enum WorldsCommand {
    /// Kept worlds, oldest first: id, state, age, size, owner.
    List {
        /// Print them as one JSON document (docs/schemas/worlds.json).
        #[arg(long)]
        json: bool,
    },
    /// One kept world.
    Show {
        /// The world's id.
        id: String,
        /// Print it as one JSON document (docs/schemas/world.json).
        #[arg(long)]
        json: bool,
    },
    /// Discard kept worlds beyond the retention limit of the default policy.
    Gc {
        /// Show what would be discarded, discard nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print what was (or would be) discarded as JSON (docs/schemas/worlds-gc.json).
        #[arg(long)]
        json: bool,
    },
}

/// `cloche discard ID [--json]`.
#[derive(clap::Args)]
pub struct DiscardArgs {
    /// A kept world's id, or a batch id (its world).
    id: String,
    /// Print what was discarded as JSON (docs/schemas/discard.json).
    #[arg(long)]
    json: bool,
}

pub fn main(cmd: WorldsCommand) -> i32 {
    let r = (|| -> Result<(), String> {
        let state = open_state()?;
        state.sweep(); // settle the worlds of runs that died
        match cmd {
            WorldsCommand::List { json } => {
                let worlds = kept::list(&state);
                if json {
                    crate::output::emit(&serde_json::json!({ "worlds": worlds }))?;
                }
                for w in worlds.iter().filter(|_| !json) {
                    println!("{}", line(w, now()));
                }
            }
            WorldsCommand::Show { id, json } => {
                let w = kept::get(&state, &id).ok_or_else(|| format!("no kept world {id}"))?;
                if json {
                    crate::output::emit(&w)?;
                } else {
                    println!("{}\n  path {}\n  argv {:?}", line(&w, now()), w.path.display(), w.argv);
                }
            }
            WorldsCommand::Gc { dry_run, json } => {
                let (store, _) = open_store()?;
                let (_, policy) = store.resolve("/").map_err(|e| e.to_string())?;
                let r = Retention { max_worlds: policy.retention.max_worlds, max_age: policy.retention.max_age };
                let mut broker = open_broker()?;
                let gone = gc(&state, &mut broker, r, dry_run)?;
                if !dry_run {
                    // The disk pool's trash (worlds that ended since the
                    // last run, these ones too), deleted now rather than by
                    // the next run.
                    cloche_world::pool::tidy(&state);
                }
                if json {
                    let discarded = gone.into_iter().map(|(world, why)| Discarded { world, why }).collect();
                    return crate::output::emit(&Gc { schema_version: Version, dry_run, discarded });
                }
                for (id, why) in gone {
                    println!("{} {id} ({why})", if dry_run { "would discard" } else { "discarded" });
                }
            }
        }
        Ok(())
    })();
    r.map_or_else(crate::fail, |()| 0)
}

/// `cloche discard WORLD|BATCH`.
pub fn discard(a: DiscardArgs) -> i32 {
    let id = a.id.as_str();
    let r = (|| -> Result<(), String> {
        let state = open_state()?;
        state.sweep();
        let mut broker = open_broker()?;
        let world = match kept::get(&state, id) {
            Some(w) => w,
            None => {
                // A batch id: its world.
                let view = broker.get(id).map_err(|_| format!("no kept world or batch {id}"))?;
                let owner = format!("batch:{}", view.id);
                kept::owned_by(&state, &owner).ok_or_else(|| format!("batch {id} has no kept world"))?
            }
        };
        discard_one(&state, &mut broker, &world, &uid_actor(), "discarded by a reviewer")?;
        eprintln!("cloche: world {} discarded", world.id);
        if a.json {
            let batch = world.owner.as_deref().and_then(|o| o.strip_prefix("batch:")).map(str::to_string);
            crate::output::emit(&Discard { schema_version: Version, world: world.id.clone(), batch })?;
        }
        Ok(())
    })();
    r.map_or_else(crate::fail, |()| 0)
}

/// Applies a retention limit: audits and discards each world it drops.
/// Returns what it discarded (or would, with `dry_run`).
pub fn gc(state: &StateDir, broker: &mut Broker, r: Retention, dry_run: bool) -> Result<Vec<(String, String)>, String> {
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
fn discard_one(state: &StateDir, broker: &mut Broker, w: &KeptWorld, actor: &str, why: &str) -> Result<(), String> {
    if state.is_live(&w.id) {
        return Err(format!("world {} is still running", w.id));
    }
    let batch = w.owner.as_deref().and_then(|o| o.strip_prefix("batch:"));
    broker.world_discarded(&w.id, batch, actor, why).map_err(|e| e.to_string())?;
    kept::discard(state, &w.id).map_err(|e| format!("discard world {}: {e}", w.id))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn line(w: &KeptWorld, now: u64) -> String {
    let age = now.saturating_sub(w.created);
    let age = if age >= 86400 {
        format!("{}d", age / 86400)
    } else if age >= 3600 {
        format!("{}h", age / 3600)
    } else if age >= 60 {
        format!("{}m", age / 60)
    } else {
        format!("{age}s")
    };
    let size = format!("{:.1} MiB", w.size as f64 / (1024.0 * 1024.0));
    format!("{}  {:<11} {:>5} {:>10}  {}", w.id, w.state, age, size, w.owner.as_deref().unwrap_or("-"))
}
