//! `cloche agents [register NAME | show NAME]`: who submits batches, what
//! each is doing and what it used of its budgets (`cloche_service::agents`).

use cloche_broker::{AgentStatus, AgentView};
use cloche_service::uid_actor;

// `cloche agents`: every agent (or one subcommand).
#[derive(clap::Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    cmd: Option<AgentsCommand>,
    /// Print them as one JSON document (docs/schemas/agents.json).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum AgentsCommand {
    /// Register an agent by name (a batch's `agent`); prints its id. An
    /// agent is also registered by its first batch.
    Register {
        /// 1 to 64 of A-Z a-z 0-9 . _ - @ :
        name: String,
        /// Print the agent as JSON (docs/schemas/agent.json).
        #[arg(long)]
        json: bool,
    },
    /// One agent: id, status, usage.
    Show {
        /// The agent's name.
        name: String,
        /// Print the agent as JSON (docs/schemas/agent.json).
        #[arg(long)]
        json: bool,
    },
}

pub fn main(args: AgentsArgs) -> i32 {
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        match args.cmd {
            None => {
                let list = ctx.agents()?;
                if args.json {
                    return crate::output::emit(&list);
                }
                let b = &list.budgets;
                println!(
                    "budgets per agent (0: none): {} batches/h, {} entries/batch, {} CPU s/h, {} egress bytes/h, {} worlds at once",
                    b.batches_per_hour, b.entries_per_batch, b.cpu_seconds_per_hour, b.egress_bytes_per_hour, b.concurrent_worlds
                );
                println!(
                    "{:<24} {:<16} {:<8} {:>9} {:>9} {:>12} {:>7}",
                    "NAME", "ID", "STATUS", "BATCHES/H", "CPU-S/H", "EGRESS-B/H", "RUNNING"
                );
                for a in &list.agents {
                    println!("{}", line(a));
                }
            }
            Some(AgentsCommand::Register { name, json }) => {
                let a = ctx.register_agent(&name, &uid_actor())?;
                match json {
                    true => crate::output::emit(&a)?,
                    false => println!("{}", a.agent.id),
                }
            }
            Some(AgentsCommand::Show { name, json }) => {
                let a = ctx.agent(&name)?;
                match json {
                    true => crate::output::emit(&a)?,
                    false => println!("{}", line(&a.agent)),
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => crate::fail(e),
    }
}

fn line(a: &AgentView) -> String {
    let status = match a.status {
        AgentStatus::Idle => "idle",
        AgentStatus::Running => "running",
        AgentStatus::Waiting => "waiting",
    };
    let u = &a.usage;
    format!(
        "{:<24} {:<16} {:<8} {:>9} {:>9} {:>12} {:>7}",
        a.name,
        a.id,
        status,
        u.batches_last_hour,
        u.cpu_ms_last_hour / 1000,
        u.egress_bytes_last_hour,
        u.running
    )
}
