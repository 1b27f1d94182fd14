//! A large commit: 100,000 small files and one 2 GiB file, with the memory
//! of `cloche commit` bounded (no file is ever held whole). Root; about 2 GiB
//! of memory for the length of the test: the project is a tmpfs of its own.
//! On the host's ext4, creating 100,000 files took 20 to 60 s by itself
//! after a day of builds and tests had deleted millions of files (the
//! inode allocator skips recently deleted inodes: `recently_deleted` was
//! half of a commit's CPU time), which measures the machine, not cloche.

use crate::common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

/// Runs `cmd` to its end; returns its exit code and its peak RSS in KiB
/// (`wait4`'s rusage of exactly that child).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run_measured(cmd: &mut std::process::Command) -> (i32, i64, String) {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id() as i32;
    let mut stderr = child.stderr.expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with pointers to our locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = std::process::ExitStatus::from_raw(status).code().unwrap_or(-1);
    (code, ru.ru_maxrss, reader.join().unwrap_or_default())
}

#[test]
fn a_hundred_thousand_files_and_a_2_gib_file_commit_with_bounded_memory() {
    let fx = Fixture::new();
    let project = Mounted::tmpfs(fx.dir(), "4g", &fx.tag);
    // The big file's bytes: lines of 4,098 `x` and a newline, a period of
    // 4,099 bytes (a prime), so a block copied to the wrong place (blocks are
    // multiples of 4 KiB) cannot look right. `yes` writes it at disk speed
    // (`tr` over /dev/zero took 20 s of the test's time). Two shells make
    // the small files while it runs: the world's part took 16.7 s in one
    // shell after the other, 10.1 s so, on two cores.
    let script = "w() { for d in $(seq $1 $2); do mkdir d$d; for f in $(seq 1000); do echo $d.$f > d$d/f$f; done; \
                  done; }; w 1 50 & a=$!; w 51 100 & b=$!; \
                  yes \"$(printf '%4098s' '' | tr ' ' x)\" | head -c 2147483648 > big && wait $a && wait $b";
    // The world's tmpfs and memory limit must hold 2 GiB.
    fx.run(&["--keep", "--memory", "6GiB"], &["sh", "-c", script]).expect_code(0);
    let id = fx.worlds().pop().expect("a kept world");
    let o = fx.cloche(&["diff", &id, "--stat"]);
    o.expect_code(0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("100101 added"), "{}", o.describe());

    let mut cmd = fx.command();
    cmd.args(["commit", &id]);
    let (code, maxrss_kib, err) = run_measured(&mut cmd);
    assert_eq!(code, 0, "{err}");
    eprintln!("cloche commit of 100,000 files + 2 GiB: peak RSS {} MiB", maxrss_kib / 1024);
    // Memory grows with the number of paths (about 2 KiB each), never with
    // file sizes: a 2 GiB file held whole would blow well past this.
    assert!(maxrss_kib < 512 * 1024, "peak RSS {maxrss_kib} KiB: memory is not bounded");

    // Everything arrived, byte for byte.
    let big = fx.dir().join("big");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 2 << 30);
    // Compared with what `yes` wrote, 1 MiB at a time in Python (`cmp`
    // against a second `yes` took 6 s of the test's time, `sha256sum` 10 s).
    let check = "import sys\n\
                 line = b'x' * 4098 + b'\\n'\n\
                 rep = line * ((1 << 20) // len(line) + 2)\n\
                 off = 0\n\
                 with open(sys.argv[1], 'rb') as f:\n\
                 \x20   while b := f.read(1 << 20):\n\
                 \x20       s = off % len(line)\n\
                 \x20       if b != rep[s:s + len(b)]: sys.exit(1)\n\
                 \x20       off += len(b)\n\
                 sys.exit(0 if off == 2147483648 else 2)\n";
    let st = std::process::Command::new("python3").arg("-c").arg(check).arg(&big).status().unwrap();
    assert!(st.success(), "the 2 GiB file differs");
    let mut files = 0;
    for d in 1..=100 {
        for e in std::fs::read_dir(fx.dir().join(format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let want = format!("{d}.{}\n", e.file_name().to_string_lossy().trim_start_matches('f'));
            assert_eq!(std::fs::read_to_string(e.path()).unwrap(), want);
            files += 1;
        }
    }
    assert_eq!(files, 100_000);
    std::fs::remove_file(&big).unwrap(); // free the memory early
    fx.cloche(&["discard", &id]).expect_code(0);
    drop(project);
    fx.finish();
}
