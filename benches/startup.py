#!/usr/bin/env python3
"""cloche against its peers, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/startup.py [--runs N] [--sporadic N] [--cloche PATH]

Prints medians and ratios:
  1. back to back: `cloche run -- true` vs `bwrap --ro-bind / / --dev /dev
     --proc /proc --unshare-all --die-with-parent true`, interleaved;
  2. sporadic: the same with 300 ms idle before each run (where cgroup
     attaches and other RCU waits would show);
  3. fs_diff of an upper holding 10,000 new files, with and without hashing
     (the engine's own diff timing from the report);
  4. fs_diff of 10,000 content-identical rewrites (`sed -i` that changes
     nothing, on files of 4 KiB in 100 dirs): every file is compared with
     its base and listed as touched.
Figures are wall-clock times of whole processes (fork+exec+wait), as a user
sees them. Nothing here is asserted: this is a measurement, not a test.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def cloche_arg(ap):
    """`--cloche PATH`, the release build by default (every bench)."""
    ap.add_argument("--cloche", default=os.path.join(ROOT, "target/release/cloche"))

def preflight(cloche):
    """Root and a built cloche, or a clear exit (every bench)."""
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.path.exists(cloche):
        sys.exit(f"{cloche} missing: cargo build --release --workspace")

def bwrap_path():
    """bubblewrap's path, or a clear exit (benches against it)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        sys.exit("bwrap missing: bash .ci/setup")
    return bwrap

def timed(cmd, env):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return dt

def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(0.9 * (len(xs) - 1))]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--sporadic", type=int, default=30)
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    bwrap = bwrap_path()
    state = tempfile.mkdtemp(prefix="cloche-bench-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    cloche = [a.cloche, "run", "--", "true"]
    bw = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--die-with-parent", "true"]
    try:
        for _ in range(5):  # warm caches (and the seccomp program cache)
            timed(cloche, env); timed(bw, env)
        c, b = [], []
        for _ in range(a.runs):
            c.append(timed(cloche, env)); b.append(timed(bw, env))
        (cm, cp), (bm, bp) = stats(c), stats(b)
        print(f"back to back ({a.runs} runs each, interleaved)")
        print(f"  cloche run -- true   median {cm:6.2f} ms  p90 {cp:6.2f} ms")
        print(f"  bwrap ... true       median {bm:6.2f} ms  p90 {bp:6.2f} ms")
        print(f"  ratio cloche/bwrap   {cm / bm:.2f}x")
        c, b = [], []
        for _ in range(a.sporadic):
            time.sleep(0.3); c.append(timed(cloche, env))
            time.sleep(0.3); b.append(timed(bw, env))
        (cm, cp), (bm, bp) = stats(c), stats(b)
        print(f"sporadic (300 ms idle before each, {a.sporadic} runs each)")
        print(f"  cloche run -- true   median {cm:6.2f} ms  p90 {cp:6.2f} ms")
        print(f"  bwrap ... true       median {bm:6.2f} ms  p90 {bp:6.2f} ms")
        print(f"  ratio cloche/bwrap   {cm / bm:.2f}x")
        with tempfile.TemporaryDirectory(prefix="cloche-bench-proj-") as proj:
            make = "for d in $(seq 100); do mkdir d$d; (cd d$d && seq 100 | xargs touch); done"
            for label, extra in [("without hashing", ["--no-hash"]), ("with sha256", [])]:
                xs = []
                for _ in range(5):
                    rep = os.path.join(state, "report.json")
                    subprocess.run([a.cloche, "run", *extra, "--report", rep, "--", "sh", "-c", make],
                                   env=env, cwd=proj, check=True)
                    r = json.load(open(rep))
                    assert r["fs_diff"]["totals"]["added"] == 10100, r["fs_diff"]["totals"]
                    xs.append(r["timings"]["diff_ms"])
                print(f"fs_diff of 10,000 new files in 100 dirs, {label}: median {statistics.median(xs):.2f} ms")
        rewrites(a.cloche, env, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)

def rewrites(cloche, env, state):
    """fs_diff timing of 10,000 files rewritten as they were."""
    with tempfile.TemporaryDirectory(prefix="cloche-bench-proj-") as proj:
        for d in range(100):
            os.mkdir(os.path.join(proj, f"d{d}"))
            for f in range(100):
                with open(os.path.join(proj, f"d{d}", f"f{f}"), "w") as fh:
                    fh.write((f"x line of file {d}/{f}\n" * 200)[:4096])
        same = "find . -type f -exec sed -i s/x/x/ {} +"
        for label, extra in [("without hashing", ["--no-hash"]), ("with sha256", [])]:
            xs = []
            for _ in range(5):
                rep = os.path.join(state, "report.json")
                subprocess.run([cloche, "run", *extra, "--report", rep, "--", "sh", "-c", same],
                               env=env, cwd=proj, check=True)
                t = json.load(open(rep))["fs_diff"]["totals"]
                # touched (or, before the touched list, modified with mtime only)
                assert t.get("touched", 0) + t["modified"] == 10000 and t["added"] == 0, t
                xs.append(json.load(open(rep))["timings"]["diff_ms"])
            print(f"fs_diff of 10,000 identical rewrites (4 KiB) in 100 dirs, {label}: "
                  f"median {statistics.median(xs):.2f} ms (touched {t.get('touched', 0)}, modified {t['modified']})")

if __name__ == "__main__":
    main()
