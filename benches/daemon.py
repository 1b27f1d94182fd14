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
     kept connection, `curl --unix-socket` as a whole process, and `cloche
     run -- true` with `CLOCHE_SOCKET` naming the daemon) against `bwrap
     --unshare-all ... true` and `cloche run -- true` working in its own
     process (embedded: no socket named), interleaved,
     medians and ratios to bwrap; with `--premade N`, the daemon keeps up
     to N pre-made worlds (`[premade] worlds = N`): a warm-up run first,
     then each POST served by a world made ahead (counted), with a pause
     after it for the next one to be made (not timed);
  4. submit-to-first-output: an auto-approved (autonomy token) one-entry
     batch `echo hi` submitted, run, and its first `output` event received
     on an event stream (`GET /v1/events`, opened beforehand) against
     `cloche run -- echo hi` (its first byte on stdout, and its whole
     process) and against the same batch without the daemon (`cloche batch
     submit`, `cloche batch run` to its first byte), interleaved, medians
     and p90.
Nothing is asserted: this is a measurement, not a test.
"""
import argparse, http.client, json, multiprocessing, os, shutil, signal, socket, statistics, subprocess, sys
import queue, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import release_mounts  # noqa: E402  (shared by every bench)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release")


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


def loader(sock, project, threads, each, q, uid):
    """One client process as `uid` (an agent: budgets count per agent):
    `threads` connections, each submitting `each` batches and polling each
    one's status 3 times; status latencies out."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    lat, errors = [], []
    lock = threading.Lock()

    def client():
        c = Conn(sock)
        for _ in range(each):
            st, data = call(c, "POST", "/v1/batches", {"project": project, "entries": [{"command": "true"}]})
            if st != 201:
                with lock:
                    errors.append((st, data[:160].decode(errors="replace")))
                continue
            bid = json.loads(data)["id"]
            for _ in range(3):
                t = time.perf_counter()
                st, _ = call(c, "GET", "/v1/batches/" + bid)
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt)
                    if st != 200:
                        errors.append((st, ""))

    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((lat, errors))


