#!/usr/bin/env python3
"""The reviewer's page measured in a real browser: time to first render of
the batch list (with 50 batches, 20 of them pending) and of a review of
1,000 changed paths (its first page), from the browser's Navigation Timing;
and cloched's resident memory idle, with the page open (the batch page's
event stream and the review loaded), and after.

Usage (as root, after `cargo build --release --workspace` and `bash .ci/setup`,
which installs chromium, chromium-driver and target/web-venv):
    target/web-venv/bin/python benches/web.py [--runs N] [--bin DIR]

A daemon is started on a temporary socket, state directory and loopback
port. Nothing is asserted.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import release_mounts  # noqa: E402  (shared by every bench)

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=15)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../target/x86_64-unknown-linux-musl/release"))
a = ap.parse_args()
cloche, cloched = os.path.abspath(os.path.join(a.bin, "cloche")), os.path.abspath(os.path.join(a.bin, "cloched"))

tmp = tempfile.mkdtemp(prefix="cloche-bench-web-")
state, sock, proj = os.path.join(tmp, "state"), os.path.join(tmp, "s.sock"), os.path.join(tmp, "proj")
os.makedirs(proj)
os.chown(proj, 65534, 65534)
os.chmod(tmp, 0o755)
env = {**os.environ, "CLOCHE_STATE_DIR": state, "CLOCHE_SOCKET": sock}
d = subprocess.Popen([cloched, "--socket", sock, "--web", "127.0.0.1:0"], env={**env, "CLOCHE_LOG": "warn"},
                     stdin=subprocess.DEVNULL)
while not os.path.exists(sock):
    time.sleep(0.01)
time.sleep(0.2)


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def cl(*args, nobody=False):
    return subprocess.run([cloche, *args], env={**env, "HOME": "/nonexistent"}, cwd=proj, check=True,
                          capture_output=True, text=True, preexec_fn=as_nobody if nobody else None).stdout.strip()


def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) / 1024


def ms(v):
    return f"{statistics.median(v):7.1f} ms (min {min(v):.1f}, max {max(v):.1f})"


drv, ids = None, []
try:
    login = json.loads(cl("web", "login", "--json"))
    url = login["url"].rstrip("/")
    # 50 batches by an agent: 30 run (one with 1,000 new files), 20 pending.
    batch = os.path.join(tmp, "b.json")
    with open(batch, "w") as f:
        json.dump({"project": proj, "entries": [{"command": "mkdir -p many && cd many && seq -w 1 1000 | xargs touch"}]}, f)
    os.chmod(batch, 0o644)
    ids = [cl("batch", "submit", batch, nobody=True) for _ in range(50)]
    big = ids[0]
    cl("batch", "approve", big)
    cl("batch", "run", big, nobody=True)
    for i in ids[1:30]:
        cl("batch", "reject", i)
    idle = rss(d.pid)

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for o in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
              f"--user-data-dir={tmp}/chromium"]:
        opts.add_argument(o)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.get(url + "/login")
    drv.find_element(By.ID, "token").send_keys(login["token"] + "\n")
    time.sleep(0.5)

    def timing(path):
        drv.get(url + path)
        n = drv.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
        return n["responseEnd"] - n["requestStart"], n["domContentLoadedEventEnd"], n["loadEventEnd"]

    res = {}
    for name, path in [("batch list (50 batches)", "/"), ("review, 1,000 paths (page 1)", f"/batches/{big}/diff")]:
        timing(path)
        t = [timing(path) for _ in range(a.runs)]
        res[name] = t
    drv.get(url + f"/batches/{ids[40]}")  # a pending batch: its event stream open
    time.sleep(1)
    open_rss = rss(d.pid)
    drv.get(url + f"/batches/{big}/diff")
    review_rss = rss(d.pid)
    print(f"cloched {os.path.basename(a.bin)} build, {a.runs} loads each (median, min, max):")
    for name, t in res.items():
        print(f"  {name}:")
        print(f"    server response (requestStart to responseEnd): {ms([x[0] for x in t])}")
        print(f"    first render (navigation to DOMContentLoaded):  {ms([x[1] for x in t])}")
        print(f"    load event:                                     {ms([x[2] for x in t])}")
    print(f"cloched RSS: idle {idle:.1f} MiB; page open (a batch's event stream) {open_rss:.1f} MiB; "
          f"after a 1,000-path review {review_rss:.1f} MiB")
finally:
    if drv:
        drv.quit()
    d.terminate()
    d.wait(timeout=30)
    subprocess.run([cloche, "--no-daemon", "discard", ids[0]], env={**env, "CLOCHE_SOCKET": ""}, capture_output=True)
    release_mounts(state)
    subprocess.run(["rm", "-rf", tmp])
