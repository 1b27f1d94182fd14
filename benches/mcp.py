#!/usr/bin/env python3
"""cloche mcp measured: the `run` tool of `true` (a client's call to its
answer, over stdio, through cloched) against `cloche run -- true` (a whole
process, embedded and through the same daemon), interleaved in the same
run; and the MCP server's idle resident memory.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/mcp.py [--runs N] [--bin DIR]

The client is a few lines of JSON-RPC over the server's pipes (no SDK:
its own cost is not the server's). A daemon is started on a temporary
socket with a temporary state directory. Nothing is asserted.
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import release_mounts  # noqa: E402  (shared by every bench)

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=40)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../target/x86_64-unknown-linux-musl/release"))
a = ap.parse_args()
cloche, cloched = os.path.abspath(os.path.join(a.bin, "cloche")), os.path.abspath(os.path.join(a.bin, "cloched"))

tmp = tempfile.mkdtemp(prefix="cloche-bench-mcp-")
state, sock, proj = os.path.join(tmp, "state"), os.path.join(tmp, "s.sock"), os.path.join(tmp, "proj")
os.makedirs(proj)
env = {**os.environ, "CLOCHE_STATE_DIR": state}
env.pop("CLOCHE_SOCKET", None)
d = subprocess.Popen([cloched, "--socket", sock], env={**env, "CLOCHE_LOG": "warn"}, stdin=subprocess.DEVNULL)
while not os.path.exists(sock):
    time.sleep(0.01)
time.sleep(0.2)

srv = None
try:
    srv = subprocess.Popen([cloche, "mcp", "--socket", sock, "--project", proj], env=env, cwd=proj,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    ids = iter(range(1, 1 << 30))

    def rpc(method, params, notify=False):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notify:
            msg["id"] = next(ids)
        srv.stdin.write((json.dumps(msg) + "\n").encode())
        if notify:
            return None
        while True:
            line = json.loads(srv.stdout.readline())
            if line.get("id") == msg["id"]:
                return line

    rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    rpc("notifications/initialized", {}, notify=True)
    time.sleep(0.5)

    def rss(pid):
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) / 1024

    idle = rss(srv.pid)

    def tool():
        t = time.perf_counter()
        r = rpc("tools/call", {"name": "run", "arguments": {"command": "true"}})
        assert r["result"]["structuredContent"]["exit_code"] == 0, r
        return time.perf_counter() - t

    def whole(extra_env):
        t = time.perf_counter()
        subprocess.run([cloche, "run", "--", "true"], env={**env, **extra_env}, cwd=proj, check=True)
        return time.perf_counter() - t

    tool(); whole({"CLOCHE_SOCKET": ""})
    res = {"mcp run tool": [], "cloche run (embedded)": [], "cloche run (via cloched)": []}
    for i in range(a.runs):
        order = [("mcp run tool", tool), ("cloche run (embedded)", lambda: whole({"CLOCHE_SOCKET": ""})),
                 ("cloche run (via cloched)", lambda: whole({"CLOCHE_SOCKET": sock}))]
        for name, f in (order if i % 2 == 0 else order[::-1]):
            res[name].append(f())
    after = rss(srv.pid)

    base = statistics.median(res["cloche run (embedded)"])
    print(f"cloche-mcp idle RSS: {idle:.1f} MiB (after {a.runs + 1} runs: {after:.1f} MiB)")
    for name, v in res.items():
        m = statistics.median(v)
        print(f"{name:28s} median {m * 1000:7.2f} ms  p90 {sorted(v)[int(len(v) * 0.9)] * 1000:7.2f} ms  {m / base:5.2f}x embedded")
finally:
    if srv:
        srv.stdin.close(); srv.wait(10)
    d.send_signal(signal.SIGTERM); d.wait(30)
    release_mounts(state)
    subprocess.run(["rm", "-rf", tmp])
