#!/usr/bin/env python3
"""A scoped network's cost, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/network.py [--runs N] [--cloche PATH]

Prints medians (and 90th percentiles) of `cloche run --net none -- true`
and `cloche run --net allow=198.51.100.10:8080 -- true`, interleaved, and
their ratio. The allowed address needs no host behind it: the world's veth,
addresses, route and ruleset are set up either way (targets: under 15 ms,
at most 2x `--net none`). Nothing is asserted: a measurement, not a test.
"""
import argparse, os, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import timed  # noqa: E402  (one timer for every bench)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--cloche", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "cloche"))
    a = ap.parse_args()
    state = tempfile.mkdtemp(prefix="cloche-bench-net-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state)
    none = [a.cloche, "run", "--net", "none", "--", "true"]
    scoped = [a.cloche, "run", "--net", "allow=198.51.100.10:8080", "--", "true"]
    try:
        for _ in range(5):  # warm the seccomp cache and the host's one-time set-up
            timed(none, env)
            timed(scoped, env)
        xs, ys = [], []
        for _ in range(a.runs):
            xs.append(timed(none, env))
            ys.append(timed(scoped, env))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    p90 = lambda v: sorted(v)[int(0.9 * (len(v) - 1))]
    mx, my = statistics.median(xs), statistics.median(ys)
    print(f"{'':40} {'median':>8} {'p90':>8}")
    print(f"{'cloche run --net none -- true':40} {mx:8.2f} {p90(xs):8.2f} ms")
    print(f"{'cloche run --net allow=... -- true':40} {my:8.2f} {p90(ys):8.2f} ms   (target < 15 ms)")
    print(f"ratio scoped/none: {my / mx:.2f}x (target <= 2x), {a.runs} runs each, interleaved")

if __name__ == "__main__":
    main()
