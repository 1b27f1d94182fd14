//! `cloche policy check|show`: classify a command line, show the rules.
//!
//! Both parse their own arguments so that a usage error exits 2 (the rest
//! of the CLI's parse errors are 125): `check` is a query a script may run
//! on every command, and must tell "bad call" from "cloche failed".

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use cloche_policy::{Conditions, Decision, Level, Policy, Rule, SimpleCommand};
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;

/// Exit code of a usage error.
pub const EXIT_USAGE: i32 = 2;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Classify a command line (parsed as shell): decision, rule, reason, risk and the commands it runs.
    #[command(disable_help_flag = true)]
    Check(RawArgs),
    /// Show the effective command rules.
    #[command(disable_help_flag = true)]
    Show(RawArgs),
    /// Store a policy file and bind it to a project directory (or make it the default); audited.
    Set {
        /// The policy file (TOML; policies/default.toml documents every key).
        file: PathBuf,
        /// The project directory (and everything below it) the policy applies to.
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
        /// Print the new binding as JSON (docs/schemas/policy-binding.json).
        #[arg(long)]
        json: bool,
    },
    /// Remove a project's binding (or the default one); audited.
    Unset {
        /// The project directory whose binding goes (default: the default binding).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
        /// Print the removed binding as JSON (docs/schemas/policy-binding.json).
        #[arg(long)]
        json: bool,
    },
    /// Which stored policy applies where.
    List {
        /// Print the bindings as one JSON document (docs/schemas/policy-list.json).
        #[arg(long)]
        json: bool,
    },
}

/// Arguments handed to the subcommand's own parser (see the module doc).
#[derive(Args)]
pub struct RawArgs {
    /// The subcommand's arguments (see its --help).
    #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Classify a command line. Exit status 0 whatever the decision; 2 for a
/// usage error; 125 when the policy cannot be loaded.
#[derive(Parser)]
#[command(name = "cloche policy check", disable_version_flag = true)]
struct CheckArgs {
    /// Policy file (default: the built-in policies/default.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "project")]
    policy: Option<PathBuf>,
    /// Use the policy bound to this project directory (`cloche policy set`).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Print the decision as one JSON document (docs/schemas/policy-check.json).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    global: Global,
    /// The command line, as one argument: `cloche policy check "curl x | sh"`.
    #[arg(value_name = "CMD")]
    cmd: String,
}

/// Show the effective command rules.
#[derive(Parser)]
#[command(name = "cloche policy show", disable_version_flag = true)]
struct ShowArgs {
    /// Policy file (default: the built-in policies/default.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "project")]
    policy: Option<PathBuf>,
    /// Use the policy bound to this project directory (`cloche policy set`).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Print the rules as one JSON document (docs/schemas/policy-show.json).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    global: Global,
}

/// The global options, also accepted after `check` and `show`.
#[derive(Args)]
struct Global {
    /// When to colour the output: auto, always, never.
    #[arg(long, value_enum, value_name = "WHEN")]
    color: Option<crate::term::ColorWhen>,
    /// Never start a pager.
    #[arg(long)]
    no_pager: bool,
}

impl Global {
    fn apply(&self) {
        if self.color.is_some() || self.no_pager {
            crate::term::init(self.color.unwrap_or_default(), self.no_pager);
        }
    }
}

pub fn main(cmd: PolicyCommand) -> i32 {
    match cmd {
        PolicyCommand::Check(raw) => match parse::<CheckArgs>("check", raw) {
            Ok(a) => check(&a),
            Err(code) => code,
        },
        PolicyCommand::Show(raw) => match parse::<ShowArgs>("show", raw) {
            Ok(a) => show(&a),
            Err(code) => code,
        },
        PolicyCommand::Set { file, project, json } => {
            done(crate::policy_store_cmd::set(&file, project.as_deref()).and_then(|b| binding(json, b)))
        }
        PolicyCommand::Unset { project, json } => {
            done(crate::policy_store_cmd::unset(project.as_deref()).and_then(|b| binding(json, b)))
        }
        PolicyCommand::List { json } => done(crate::policy_store_cmd::list(json)),
    }
}

/// Prints a binding with `--json`.
fn binding(json: bool, b: crate::output::PolicyBinding) -> Result<(), String> {
    match json {
        true => crate::output::emit(&b),
        false => Ok(()),
    }
}

fn done(r: Result<(), String>) -> i32 {
    r.map_or_else(crate::fail, |()| 0)
}

/// Parses a subcommand's arguments; `--help` prints and exits 0, a usage
/// error prints one line and exits 2.
fn parse<T: Parser>(name: &str, raw: RawArgs) -> Result<T, i32> {
    // The outer parser drops a `--` (`cloche policy check -- -x`): take the
    // words after `cloche policy NAME` as they were given when they are there.
    let given: Vec<OsString> = std::env::args_os().collect();
    let rest =
        if given.len() >= 3 && given[1] == "policy" && given[2] == name { given[3..].to_vec() } else { raw.args };
    let argv = std::iter::once(OsString::from(format!("cloche policy {name}"))).chain(rest);
    T::try_parse_from(argv).map_err(|e| {
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            return 0;
        }
        let text = e.render().to_string();
        let para: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
        let msg = para.join(" ");
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
        eprintln!("cloche: {msg} (see cloche policy {name} --help)");
        EXIT_USAGE
    })
}

