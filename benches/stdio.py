#!/usr/bin/env python3
"""The cost of a world's own stdio (pipes cloche copies), against bubblewrap,
which hands the command the caller's descriptors, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/stdio.py [--runs N] [--size BYTES] [--cloche PATH]

Prints medians (and ratios to bwrap) of whole-process wall-clock times for:
  1. `true` with stdio to /dev/null (the relay's set-up on a trivial run);
  2. a 1 GiB stream out: `head -c SIZE /dev/zero` to /dev/null, and piped
     into `wc -c` on the host;
  3. a 1 GiB stream in: `cat >/dev/null` reading a host file as stdin, and
     reading a host pipe (`head -c SIZE /dev/zero | ... cat`). (Not `wc -c`:
     given a regular file it only asks its size.)
Runs are interleaved (cloche, bwrap, cloche, ...). A last line measures, without
any world, what one more process copying a pipe costs (`| cat | cat` against
`| cat`): the floor of any relay. Nothing is asserted.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import bwrap_path, cloche_arg, preflight, remove_state, stats  # noqa: E402


def timed_sh(script, env, cwd):
    t = time.perf_counter()
    r = subprocess.run(["sh", "-c", script], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"`{script}` failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return dt, r.stdout.decode().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small-runs", type=int, default=100)
    ap.add_argument("--size", type=int, default=1 << 30)
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    bwrap = bwrap_path()
    work = tempfile.mkdtemp(prefix="cloche-bench-stdio-")
    state = tempfile.mkdtemp(prefix="cloche-bench-state-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    data = os.path.join(work, "data")
    with open(data, "wb") as f:
        f.truncate(a.size)  # sparse: the page cache, not the disk, is measured
    c = a.cloche
    bw = f"{bwrap} --ro-bind / / --dev /dev --proc /proc --unshare-all --die-with-parent"
    n = a.size
    cases = [
        ("true, stdio /dev/null", f"{c} run -- true </dev/null >/dev/null 2>&1",
         f"{bw} true </dev/null >/dev/null 2>&1", a.small_runs, None),
        ("1 GiB out to /dev/null", f"{c} run -- head -c {n} /dev/zero >/dev/null",
         f"{bw} head -c {n} /dev/zero >/dev/null", a.runs, None),
        ("1 GiB out to a pipe", f"{c} run -- head -c {n} /dev/zero | wc -c",
         f"{bw} head -c {n} /dev/zero | wc -c", a.runs, str(n)),
        ("1 GiB in from a file", f"{c} run -- cat <{data} >/dev/null",
         f"{bw} cat <{data} >/dev/null", a.runs, None),
        ("1 GiB in from a pipe", f"head -c {n} /dev/zero | {c} run -- cat >/dev/null",
         f"head -c {n} /dev/zero | {bw} cat >/dev/null", a.runs, None),
    ]
    try:
        for _ in range(3):
            timed_sh(cases[0][1], env, work)
            timed_sh(cases[0][2], env, work)
        print(f"{'case':28} {'cloche ms':>12} {'bwrap ms':>12} {'ratio':>7}")
        for name, cl, bwc, runs, expect in cases:
            xs, ys = [], []
            for _ in range(runs):
                for cmd, into in ((cl, xs), (bwc, ys)):
                    dt, out = timed_sh(cmd, env, work)
                    if expect is not None and out != expect:
                        sys.exit(f"`{cmd}` printed {out!r}, expected {expect}")
                    into.append(dt)
            (cm, _), (bm, _) = stats(xs), stats(ys)
            print(f"{name:28} {cm:12.1f} {bm:12.1f} {cm / bm:7.2f}")
        # What one more process copying a pipe costs without any world: the
        # floor for a relay (bwrap passes the caller's descriptors as they are).
        xs, ys = [], []
        for _ in range(a.runs):
            xs.append(timed_sh(f"head -c {n} /dev/zero | cat | cat >/dev/null", env, work)[0])
            ys.append(timed_sh(f"head -c {n} /dev/zero | cat >/dev/null", env, work)[0])
        (cm, _), (bm, _) = stats(xs), stats(ys)
        print(f"{'reference, no world:':28} {cm:12.1f} {bm:12.1f} {cm / bm:7.2f}"
              "   (`| cat | cat` against `| cat`: one more pipe hop)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_state(state)


if __name__ == "__main__":
    main()
