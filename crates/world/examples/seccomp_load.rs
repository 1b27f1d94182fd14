//! Times compiling and installing seccomp programs (in forked children).
//! `cargo run --release -p cloche-world --example seccomp_load [PROFILE.json]`
use cloche_world::seccomp::{install, Profile, Program};
use std::time::Instant;

fn time_install(p: &Program) -> f64 {
    let mut xs = Vec::new();
    for _ in 0..50 {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                nix::sys::prctl::set_no_new_privs().unwrap();
                let t = Instant::now();
                install(p).unwrap();
                let us = t.elapsed().as_micros() as u64;
                nix::unistd::write(&w, &us.to_ne_bytes()).unwrap();
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut b = [0u8; 8];
                nix::unistd::read(&r, &mut b).unwrap();
                nix::sys::wait::waitpid(child, None).unwrap();
                xs.push(u64::from_ne_bytes(b) as f64 / 1000.0);
            }
        }
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn main() {
    let json = match std::env::args().nth(1) {
        Some(p) => std::fs::read_to_string(p).unwrap(),
        None => cloche_world::seccomp::DEFAULT_PROFILE_JSON.to_string(),
    };
    let t = Instant::now();
    let prog = Program::compile(&Profile::from_json(&json).unwrap()).unwrap();
    println!("compile {:.2} ms, {} instructions", t.elapsed().as_secs_f64() * 1e3, prog.len());
    println!("install median {:.3} ms", time_install(&prog));
}
