#!/usr/bin/env python3
"""A world without root against bubblewrap, both run by a user who is not
root, measured in the same run.

Usage (as root, after `cargo build --release --workspace`):
    python3 benches/rootless.py [--runs N] [--sporadic N] [--cloche PATH] [--before PATH] [--seed N]

The bench makes a user of its own (`useradd -m`), a project in its home,
and a cgroup delegated to it on whichever version carries the host's
memory, pids and cpu controllers (v1: a directory of the user's in each of
the three hierarchies, below the bench's own cgroup; v2: a subtree whose
controllers are enabled for its children), then moves itself into that
delegation so that every command it starts begins there, as a user's
commands begin in a systemd user slice. Each command runs as the user
(`subprocess`'s own `user=`/`group=`, no shell, no `runuser`), with only
HOME, PATH and USER set, in the project:

  - `cloche run --no-limits -- true` (no cgroup);
  - `cloche run -- true` (its limits in `<delegated>/cloche/<id>`);
  - `bwrap --ro-bind / / --dev /dev --proc /proc --unshare-all
    --die-with-parent true`, as `benches/startup.py` runs it as root;
  - with `--before PATH`, that build's two `run`s too, from a copy of its
    own.

(A world without root has no variant without its user namespace: that
namespace is what lets a user mount at all. What the namespace costs a
world run by root is `benches/startup.py`'s paired figure.)

Each round runs them in a shuffled order (`--seed`): back to back, then
sporadic (300 ms idle before each). It prints medians, first quartiles,
p90 and ratios to bwrap. Figures are wall-clock times of whole processes.
Nothing here is asserted. The user, its home, the delegation and the
copies of the binaries are removed at the end, even on failure.
"""
import argparse, os, random, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import bwrap_path, cloche_arg, preflight, stats  # noqa: E402

CONTROLLERS = ("memory", "pids", "cpu")

def own_cgroups():
    """This process's cgroup in each hierarchy: {controller or "": path}."""
    own = {}
    for line in open("/proc/self/cgroup"):
        _, names, path = line.rstrip("\n").split(":", 2)
        for n in names.split(",") if names else [""]:
            own[n] = path
    return own

def mount_points():
    """{"v1": {controller: mount point}, "v2": mount point or None}."""
    v1, v2 = {}, None
    for line in open("/proc/self/mountinfo"):
        left, right = line.split(" - ", 1)
        fstype, _, opts = right.split()[:3]
        at = left.split()[4]
        if fstype == "cgroup":
            for c in CONTROLLERS:
                if c in opts.split(","):
                    v1[c] = at
        elif fstype == "cgroup2":
            v2 = at
    return {"v1": v1, "v2": v2}

class Delegation:
    """A cgroup delegated to `uid`, as `cgcreate -t -a` (v1) or systemd's
    `Delegate=yes` (v2) give one; the bench enters it and leaves on close."""

    def __init__(self, name, uid, gid):
        self.dirs, self.back, self.kind = [], [], None
        try:
            self._make(name, uid, gid)
        except BaseException:
            self.close()
            raise

    def _make(self, name, uid, gid):
        own, mp = own_cgroups(), mount_points()
        if all(c in mp["v1"] for c in CONTROLLERS):
            for c in CONTROLLERS:
                here = os.path.join(mp["v1"][c], own[c].lstrip("/"))
                d = os.path.join(here, name)
                os.mkdir(d)
                self.dirs.append(d)
                for p in (d, os.path.join(d, "tasks"), os.path.join(d, "cgroup.procs")):
                    os.chown(p, uid, gid)
                self.back.append((os.path.join(here, "tasks"), os.path.join(d, "tasks")))
            self.kind = "v1 (memory, pids, cpu)"
        elif mp["v2"]:
            here = os.path.join(mp["v2"], own[""].lstrip("/"))
            d = os.path.join(here, name)
            os.mkdir(d)
            self.dirs.append(d)
            os.mkdir(os.path.join(d, "leaf"))
            with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join(f"+{c}" for c in CONTROLLERS))
            for f in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads", "leaf", "leaf/cgroup.procs"]:
                os.chown(os.path.join(d, f), uid, gid)
            self.back.append((os.path.join(here, "cgroup.procs"), os.path.join(d, "leaf", "cgroup.procs")))
            self.kind = "v2"
        else:
            raise SystemExit("no cgroup controllers to delegate on this host")
        for _, into in self.back:
            with open(into, "w") as f:
                f.write(str(os.getpid()))

    def close(self):
        for home, _ in self.back:
            try:
                with open(home, "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        # Deepest first; world cgroups left below (`cloche/<id>`) included.
        for top in self.dirs:
            below = [r for r, _, _ in os.walk(top)]
            for d in sorted(below, key=len, reverse=True):
                for _ in range(100):
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)

