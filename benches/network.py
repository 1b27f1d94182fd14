#!/usr/bin/env python3
"""A scoped network's cost, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/network.py [--runs N] [--cloche PATH]

Prints medians (and 90th percentiles) of `cloche run --net none -- true`,
`cloche run --net allow=198.51.100.10:8080 -- true` and, with an allowed
name and an IPv6 destination, `--net allow=svc.test:443,[2001:db8::10]:443`
(sets for the name, cloche's resolver on the world's loopback; its
upstream, 198.51.100.53, is never asked), interleaved in a shuffled order
each round (`--seed`), and the ratios. The
allowed addresses need no host behind them: the world's veth, addresses,
routes and ruleset are set up either way (targets: under 15 ms, at most 2x
`--net none`). Nothing is asserted: a measurement, not a test.
"""
import argparse, os, random, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import cloche_arg, preflight, remove_state, timed  # noqa: E402  (shared by every bench)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1, help="the shuffle's seed (the order of each round)")
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    state = tempfile.mkdtemp(prefix="cloche-bench-net-")
    env = dict(os.environ, CLOCHE_STATE_DIR=state, CLOCHE_DNS_UPSTREAM="198.51.100.53:53")
    runs = [
        ("--net none", [a.cloche, "run", "--net", "none", "--", "true"]),
        ("--net allow=198.51.100.10:8080", [a.cloche, "run", "--net", "allow=198.51.100.10:8080", "--", "true"]),
        ("--net allow=svc.test:443,[v6]:443",
         [a.cloche, "run", "--net", "allow=svc.test:443,[2001:db8::10]:443", "--", "true"]),
    ]
    times = {label: [] for label, _ in runs}
    try:
        for _ in range(5):  # warm the seccomp cache and the host's one-time set-up
            for _, cmd in runs:
                timed(cmd, env)
        # Shuffled each round: a world's network namespace dies in a kernel
        # worker after it ends, so in a fixed order each row would always
        # follow the same other row's teardown (measured here: the address
        # row 1.42-1.46x in a fixed order, 1.24-1.25x shuffled).
        rng = random.Random(a.seed)
        for _ in range(a.runs):
            for label, cmd in rng.sample(runs, len(runs)):
                times[label].append(timed(cmd, env))
    finally:
        remove_state(state)
    p90 = lambda v: sorted(v)[int(0.9 * (len(v) - 1))]
    base = statistics.median(times["--net none"])
    print(f"{'cloche run ... -- true':40} {'median':>8} {'p90':>8}")
    for label, _ in runs:
        m = statistics.median(times[label])
        extra = "" if label == "--net none" else f"   {m / base:.2f}x --net none (targets < 15 ms, <= 2x)"
        print(f"{label:40} {m:8.2f} {p90(times[label]):8.2f} ms{extra}")
    print(f"{a.runs} runs each, interleaved, in a shuffled order each round (seed {a.seed})")

if __name__ == "__main__":
    main()
