#!/usr/bin/env python3
"""cloched measured: status requests under load, idle memory, and a
one-command world through the daemon against bubblewrap in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/daemon.py [--runs N] [--cloched PATH] [--cloche PATH]

Prints:
  1. the daemon's resident memory when idle (the daemon, its spawner);
  2. latency of `GET /v1/batches/{id}` (a status request) idle, then under
     load: 20 clients (4 processes of 5 threads, each its own connection)
     submitting 200 batches and polling their status, p50 and p99;
  3. `POST /v1/run` of `true` through the daemon (Python's http.client on a
     kept connection, and `curl --unix-socket` as a whole process) against
     `bwrap --unshare-all ... true` and `cloche run -- true`, interleaved,
     medians and ratios to bwrap.
Nothing is asserted: this is a measurement, not a test.
"""
import argparse, http.client, json, multiprocessing, os, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release")


class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(self.path)
        self.sock = s


def call(c, method, path, body=None):
    c.request(method, path, body=None if body is None else json.dumps(body),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    return r.status, data


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(p))
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def loader(sock, project, threads, each, q):
    """One client process: `threads` connections, each submitting `each`
    batches and polling each one's status 3 times; status latencies out."""
    lat, errors = [], []
    lock = threading.Lock()

    def client():
        c = Conn(sock)
        for _ in range(each):
            st, data = call(c, "POST", "/v1/batches", {"project": project, "entries": [{"command": "true"}]})
            if st != 201:
                with lock:
                    errors.append(st)
                continue
            bid = json.loads(data)["id"]
            for _ in range(3):
                t = time.perf_counter()
                st, _ = call(c, "GET", "/v1/batches/" + bid)
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt)
                    if st != 200:
                        errors.append(st)

    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((lat, errors))


def timed(cmd, env):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--cloched", default=os.path.join(REL, "cloched"))
    ap.add_argument("--cloche", default=os.path.join(REL, "cloche"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    for b in (a.cloched, a.cloche):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: cargo build --release --workspace")
    bwrap = shutil.which("bwrap") or sys.exit("bwrap missing: bash .ci/setup")
    tmp = tempfile.mkdtemp(prefix="cloched-bench-")
    state, sock, project = os.path.join(tmp, "state"), os.path.join(tmp, "s.sock"), os.path.join(tmp, "proj")
    os.makedirs(project)
    env = dict(os.environ, CLOCHE_STATE_DIR=state, CLOCHE_LOG="warn")
    d = subprocess.Popen([a.cloched, "--socket", sock], env=env, stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        c = Conn(sock)
        call(c, "GET", "/v1/whoami")
        time.sleep(2)
        spawner = children(d.pid)
        print(f"idle RSS: cloched {rss_kb(d.pid) / 1024:.1f} MiB, spawner "
              f"{sum(rss_kb(p) for p in spawner) / 1024:.1f} MiB")

        st, data = call(c, "POST", "/v1/batches", {"project": project, "entries": [{"command": "true"}]})
        bid = json.loads(data)["id"]
        idle = []
        for _ in range(300):
            t = time.perf_counter()
            call(c, "GET", "/v1/batches/" + bid)
            idle.append((time.perf_counter() - t) * 1000)
        print(f"status request, idle (300): p50 {pct(idle, .5):.2f} ms, p99 {pct(idle, .99):.2f} ms")

        q = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=loader, args=(sock, project, 5, 10, q)) for _ in range(4)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        lat, errors = [], []
        for _ in procs:
            l, e = q.get()
            lat += l
            errors += e
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        print(f"under load (20 clients, 200 submissions, {len(lat)} status requests, {wall:.1f} s, "
              f"{len(errors)} errors): status p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, "
              f"max {max(lat):.2f} ms")
        print(f"RSS after the load: cloched {rss_kb(d.pid) / 1024:.1f} MiB")

        body = {"argv": ["true"], "cwd": project}
        curl = ["curl", "-q", "-s", "-f", "-o", "/dev/null", "--unix-socket", sock, "-H",
                "Content-Type: application/json", "-d", json.dumps(body), "http://localhost/v1/run"]
        tools = {
            "POST /v1/run (http.client, kept connection)": None,
            "POST /v1/run (curl process)": curl,
            "cloche run -- true": [a.cloche, "run", "--", "true"],
            "bwrap ... true": [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                               "--die-with-parent", "true"],
        }
        times = {k: [] for k in tools}
        c = Conn(sock)
        for _ in range(a.runs):
            for name, cmd in tools.items():
                if cmd is None:
                    t = time.perf_counter()
                    st, data = call(c, "POST", "/v1/run", body)
                    times[name].append((time.perf_counter() - t) * 1000)
                    if st != 200:
                        sys.exit(f"POST /v1/run: {st} {data[:200]}")
                else:
                    times[name].append(timed(cmd, env))
        base = statistics.median(times["bwrap ... true"])
        print(f"run -- true, interleaved, median of {a.runs}:")
        for name, xs in times.items():
            m = statistics.median(xs)
            print(f"  {name:<45} {m:7.2f} ms  {m / base:.2f}x bwrap")
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait()
        worlds = os.path.join(state, "worlds")
        if os.path.ismount(worlds):
            subprocess.run(["umount", "-l", worlds], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
