#!/usr/bin/env python3
"""A batch of 10 trivial entries in one world vs 10 separate `cloche run`.

Usage (root, after `cargo build --release --workspace`): python3 benches/batch.py [--rounds N]
Prints medians; asserts nothing.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import cloche_arg, preflight, remove_state  # noqa: E402  (shared by every bench)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    state = tempfile.mkdtemp(prefix="cloche-bench-state-")
    proj = tempfile.mkdtemp(prefix="cloche-bench-proj-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    c = a.cloche
    def run(*args):
        r = subprocess.run([c, *args], env=env, cwd=proj, capture_output=True)
        if r.returncode != 0:
            sys.exit(f"{args}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode().strip()
    try:
        batch_ms, runs_ms = [], []
        for _ in range(a.rounds):
            b = {"agent": "bench", "project": proj, "entries": [{"command": "true"}] * 10}
            path = os.path.join(state, "b.json")
            json.dump(b, open(path, "w"))
            bid = run("batch", "submit", path)
            run("batch", "approve", bid)
            t = time.perf_counter(); run("batch", "run", bid); batch_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            for _ in range(10):
                run("run", "--", "true")
            runs_ms.append((time.perf_counter() - t) * 1e3)
            # drop the kept world
            for w in os.listdir(os.path.join(state, "worlds")):
                d = os.path.join(state, "worlds", w)
                subprocess.run(["umount", "-l", os.path.join(d, "fs")], check=False)
                shutil.rmtree(d, ignore_errors=True)
        bm, rm = statistics.median(batch_ms), statistics.median(runs_ms)
        print(f"batch of 10 `true` (cloche batch run, one world): median {bm:.1f} ms")
        print(f"10 x cloche run -- true:                          median {rm:.1f} ms")
        print(f"ratio batch/runs: {bm / rm:.2f}x")
    finally:
        remove_state(state)
        shutil.rmtree(proj, ignore_errors=True)

if __name__ == "__main__":
    main()
