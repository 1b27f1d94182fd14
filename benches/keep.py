#!/usr/bin/env python3
"""What keeping a world costs: a world that writes 10,000 files of 4 KiB
(100 directories of 100), on disk (the default) and with `--upper tmpfs`
(kept worlds are moved to the disk pool), measured as whole processes:

  1. `cloche run` of that world without `--keep`, and with it (the
     difference is the cost of keeping: the world attached while it runs,
     a tmpfs upper copied into the pool, the pool synced around the
     `kept` marker); the engine's own teardown time from the report;
  2. `cloche diff ID --json` of the kept world (the fs_diff computed again
     from its upper, with sha256, and the review's flags);
  3. `cloche commit ID` into the project, against `cp -a` of the same tree
     (FIELD-NOTES: a commit is judged as a ratio to `cp -a`);
  4. the first command after a simulated reboot (the pool unmounted, its
     loop device detached): `cloche worlds list`, which attaches the pool
     again, against the same command with the pool attached;
  5. `cloche discard ID`.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/keep.py [--rounds N] [--cloche PATH]
Nothing is asserted: this is a measurement, not a test.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import cloche_arg, preflight, remove_state  # noqa: E402

WRITE = r"""
import os
for d in range(100):
    os.mkdir(f"d{d}")
    for f in range(100):
        with open(f"d{d}/f{f}", "wb") as fh:
            fh.write(os.urandom(4096))
"""

def timed(cmd, env, cwd=None, out=subprocess.DEVNULL):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return dt, r

def wait_detached(state):
    """Until no loop device is bound to a file of `state`."""
    for _ in range(400):
        bound = False
        for dev in os.listdir("/sys/block"):
            try:
                with open(f"/sys/block/{dev}/loop/backing_file") as f:
                    bound |= f.read().strip().startswith(state)
            except OSError:
                pass
        if not bound:
            return
        time.sleep(0.05)
    sys.exit("the pool's loop device stays bound")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    state = tempfile.mkdtemp(prefix="cloche-bench-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    rep = os.path.join(state, "report.json")
    rows = {}
    def add(k, v):
        rows.setdefault(k, []).append(v)
    try:
        timed([a.cloche, "run", "--", "true"], env)  # the pool made
        for r in range(a.rounds):
            for upper in ["disk", "tmpfs"]:
                for keep in [False, True]:
                    proj = tempfile.mkdtemp(prefix="cloche-bench-proj-")
                    try:
                        run = [a.cloche, "run", "--upper", upper, "--report", rep, *(["--keep"] if keep else []),
                               "--", "python3", "-c", WRITE]
                        dt, _ = timed(run, env, cwd=proj)
                        report = json.load(open(rep))
                        assert report["fs_diff"]["totals"]["added"] == 10100, report["fs_diff"]["totals"]
                        label = f"{upper}, {'--keep' if keep else 'not kept'}"
                        add(f"run ({label})", dt)
                        add(f"engine teardown ({label})", report["timings"]["teardown_ms"])
                        if not keep:
                            continue
                        wid = report["world"]
                        add(f"diff --json ({upper})", timed([a.cloche, "diff", wid, "--json"], env)[0])
                        add(f"worlds list, pool attached ({upper})", timed([a.cloche, "worlds", "list"], env)[0])
                        subprocess.run(["umount", os.path.join(state, "worlds")], check=True)
                        wait_detached(state)
                        add(f"worlds list, first after a reboot ({upper})",
                            timed([a.cloche, "worlds", "list"], env)[0])
                        add(f"commit ({upper})", timed([a.cloche, "commit", wid], env, cwd=proj)[0])
                        copy = tempfile.mkdtemp(prefix="cloche-bench-cp-")
                        try:
                            subprocess.run(["sync"], check=True)
                            add(f"cp -a of the same tree ({upper})",
                                timed(["cp", "-a", proj, os.path.join(copy, "p")], env)[0])
                        finally:
                            shutil.rmtree(copy)
                        add(f"discard ({upper})", timed([a.cloche, "discard", wid], env)[0])
                    finally:
                        shutil.rmtree(proj)
        print(f"A world writing 10,000 files of 4 KiB in 100 directories, medians of {a.rounds} rounds:")
        for k, xs in rows.items():
            print(f"  {k:48} {statistics.median(xs):9.1f} ms   (min {min(xs):.1f})")
    finally:
        remove_state(state)

if __name__ == "__main__":
    main()