class Events(threading.Thread):
    """A subscriber of GET /v1/events: (time, kind, batch) of each frame
    into a queue as it arrives."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.c = Conn(sock)
        self.c.request("GET", "/v1/events")
        self.r = self.c.getresponse()
        assert self.r.status == 200, self.r.status
        assert self.r.readline().startswith(b": subscribed")
        self.q = queue.Queue()

    def run(self):
        kind = None
        while True:
            line = self.r.readline()
            if not line:
                return
            if line.startswith(b"event: "):
                kind = line[7:].strip().decode()
            elif line.startswith(b"data: "):
                t = time.perf_counter()
                self.q.put((t, kind, json.loads(line[6:])["batch"]))

    def wait(self, batch, kind):
        while True:
            t, k, b = self.q.get(timeout=60)
            if b == batch and k == kind:
                return t


def first_output(sock, project, token, ev):
    """Submit, run, first `output` frame: ms for each step from the submit."""
    c = Conn(sock)
    t0 = time.perf_counter()
    c.request("POST", "/v1/batches", body=json.dumps({"project": project, "entries": [{"command": "echo hi"}]}),
              headers={"Content-Type": "application/json", "X-Cloche-Autonomy-Token": token})
    r = c.getresponse()
    v = json.loads(r.read())
    if r.status != 201 or v["state"] != "approved":
        sys.exit(f"submit: {r.status} {v}")
    t1 = time.perf_counter()
    st, data = call(c, "POST", f"/v1/batches/{v['id']}/run")
    if st != 202:
        sys.exit(f"run: {st} {data[:200]}")
    t2 = time.perf_counter()
    t3 = ev.wait(v["id"], "output")
    ev.wait(v["id"], "run_ended")
    call(c, "POST", f"/v1/batches/{v['id']}/discard")
    return [(t - t0) * 1000 for t in (t1, t2, t3)]


def cli_first_output(cloche, bfile, env):
    """The same batch without the daemon: `cloche batch submit` (the token
    from the environment), then `cloche batch run` to the first byte of
    the entry's output; ms of each from the start. The world discarded."""
    t = time.perf_counter()
    bid = subprocess.run([cloche, "batch", "submit", bfile], env=env, capture_output=True, check=True)
    bid = bid.stdout.decode().strip()
    t1 = time.perf_counter()
    p = subprocess.Popen([cloche, "batch", "run", bid], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.read(1)
    t2 = time.perf_counter()
    p.stdout.read()
    p.wait()
    subprocess.run([cloche, "discard", bid], env=env, capture_output=True)
    return (t1 - t) * 1000, (t2 - t) * 1000


def first_byte(cmd, env, cwd):
    """ms to the first byte of `cmd`'s stdout, and to its exit."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.read(1)
    t1 = time.perf_counter()
    p.stdout.read()
    if p.wait() != 0:
        sys.exit(f"{cmd} failed")
    return (t1 - t) * 1000, (time.perf_counter() - t) * 1000


def prober(sock, bid, stop, q):
    """A single-threaded client of its own (no other Python thread to wait
    for: the loaders' own figures include waits for their GIL) polling
    one batch's status every millisecond until `stop`."""
    c, lat = Conn(sock), []
    while not stop.is_set():
        t = time.perf_counter()
        st, _ = call(c, "GET", "/v1/batches/" + bid)
        lat.append((time.perf_counter() - t) * 1000)
        if st != 200:
            sys.exit(f"status: {st}")
        time.sleep(0.001)
    q.put(lat)


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
    ap.add_argument("--load-rounds", type=int, default=3)
    ap.add_argument("--daemon-log", metavar="PATH", help="keep the daemon's log (JSON lines) there")
    ap.add_argument("--log-filter", default="warn", help="the daemon's CLOCHE_LOG (default warn)")
    ap.add_argument("--premade", type=int, default=0, help="[premade] worlds of the daemon (0: none)")
    ap.add_argument("--parts", default="load,run,first-output",
                    help="which measurements (comma-separated: load, run, first-output)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if os.geteuid() != 0:
        sys.exit("run as root")
    for b in (a.cloched, a.cloche):
        if not os.path.exists(b):
            sys.exit(f"{b} missing: cargo build --release --workspace")
    bwrap = shutil.which("bwrap") or sys.exit("bwrap missing: bash .ci/setup")
    tmp = tempfile.mkdtemp(prefix="cloched-bench-")
    state, sock, project = os.path.join(tmp, "state"), os.path.join(tmp, "s.sock"), os.path.join(tmp, "proj")
    os.makedirs(project)
    os.chmod(tmp, 0o755)  # the agents' project
    env = dict(os.environ, CLOCHE_STATE_DIR=state, CLOCHE_LOG="warn")
    log = a.daemon_log or os.path.join(tmp, "log")
    args = [a.cloched, "--socket", sock]
    if a.premade:
        conf = os.path.join(tmp, "cloched.toml")
        with open(conf, "w") as f:
            f.write(f"[premade]\nworlds = {a.premade}\n")
        args += ["--config", conf]
    d = subprocess.Popen(args, env=dict(env, CLOCHE_LOG=a.log_filter), stderr=open(log, "w"))
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

        for rnd in range(a.load_rounds if "load" in parts else 0):
            q, pq, stop = multiprocessing.Queue(), multiprocessing.Queue(), multiprocessing.Event()
            # Four agents per round, new ones each round (the hourly budget of batches).
            procs = [multiprocessing.Process(target=loader, args=(sock, project, 5, 10, q, 64200 + 4 * rnd + i))
                     for i in range(4)]
            probe = multiprocessing.Process(target=prober, args=(sock, bid, stop, pq))
            probe.start()
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
            stop.set()
            plat = pq.get()
            probe.join()
            print(f"under load, round {rnd + 1} (20 clients, 200 submissions, {len(lat)} status requests, "
                  f"{wall:.1f} s, {len(errors)} errors):")
            if errors:
                sys.exit(f"errors under load (a budget? the batches of a round count against the hour's): "
                         f"{errors[:3]}")
            print(f"  status, as the loading clients see it: p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, "
                  f"max {max(lat):.2f} ms")
            print(f"  status, a prober of its own ({len(plat)}): p50 {pct(plat, .5):.2f} ms, "
                  f"p99 {pct(plat, .99):.2f} ms, max {max(plat):.2f} ms")
        print(f"RSS after the load: cloched {rss_kb(d.pid) / 1024:.1f} MiB")

        if "run" in parts:
            run_true(a, sock, project, env, bwrap)
        if "first-output" in parts:
            submit_to_first_output(a, sock, project, env)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait()
        release_mounts(state)
        shutil.rmtree(tmp, ignore_errors=True)


def run_true(a, sock, project, env, bwrap):
    body = {"argv": ["true"], "cwd": project}
    curl = ["curl", "-q", "-s", "-f", "-o", "/dev/null", "--unix-socket", sock, "-H",
            "Content-Type: application/json", "-d", json.dumps(body), "http://localhost/v1/run"]
    tools = {
        "POST /v1/run (http.client, kept connection)": None,
        "POST /v1/run (curl process)": curl,
        "cloche run -- true (through the daemon)": [a.cloche, "run", "--", "true"],
        "cloche run -- true (embedded)": [a.cloche, "run", "--", "true"],
        "bwrap ... true": [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                           "--die-with-parent", "true"],
    }
    times = {k: [] for k in tools}
    c = Conn(sock)
    premade = 0
    if a.premade:
        call(c, "POST", "/v1/run", body)  # the shape's first run: a standby is made after it
        time.sleep(0.2)
    for _ in range(a.runs):
        for name, cmd in tools.items():
            if cmd is None:
                t = time.perf_counter()
                st, data = call(c, "POST", "/v1/run", body)
                times[name].append((time.perf_counter() - t) * 1000)
                if st != 200:
                    sys.exit(f"POST /v1/run: {st} {data[:200]}")
                premade += json.loads(data).get("premade") is True
            elif "daemon" in name:
                # As a user runs it: the socket named, no state directory
                # named (which would add a round trip to check it).
                via = {k: v for k, v in env.items() if k != "CLOCHE_STATE_DIR"}
                times[name].append(timed(cmd, dict(via, CLOCHE_SOCKET=sock)))
            else:
                times[name].append(timed(cmd, env))
            if a.premade and ("POST" in name or "daemon" in name):
                time.sleep(0.05)  # the next standby is made (not timed)
    if a.premade:
        print(f"POST /v1/run served by a pre-made world: {premade} of {a.runs}")
    base = statistics.median(times["bwrap ... true"])
    print(f"run -- true, interleaved, median of {a.runs}:")
    for name, xs in times.items():
        m = statistics.median(xs)
        print(f"  {name:<45} {m:7.2f} ms  {m / base:.2f}x bwrap")


def submit_to_first_output(a, sock, project, env):
    """Submit-to-first-output, against `cloche run -- echo hi`."""
    out = subprocess.run([a.cloche, "autonomy", "enable", project, "--json"], env=env, capture_output=True)
    if out.returncode != 0:
        sys.exit(f"cloche autonomy enable: {out.stderr.decode(errors='replace')}")
    token = json.loads(out.stdout)["token"]
    ev = Events(sock)
    ev.start()
    bfile = os.path.join(os.path.dirname(project), "batch.json")
    with open(bfile, "w") as f:
        json.dump({"project": project, "entries": [{"command": "echo hi"}]}, f)
    daemon_ms, cloche_first, cloche_all, cli_ms = [], [], [], []
    for _ in range(a.runs):
        daemon_ms.append(first_output(sock, project, token, ev))
        f, w = first_byte([a.cloche, "run", "--", "echo", "hi"], env, project)
        cloche_first.append(f)
        cloche_all.append(w)
        cli_ms.append(cli_first_output(a.cloche, bfile, dict(env, CLOCHE_AUTONOMY_TOKEN=token)))
    print(f"submit-to-first-output of `echo hi`, interleaved, median (p90) of {a.runs}:")
    for i, name in enumerate(["submitted (201, approved by the token)", "run started (202)",
                              "first output event on the stream"]):
        xs = [x[i] for x in daemon_ms]
        print(f"  daemon: {name:<45} {statistics.median(xs):7.2f} ms ({pct(xs, .9):.2f})")
    print(f"  cloche run -- echo hi: first byte on stdout        {statistics.median(cloche_first):7.2f} ms "
          f"({pct(cloche_first, .9):.2f})")
    print(f"  cloche run -- echo hi: whole process               {statistics.median(cloche_all):7.2f} ms "
          f"({pct(cloche_all, .9):.2f})")
    for i, name in enumerate(["submitted (its process ended)", "first byte of the entry's output"]):
        xs = [x[i] for x in cli_ms]
        print(f"  no daemon, cloche batch submit + run: {name:<33} {statistics.median(xs):7.2f} ms "
              f"({pct(xs, .9):.2f})")


if __name__ == "__main__":
    main()
