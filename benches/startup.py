#!/usr/bin/env python3
"""cloche against its peers, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/startup.py [--runs N] [--sporadic N] [--cloche PATH] [--before PATH] [--starts-only]

With `--before PATH` (a build of an earlier commit), only the start times
(1 and 2) are measured, both builds interleaved in the same runs; with
`--starts-only`, only the start times of this build.

Prints medians and ratios:
  1. back to back: `cloche run -- true` with its upper on disk (the
     default), with `--upper tmpfs`, and `bwrap --ro-bind / / --dev /dev
     --proc /proc --unshare-all --die-with-parent true`, interleaved; and
     what the user namespace costs: `cloche run --policy FILE -- true` with
     the default policy's text and with the same but `world.userns = false`
     (after its first run, a policy file's head is read from the state
     directory's cache, as a bound policy's is: both pay the same), with
     the median of their paired differences;
  2. sporadic: the same with 300 ms idle before each run (where cgroup
     attaches and other RCU waits would show);
  3. fs_diff of an upper holding 10,000 new files, with and without hashing
     (the engine's own diff timing from the report), on disk and on tmpfs;
  4. a world that writes 1 GiB (`dd`), on disk and on tmpfs: the whole run,
     and the engine's own timings;
  5. fs_diff of 10,000 content-identical rewrites (`sed -i` that changes
     nothing, on files of 4 KiB in 100 dirs): every file is compared with
     its base and listed as touched.
Figures are wall-clock times of whole processes (fork+exec+wait), as a user
sees them. Nothing here is asserted: this is a measurement, not a test.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def cloche_arg(ap):
    """`--cloche PATH`, the release build by default (every bench)."""
    ap.add_argument("--cloche", default=os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/cloche"))

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

def release_mounts(state):
    """Unmounts what a bench's state directory holds mounted: its disk pool
    (`worlds/`; its loop device detaches itself) and its spare network
    namespace (`netns/spare`, mounted by the last world's end a moment after
    cloche answered: waited for)."""
    time.sleep(1.0)
    for mount in ("worlds", "netns/spare"):
        path = os.path.join(state, mount)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", path], check=False)

def remove_state(state):
    """Removes a state directory made for a bench, its mounts first."""
    release_mounts(state)
    shutil.rmtree(state, ignore_errors=True)

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
    ap.add_argument("--before", help="another build of cloche (an earlier commit) to time in the same runs, "
                    "with a state directory of its own; then only the start times are measured")
    ap.add_argument("--starts-only", action="store_true", help="only the start times (1 and 2)")
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    bwrap = bwrap_path()
    state = tempfile.mkdtemp(prefix="cloche-bench-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    # The default policy with the user namespace turned off.
    default = open(os.path.join(ROOT, "policies/default.toml")).read()
    assert "\nuserns = true\n" in default
    with_userns, no_userns = os.path.join(state, "userns.toml"), os.path.join(state, "no-userns.toml")
    with open(with_userns, "w") as f:
        f.write(default)
    with open(no_userns, "w") as f:
        f.write(default.replace("\nuserns = true\n", "\nuserns = false\n"))
    tools = [
        ("cloche run -- true (disk)", [a.cloche, "run", "--", "true"], env),
        ("  --policy default (userns)", [a.cloche, "run", "--policy", with_userns, "--", "true"], env),
        ("  --policy without userns", [a.cloche, "run", "--policy", no_userns, "--", "true"], env),
        ("cloche run --upper tmpfs -- true", [a.cloche, "run", "--upper", "tmpfs", "--", "true"], env),
        ("bwrap ... true", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                            "--die-with-parent", "true"], env),
    ]
    before_state = None
    if a.before:
        before_state = tempfile.mkdtemp(prefix="cloche-bench-before-")
        benv = dict(os.environ, CLOCHE_STATE_DIR=before_state)
        tools[2:2] = [("before: run -- true (disk)", [a.before, "run", "--", "true"], benv),
                      ("before: run --upper tmpfs -- true", [a.before, "run", "--upper", "tmpfs", "--", "true"], benv)]
    def compare(title, n, idle):
        times = {label: [] for label, _, _ in tools}
        for i in range(n):
            # The order alternates, so that neither build always follows the other.
            for label, cmd, e in (tools if i % 2 == 0 else tools[::-1]):
                time.sleep(idle)
                times[label].append(timed(cmd, e))
        print(title)
        bm = stats(times["bwrap ... true"])[0]
        for label, _, _ in tools:
            m, p = stats(times[label])
            q1 = sorted(times[label])[len(times[label]) // 4]
            print(f"  {label:34} median {m:6.2f} ms  q1 {q1:6.2f} ms  p90 {p:6.2f} ms  {m / bm:.2f}x bwrap")
        on, off = times["  --policy default (userns)"], times["  --policy without userns"]
        # Paired: each run with the namespace against the run without it next to it.
        d = statistics.median(x - y for x, y in zip(on, off))
        dm = statistics.median(on) - statistics.median(off)
        dq = sorted(on)[len(on) // 4] - sorted(off)[len(off) // 4]
        print(f"  the user namespace costs {d:+.3f} ms (median of paired differences; "
              f"medians {dm:+.3f} ms, first quartiles {dq:+.3f} ms)")
    try:
        for _ in range(5):  # warm caches (the seccomp program cache, the disk pool)
            for _, cmd, e in tools:
                timed(cmd, e)
        compare(f"back to back ({a.runs} runs each, interleaved)", a.runs, 0)
        compare(f"sporadic (300 ms idle before each, {a.sporadic} runs each)", a.sporadic, 0.3)
        if a.before or a.starts_only:
            return
        with tempfile.TemporaryDirectory(prefix="cloche-bench-proj-") as proj:
            rep = os.path.join(state, "report.json")
            def world(extra, script):
                t = time.perf_counter()
                subprocess.run([a.cloche, "run", *extra, "--report", rep, "--", "sh", "-c", script],
                               env=env, cwd=proj, check=True, stdout=subprocess.DEVNULL)
                return (time.perf_counter() - t) * 1000, json.load(open(rep))
            make = "for d in $(seq 100); do mkdir d$d; (cd d$d && seq 100 | xargs touch); done"
            for upper in ["disk", "tmpfs"]:
                for label, extra in [("without hashing", ["--no-hash"]), ("with sha256", [])]:
                    xs = []
                    for _ in range(5):
                        _, r = world(["--upper", upper, *extra], make)
                        assert r["fs_diff"]["totals"]["added"] == 10100, r["fs_diff"]["totals"]
                        xs.append(r["timings"]["diff_ms"])
                    print(f"fs_diff of 10,000 new files in 100 dirs, {upper}, {label}: "
                          f"median {statistics.median(xs):.2f} ms")
            big = "dd if=/dev/zero of=big bs=1M count=1024 status=none"
            for upper in ["disk", "tmpfs"]:
                runs = [world(["--upper", upper, "--no-hash"], big) for _ in range(5)]
                wall = statistics.median(w for w, _ in runs)
                tm = {k: statistics.median(r["timings"][k] for _, r in runs)
                      for k in ["run_ms", "diff_ms", "teardown_ms"]}
                print(f"1 GiB written (dd), {upper}: whole run median {wall:.0f} ms "
                      f"(command {tm['run_ms']:.0f} ms, fs_diff {tm['diff_ms']:.1f} ms, "
                      f"teardown {tm['teardown_ms']:.1f} ms)")
        rewrites(a.cloche, env, state)
    finally:
        remove_state(state)
        if before_state:
            remove_state(before_state)

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
