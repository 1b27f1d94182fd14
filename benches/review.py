#!/usr/bin/env python3
"""Reviewing a kept world: `cloche diff` and `cloche commit` of many new files.

Usage (root, after `cargo build --release -p cloche-cli -p cloche-init`):
    python3 benches/review.py [--files N] [--reps N] [--diff-runs N] [--cloche PATH]

A kept world writes N new files of 4 KiB (default 10,000, in 100 directories
of 100) into a fresh project directory. Measured, as wall-clock times of
whole processes:
  1. `cloche diff ID --stat` and `cloche diff ID --name-status` on one world,
     interleaved, --diff-runs times each (target: under 100 ms);
  2. `cloche commit ID` on --reps separate worlds (each with its own fresh
     project directory), interleaved with its floor, `cp -a` of the same tree
     from a plain host directory into a fresh directory on the same
     filesystem (target: under 1 s). Commit syncs what it wrote (syncfs) and
     cp -a does not, so `cp -a` followed by `sync -f` is printed as well.
Dirty pages are flushed (untimed) before each timed run, so no run pays for
the writeback of another. Prints medians and ratios; asserts nothing.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import cloche_arg, preflight, remove_state  # noqa: E402  (shared by every bench)

def timed(cmd, env, cwd=None):
    """Wall time of one whole process in ms; exits if it fails."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return dt

