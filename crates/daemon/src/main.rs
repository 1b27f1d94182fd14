//! `cloched [--socket PATH] [--config FILE]`; `cloched __spawner` is the
//! spawner process the daemon starts itself (crates/daemon/src/spawner.rs).

fn main() {
    // First: the relocated read-only data made read-only (crates/relro).
    if let Err(e) = cloche_relro::protect() {
        eprintln!("cloched: making its read-only data read-only (mprotect): {e}");
        std::process::exit(1);
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "__spawner") {
        std::process::exit(cloche_daemon::spawner::main());
    }
    let opts = <cloche_daemon::Opts as clap::Parser>::parse();
    std::process::exit(cloche_daemon::run(opts));
}