class User:
    """A user of the host made for the bench, removed with its home."""

    def __init__(self):
        self.name = f"clbench{os.getpid() % 100000}"
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", self.name], check=True)
        self.uid = int(subprocess.check_output(["id", "-u", self.name]))
        self.gid = int(subprocess.check_output(["id", "-g", self.name]))
        self.home = f"/home/{self.name}"
        self.env = {"HOME": self.home, "PATH": "/usr/local/bin:/usr/bin:/bin", "USER": self.name}

    def close(self):
        subprocess.run(["pkill", "-KILL", "-u", str(self.uid)], check=False)
        time.sleep(0.2)
        subprocess.run(["userdel", "-r", self.name], check=False, stderr=subprocess.DEVNULL)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--sporadic", type=int, default=60)
    ap.add_argument("--before", help="another build of cloche (an earlier commit) to time in the same runs")
    ap.add_argument("--seed", type=int, default=1)
    cloche_arg(ap)
    a = ap.parse_args()
    preflight(a.cloche)
    bwrap = bwrap_path()
    rng = random.Random(a.seed)
    user = bins = delegation = None
    try:
        user = User()
        bins = tempfile.mkdtemp(prefix="cloche-bench-bin-")
        os.chmod(bins, 0o755)
        # Copies the user can run whatever the checkout's permissions.
        shutil.copy(a.cloche, os.path.join(bins, "cloche"))
        proj = os.path.join(user.home, "proj")
        os.mkdir(proj)
        os.chown(proj, user.uid, user.gid)
        tools = [
            ("cloche run --no-limits -- true", [os.path.join(bins, "cloche"), "run", "--no-limits", "--", "true"]),
            ("cloche run -- true (delegated)", [os.path.join(bins, "cloche"), "run", "--", "true"]),
            ("bwrap ... true", [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                                "--die-with-parent", "true"]),
        ]
        if a.before:
            shutil.copy(a.before, os.path.join(bins, "before"))
            tools.append(("before: run --no-limits -- true",
                          [os.path.join(bins, "before"), "run", "--no-limits", "--", "true"]))
            tools.append(("before: run -- true (delegated)", [os.path.join(bins, "before"), "run", "--", "true"]))
        delegation = Delegation(f"cloche-bench-{os.getpid()}", user.uid, user.gid)
        print(f"user {user.name} (uid {user.uid}), delegated cgroup: {delegation.kind}")

        def timed(cmd):
            t = time.perf_counter()
            r = subprocess.run(cmd, env=user.env, cwd=proj, user=user.uid, group=user.gid, extra_groups=[],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = (time.perf_counter() - t) * 1000
            if r.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
            return dt

        def compare(title, n, idle):
            times = {label: [] for label, _ in tools}
            for _ in range(n):
                order = tools[:]
                rng.shuffle(order)
                for label, cmd in order:
                    time.sleep(idle)
                    times[label].append(timed(cmd))
            print(title)
            bm = stats(times["bwrap ... true"])[0]
            for label, _ in tools:
                m, p = stats(times[label])
                q1 = sorted(times[label])[len(times[label]) // 4]
                print(f"  {label:34} median {m:6.2f} ms  q1 {q1:6.2f} ms  p90 {p:6.2f} ms  {m / bm:.2f}x bwrap")

        for _ in range(5):  # warm caches (the seccomp program cache, the state directory)
            for _, cmd in tools:
                timed(cmd)
        compare(f"as {user.name}, back to back ({a.runs} runs each, shuffled)", a.runs, 0)
        compare(f"as {user.name}, sporadic (300 ms idle before each, {a.sporadic} runs each)", a.sporadic, 0.3)
    finally:
        if user:
            user.close()
        if delegation:
            delegation.close()
        if bins:
            shutil.rmtree(bins, ignore_errors=True)

if __name__ == "__main__":
    main()