def mounts_under(path):
    """Mount points at or below path, deepest first (from /proc/mounts)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True)

def count_files(top):
    return sum(len(files) for _, _, files in os.walk(top))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000, help="new files in the world (default 10000)")
    ap.add_argument("--reps", type=int, default=5, help="commit repetitions, one world each (default 5)")
    ap.add_argument("--diff-runs", type=int, default=20, help="runs of each diff form (default 20)")
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    if a.files < 1 or a.reps < 1 or a.diff_runs < 1:
        sys.exit("--files, --reps and --diff-runs must be positive")
    # 100 directories of 100 files by default; fewer directories for small N.
    ndirs = min(100, max(1, a.files // 100))
    per = a.files // ndirs
    nfiles = ndirs * per
    make = (f"for d in $(seq {ndirs}); do mkdir d$d; for f in $(seq {per}); do "
            f"head -c 4096 /dev/urandom > d$d/f$f; done; done")

    state = tempfile.mkdtemp(prefix="cloche-bench-state-")
    temps = []  # every other temp dir (projects, cp source and destinations)
    env = dict(os.environ, CLOCHE_STATE_DIR=state)

    def tmp(prefix):
        d = tempfile.mkdtemp(prefix=prefix)
        temps.append(d)
        return d

    def new_world(tries=5):
        """A fresh project dir and a kept world that wrote the files into it."""
        proj = tmp("cloche-bench-proj-")
        for _ in range(tries):
            r = subprocess.run([a.cloche, "run", "--keep", "--cwd", proj, "--", "sh", "-c", make],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            err = r.stderr.decode(errors="replace")
            m = re.search(r"cloche: kept world (\S+) at", err)
            if r.returncode == 0 and m:
                return proj, m.group(1)
            if r.returncode != 128 + 9 or not m:
                break
            # SIGKILLed from outside (builds before 2098a83 swept the cgroups
            # of worlds live under another state dir). Drop the partial world
            # and try again.
            print("warning: world killed (SIGKILL) while writing its files, retrying; "
                  "is another cloche running?", file=sys.stderr)
            discard(m.group(1))
        sys.exit(f"cloche run --keep failed ({r.returncode}): {err.strip()}")

    def discard(wid):
        r = subprocess.run([a.cloche, "discard", wid], env=env, capture_output=True)
        if r.returncode != 0:
            print(f"warning: cloche discard {wid}: {r.stderr.decode(errors='replace').strip()}", file=sys.stderr)

    try:
        print(f"setup: kept worlds holding {nfiles} new files of 4 KiB ({ndirs} dirs of {per}); "
              f"{a.reps} worlds, one per commit")
        diff_ms = {"--stat": [], "--name-status": []}
        commit_ms, cp_ms, sync_ms = [], [], []
        src = None
        for rep in range(a.reps):
            proj, wid = new_world()
            upper = os.path.join(state, "worlds", wid, "fs", "upper")
            if rep == 0:
                # The cp -a source: a plain host directory with the same files
                # (copied out of the world's upper layer, untimed).
                src = os.path.join(tmp("cloche-bench-src-"), "tree")
                shutil.copytree(upper + proj, src)
                assert count_files(src) == nfiles, count_files(src)
                # Sanity (untimed): diff sees every file and directory as added.
                out = subprocess.run([a.cloche, "diff", wid, "--stat"], env=env,
                                     capture_output=True, check=True).stdout.decode()
                m = re.search(r"changes: (\d+) added", out)
                assert m and int(m.group(1)) == nfiles + ndirs, out[:300]
                # 1. diff, both forms interleaved, on this one world (before its commit).
                for _ in range(2):  # warm-up
                    for form in diff_ms:
                        timed([a.cloche, "diff", wid, form], env)
                for _ in range(a.diff_runs):
                    for form in diff_ms:
                        diff_ms[form].append(timed([a.cloche, "diff", wid, form], env))
            # 2. commit vs cp -a, alternating which goes first.
            dst = tmp("cloche-bench-cp-")  # fresh, on the same filesystem as proj
            def do_commit():
                os.sync()
                commit_ms.append(timed([a.cloche, "commit", wid], env))
            def do_cp():
                os.sync()
                cp_ms.append(timed(["cp", "-a", src + "/.", dst], env))
                sync_ms.append(timed(["sync", "-f", dst], env))
            for step in ((do_commit, do_cp) if rep % 2 == 0 else (do_cp, do_commit)):
                step()
            # Both really wrote the tree (untimed).
            assert count_files(proj) == nfiles, ("commit", count_files(proj))
            assert count_files(dst) == nfiles, ("cp", count_files(dst))
            discard(wid)
            # Free the disk space of this repetition before the next one.
            shutil.rmtree(proj, ignore_errors=True)
            shutil.rmtree(dst, ignore_errors=True)

        med = statistics.median
        c, cp = med(commit_ms), med(cp_ms)
        cps = med([x + y for x, y in zip(cp_ms, sync_ms)])
        rows = [
            (f"cloche diff --stat ({a.diff_runs} runs)", med(diff_ms["--stat"]), "< 100 ms", ""),
            (f"cloche diff --name-status ({a.diff_runs} runs)", med(diff_ms["--name-status"]), "< 100 ms", ""),
            (f"cloche commit ({a.reps} worlds)", c, "< 1000 ms", f"{c / cp:.2f}x"),
            (f"cp -a (floor, {a.reps} runs)", cp, "", "1.00x"),
            (f"cp -a + sync -f ({a.reps} runs)", cps, "", f"{cps / cp:.2f}x"),
        ]
        print(f"{'operation':<38} {'median ms':>10}  {'target':<10} {'vs cp -a':>8}")
        for name, ms, target, ratio in rows:
            print(f"{name:<38} {ms:>10.1f}  {target:<10} {ratio:>8}")
        print(f"ratio commit/cp -a: {c / cp:.2f}x   commit/(cp -a + sync -f): {c / cps:.2f}x")
    finally:
        # Discard every world still kept (this unmounts its tmpfs) ...
        try:
            r = subprocess.run([a.cloche, "worlds", "list", "--json"], env=env, capture_output=True)
            for w in json.loads(r.stdout or b'{"worlds": []}')["worlds"]:
                discard(w["id"])
        except (ValueError, KeyError, TypeError) as e:
            print(f"warning: cannot list worlds: {e}", file=sys.stderr)
        # ... then remove the state dir only if nothing is mounted below it.
        for p in mounts_under(state):
            subprocess.run(["umount", p], check=False)
        left = mounts_under(state)
        if left:
            print(f"warning: still mounted, {state} left in place: {left}", file=sys.stderr)
        else:
            remove_state(state)
        for d in temps:
            shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    main()