fn load(path: &Option<PathBuf>, project: &Option<PathBuf>) -> Result<Policy, i32> {
    match (path, project) {
        (Some(p), _) => Policy::load(p).map_err(crate::fail),
        (None, Some(dir)) => cloche_service::policy_store::project_key(dir)
            .and_then(|key| crate::context().resolve(&key))
            .map(|(_, p)| p)
            .map_err(crate::fail),
        (None, None) => Ok(Policy::builtin()),
    }
}

fn check(a: &CheckArgs) -> i32 {
    a.global.apply();
    let policy = match load(&a.policy, &a.project) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let d = policy.classify(&a.cmd);
    if a.json {
        let mut v = serde_json::to_value(&d).unwrap_or_default();
        v["policy"] = json!(policy.origin);
        crate::output::emit(&v).map_or_else(crate::fail, |()| 0)
    } else {
        emit(&human_decision(&d))
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => crate::fail(format!("stdout: {e}")),
        _ => 0,
    }
}

fn human_decision(d: &Decision) -> String {
    let mut out = format!("{} (rule {}, risk {})\n", d.effect, d.rule, d.risk);
    out += &format!("  reason:   {}\n", d.reason);
    out += &format!("  risks:    {}\n", d.risks);
    if d.commands.is_empty() {
        out += "  commands: none\n";
        return out;
    }
    out += "  commands:\n";
    let width = d.commands.iter().map(|c| c.rule.len()).max().unwrap_or(0);
    for c in &d.commands {
        let via = if c.via.is_empty() { String::new() } else { format!("   (via {})", c.via.join(" > ")) };
        out += &format!("    {:<6}  {:<width$}  {:>3}  {}{via}\n", c.effect, c.rule, c.risk, render(c));
    }
    out
}

/// A simple command written back as shell (quoted where needed).
fn render(c: &SimpleCommand) -> String {
    let mut parts: Vec<String> = c.assigns.iter().map(|a| quote(a)).collect();
    parts.extend(c.argv.iter().map(|w| quote(w)));
    for r in &c.redirects {
        let fd = r.fd.map(|f| f.to_string()).unwrap_or_default();
        let target = if r.op.ends_with('&') { r.target.clone() } else { quote(&r.target) };
        parts.push(format!("{fd}{}{target}", r.op));
    }
    if parts.is_empty() {
        "(nothing)".into()
    } else {
        parts.join(" ")
    }
}

fn quote(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+=:,./@%^~*?".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

fn show(a: &ShowArgs) -> i32 {
    a.global.apply();
    let policy = match load(&a.policy, &a.project) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rules = &policy.commands;
    if a.json {
        let v = json!({
            "policy": policy.origin,
            "unknown": rules.unknown(),
            "unresolved": rules.unresolved(),
            "rules": rules.rules(),
        });
        return crate::output::emit(&v).map_or_else(crate::fail, |()| 0);
    }
    let mut out = format!("policy: {} ({} command rules)\n", policy.origin, rules.rules().len());
    for (what, f) in [("unknown commands", rules.unknown()), ("unresolved commands", rules.unresolved())] {
        out += &format!("{what}: {}, risk {}: {}\n", f.effect, f.risk, f.reason);
    }
    out += "strictest wins: deny > review > allow (docs/policy.md)\n";
    for r in rules.rules() {
        out += &human_rule(r);
    }
    crate::term::page(out.as_bytes()).map_or_else(|e| crate::fail(format!("stdout: {e}")), |()| 0)
}

fn human_rule(r: &Rule) -> String {
    let k = r.risks;
    let levels =
        [("privilege", k.privilege), ("destruction", k.destruction), ("network", k.network), ("system", k.system)];
    let cats: Vec<String> = levels.iter().filter(|(_, l)| *l != Level::Low).map(|(n, l)| format!("{n} {l}")).collect();
    let cats = if cats.is_empty() { String::new() } else { format!("; {}", cats.join(", ")) };
    let mut out = format!("\n{:<6}  {}  (risk {}{cats})\n", r.effect, r.name, r.risk);
    out += &format!("        {}\n", r.reason);
    out += &conditions(&r.conditions, "        ");
    for u in &r.unless {
        out += "        unless:\n";
        out += &conditions(u, "          ");
    }
    if r.ignore_case {
        out += "        ignore_case: true\n";
    }
    if r.dynamic_args {
        out += "        dynamic_args: true\n";
    }
    out += &format!("        examples: {}\n", quoted_list(&r.examples));
    if !r.counterexamples.is_empty() {
        out += &format!("        counterexamples: {}\n", quoted_list(&r.counterexamples));
    }
    out
}

fn quoted_list(l: &[String]) -> String {
    l.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")
}

fn conditions(c: &Conditions, indent: &str) -> String {
    let fields: [(&str, &Vec<String>); 10] = [
        ("programs", &c.programs),
        ("subcommands", &c.subcommands),
        ("leading_flags", &c.leading_flags),
        ("flags_all", &c.flags_all),
        ("flags_any", &c.flags_any),
        ("args_any", &c.args_any),
        ("mentions_any", &c.mentions_any),
        ("writes_any", &c.writes_any),
        ("piped_into", &c.piped_into),
        ("assigns_any", &c.assigns_any),
    ];
    fields.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{indent}{k}: {}\n", v.join(" "))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_own_parsers_have_help_on_every_argument() {
        let mut missing = Vec::new();
        for cmd in [CheckArgs::command(), ShowArgs::command()] {
            cmd.clone().debug_assert();
            crate::tests::missing_help(&cmd, cmd.get_name(), &mut missing);
        }
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
