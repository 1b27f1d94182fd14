//! `cloche doctor`: what this machine offers, what is missing, how to fix it.

use cloche_service::{Context, Options};

// `cloche doctor [--json]`.
#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print the checks as one JSON document (docs/schemas/doctor.json).
    #[arg(long)]
    json: bool,
}

pub fn main(args: DoctorArgs) -> i32 {
    let doc = cloche_service::doctor::doctor(&Context::new(Options::default()));
    let failed = doc.failed;
    let code = if failed == 0 { 0 } else { 1 };
    if args.json {
        return crate::output::emit(&doc).map_or_else(crate::fail, |()| code);
    }
    use anstyle::{AnsiColor, Style};
    let style = |c: AnsiColor| Style::new().fg_color(Some(c.into())).bold();
    for c in &doc.checks {
        let (mark, s) = match (c.ok, c.required) {
            (true, _) => ("ok  ", style(AnsiColor::Green)),
            (false, true) => ("FAIL", style(AnsiColor::Red)),
            (false, false) => ("warn", style(AnsiColor::Yellow)),
        };
        anstream::println!("{s}{mark}{s:#} {:<14} {}", c.name, c.detail);
    }
    if failed == 0 {
        println!("cloche can run worlds here.");
    } else {
        println!("{failed} required check(s) failed: `cloche run` will refuse to start.");
    }
    code
}
