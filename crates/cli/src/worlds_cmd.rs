//! `cloche worlds list|show|fork|gc` and `cloche discard`: the kept worlds
//! waiting for review (`cloche_service::worlds`), printed. Every discard is
//! audited (`discarded`, with why) before the world goes; every fork
//! (`cloche_service::session`) once it is made.

use clap::Subcommand;
use cloche_service::uid_actor;
use cloche_service::worlds::now;
use cloche_world::kept::KeptWorld;

#[derive(Subcommand)]
pub enum WorldsCommand {
    /// Kept worlds, oldest first: id, state, age, size, owner.
    List {
        /// Print them as one JSON document (docs/schemas/worlds.json).
        #[arg(long)]
        json: bool,
    },
    /// One kept world, with its runs.
    Show {
        /// The world's id.
        id: String,
        /// Print it as one JSON document (docs/schemas/world.json).
        #[arg(long)]
        json: bool,
    },
    /// Copy a kept world to try another way: a new kept world with the original's files and
    /// history (cheap: a btrfs snapshot, nothing copied), continued with `cloche run --world NEW`;
    /// the original is left as it was. Its new id is printed (stdout).
    Fork {
        /// The kept world's id (not while a run continues it).
        id: String,
        /// Print the result as one JSON document (docs/schemas/fork.json).
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

// `cloche discard ID [--json]`.
#[derive(clap::Args)]
pub struct DiscardArgs {
    /// A kept world's id, or a batch id (its world).
    pub(crate) id: String,
    /// Print what was discarded as JSON (docs/schemas/discard.json).
    #[arg(long)]
    pub(crate) json: bool,
}

pub fn main(cmd: WorldsCommand) -> i32 {
    if let WorldsCommand::Fork { id, json } = cmd {
        return fork(&id, json).map_or_else(crate::fail, |()| 0);
    }
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        match cmd {
            WorldsCommand::List { json } => {
                let worlds = ctx.worlds()?;
                if json {
                    crate::output::emit(&serde_json::json!({ "worlds": worlds }))?;
                }
                for w in worlds.iter().filter(|_| !json) {
                    println!("{}", line(w, now()));
                }
            }
            WorldsCommand::Show { id, json } => {
                let w = ctx.world(&id)?;
                if json {
                    crate::output::emit(&w)?;
                } else {
                    println!("{}\n  path {}\n  argv {:?}", line(&w, now()), w.path.display(), w.argv);
                    if let Some(f) = &w.forked_from {
                        println!("  forked from {f}");
                    }
                    for r in &w.runs {
                        let what = r.batch.as_ref().map_or_else(|| r.command.join(" "), |b| format!("batch {b}"));
                        let c = &r.changes;
                        println!(
                            "  run {}: exit {}, +{} ~{} -{}  {}",
                            r.run, r.exit_code, c.added, c.modified, c.deleted, what
                        );
                    }
                }
            }
            WorldsCommand::Fork { .. } => unreachable!("handled above"),
            WorldsCommand::Gc { dry_run, json } => {
                let gc = ctx.collect_worlds(dry_run)?;
                if json {
                    return crate::output::emit(&gc);
                }
                for d in gc.discarded {
                    println!("{} {} ({})", if dry_run { "would discard" } else { "discarded" }, d.world, d.why);
                }
            }
        }
        Ok(())
    })();
    r.map_or_else(crate::fail, |()| 0)
}

/// `cloche worlds fork ID [--json]`: through the daemon when one answers
/// (a caller other than root forks its own worlds there), else here.
fn fork(id: &str, json: bool) -> Result<(), String> {
    let (world, from, doc) = match crate::remote::via()? {
        crate::remote::Via::Daemon(mut c) => {
            let v = c.call("POST", &format!("/v1/worlds/{}/fork", crate::remote::enc(id)), None)?;
            (v["world"].as_str().unwrap_or_default().to_string(), id.to_string(), v)
        }
        crate::remote::Via::Embedded => {
            let f = crate::context().fork_world(id, &uid_actor())?;
            let v = serde_json::to_value(&f).map_err(|e| e.to_string())?;
            (f.world, f.forked_from, v)
        }
    };
    eprintln!("cloche: world {world} forked from {from} (continue it with: cloche run --world {world} -- CMD)");
    match json {
        true => crate::output::emit(&doc),
        false => {
            println!("{world}");
            Ok(())
        }
    }
}

/// `cloche discard WORLD|BATCH`.
pub fn discard(a: DiscardArgs) -> i32 {
    match crate::remote::via_own() {
        Ok(crate::remote::Via::Embedded) => {}
        Ok(crate::remote::Via::Daemon(c)) => {
            return crate::remote::batch::discard(c, a).map_or_else(crate::fail, |()| 0)
        }
        Err(e) => return crate::fail(e),
    }
    let r = (|| -> Result<(), String> {
        let d = crate::context().discard(&a.id, &uid_actor())?;
        eprintln!("cloche: world {} discarded", d.world);
        if a.json {
            crate::output::emit(&d)?;
        }
        Ok(())
    })();
    r.map_or_else(crate::fail, |()| 0)
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
