//! fs_diff timing: an upper holding 10,000 new small files in 100 directories.
//!
//! `cargo run --release -p cloche-world --example diff_bench [files_per_dir] [dirs]`
//!
//! The upper lives on tmpfs (/dev/shm) as in a world. Three lowers: the host
//! root (the new directories do not exist there, so the files need no lower
//! lookup); a lower that has the 100 directories, empty (listed once each
//! instead of 10,000 lookups); the same with 1,000 other files in each
//! directory (too big to list: every upper file costs a negative lookup).
//! Prints min / median / max over the runs.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use cloche_world::diff::{compute, DiffOptions};

const RUNS: usize = 30;

fn populate(root: &Path, dirs: usize, files: usize, prefix: &str) {
    for d in 0..dirs {
        let dir = root.join(format!("srv/bench/d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("{prefix}-{f:04}.txt")), format!("small file {d} {f}\n")).unwrap();
        }
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("min {:7.2} ms  median {:7.2} ms  max {:7.2} ms", ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn bench(label: &str, upper: &Path, lower: &Path, hash: bool) {
    let u = File::open(upper).unwrap();
    let l = File::open(lower).unwrap();
    let opts = DiffOptions { hash, ..DiffOptions::default() };
    let first = compute(u.as_fd(), l.as_fd(), &opts).unwrap();
    let mut times = Vec::with_capacity(RUNS);
    let mut json_times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let d = compute(u.as_fd(), l.as_fd(), &opts).unwrap();
        times.push(t.elapsed());
        assert_eq!(d.totals, first.totals);
        let t = Instant::now();
        let s = serde_json::to_vec(&d).unwrap();
        json_times.push(t.elapsed());
        std::hint::black_box(s);
    }
    println!(
        "{label:<30} hash={:<5} entries={:>6}  {}",
        hash,
        first.totals.added + first.totals.modified + first.totals.deleted,
        stats(times)
    );
    println!("{:<30} {:<10} {:>14}  {}", "", "", "(to JSON)", stats(json_times));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let dirs: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let base = tempfile::Builder::new().prefix("diff-bench").tempdir_in("/dev/shm").unwrap();
    let upper = base.path().join("upper");
    let lower_dirs = base.path().join("lower");
    let lower_big = base.path().join("lower-big");
    populate(&upper, dirs, files, "file");
    populate(&lower_dirs, dirs, 0, "");
    populate(&lower_big, dirs, 1000, "other");
    println!("upper: {dirs} dirs x {files} files on tmpfs, {RUNS} runs each");
    for hash in [false, true] {
        bench("lower = host / (no lookups)", &upper, Path::new("/"), hash);
        bench("lower has the dirs (listed)", &upper, &lower_dirs, hash);
        bench("lower has big dirs (lookups)", &upper, &lower_big, hash);
    }
}
