#!/usr/bin/env python3
"""Worlds that last across calls: what continuing and forking a kept world
cost, measured as whole processes.

  1. the start of a continued run: `cloche run --world ID -- CMD` against
     a fresh `cloche run -- CMD` and a fresh `cloche run --keep -- CMD`,
     interleaved (the order rotating), back to back, CMD printing the
     clock (`date +%s%N`): the start is from `cloche`'s exec to the
     command's clock, the whole from exec to `cloche`'s exit; the
     continued world is a small one, then one of 10,000 files (its size
     must not matter to the start: nothing walks its files before the
     world starts; its end computes the whole world's fs_diff);
  2. `cloche worlds fork ID` of a world of 10,000 files of 4 KiB (a btrfs
     snapshot, its work directories cleared, two syncs), then a run that
     continues the fork, and `cloche discard` of the fork.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/session.py [--runs N] [--rounds N] [--cloche PATH]
Nothing is asserted: this is a measurement, not a test.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import cloche_arg, preflight, remove_state  # noqa: E402
from keep import WRITE, timed  # noqa: E402


def kept(cloche, env, cwd, rep, cmd):
    """A kept world made by `cmd`: its id."""
    timed([cloche, "run", "--keep", "--report", rep, "--", *cmd], env, cwd=cwd)
    with open(rep) as f:
        return json.load(f)["world"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60, help="starts of each kind")
    ap.add_argument("--rounds", type=int, default=5, help="forks of the 10,000-file world")
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    state = tempfile.mkdtemp(prefix="cloche-bench-")
    proj = tempfile.mkdtemp(prefix="cloche-bench-proj-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state, CLOCHE_SOCKET="")
    rep = os.path.join(state, "report.json")
    try:
        c = a.cloche
        timed([c, "run", "--", "true"], env, cwd=proj)  # the pool made
        small = kept(c, env, proj, rep, ["sh", "-c", "echo x > f"])
        big = kept(c, env, proj, rep, ["python3", "-c", WRITE])
        clock = ["date", "+%s%N"]
        kinds = {
            "fresh: run": [c, "run", "--", *clock],
            "fresh: run --keep (then discarded)": [c, "run", "--keep", "--report", rep, "--", *clock],
            "continued: run --world SMALL": [c, "run", "--world", small, "--", *clock],
            "continued: run --world BIG (10,000 files)": [c, "run", "--world", big, "--", *clock],
        }
        times = {k: [] for k in kinds}
        starts = {k: [] for k in kinds}
        names = list(kinds)
        for i in range(a.runs):
            for k in names[i % len(names):] + names[: i % len(names)]:
                cmd = kinds[k]
                if "--report" not in cmd:
                    cmd = cmd[:2] + ["--report", rep] + cmd[2:]
                t0 = time.time_ns()
                dt, out = timed(cmd, env, cwd=proj, out=subprocess.PIPE)
                starts[k].append((int(out.stdout.split()[0]) - t0) / 1e6)
                times[k].append(dt)
                if "--keep" in cmd:
                    with open(rep) as f:
                        timed([c, "discard", json.load(f)["world"]], env, cwd=proj)
        base = statistics.median(starts[names[0]]), statistics.median(times[names[0]])
        print(f"{a.runs} each, interleaved: medians (first quartiles) in ms, and ratios to a fresh run")
        print(f"  {'':44} {'start':>17} {'':>6} {'whole':>17}")
        for k in names:
            s, w = starts[k], times[k]
            ms, mw = statistics.median(s), statistics.median(w)
            qs, qw = statistics.quantiles(s, n=4)[0], statistics.quantiles(w, n=4)[0]
            print(f"  {k:44} {ms:7.2f} ({qs:7.2f}) {ms / base[0]:5.2f}x {mw:7.2f} ({qw:7.2f}) {mw / base[1]:5.2f}x")
        fork, cont, disc = [], [], []
        for _ in range(a.rounds):
            dt, r = timed([c, "worlds", "fork", big], env, cwd=proj, out=subprocess.PIPE)
            fid = r.stdout.decode().strip()
            fork.append(dt)
            dt, _ = timed([c, "run", "--world", fid, "--", "sh", "-c", "ls d0 | wc -l"], env, cwd=proj)
            cont.append(dt)
            dt, _ = timed([c, "discard", fid], env, cwd=proj)
            disc.append(dt)
        print(f"a world of 10,000 files of 4 KiB, {a.rounds} rounds (median, min):")
        for name, xs in [("worlds fork", fork), ("a run continuing the fork", cont), ("discard of the fork", disc)]:
            print(f"  {name:52} {statistics.median(xs):7.1f} ms  (min {min(xs):.1f})")
        for w in [small, big]:
            timed([c, "discard", w], env, cwd=proj)
    finally:
        remove_state(state)
        subprocess.run(["rm", "-rf", proj])


if __name__ == "__main__":
    main()
