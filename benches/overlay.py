#!/usr/bin/env python3
"""What the overlay options for hard links cost, without cloche around them.

Usage (as root; needs mkfs.btrfs, from `bash .ci/setup`):
    python3 benches/overlay.py [--files N] [--rounds N]

cloche mounts each world's overlay with `index=on` (a hard link to a base
file keeps the base file's inode, so `git clone` of a local repository,
`cp -al`, tar and rsync hard-link detection work as on the host), `xino=off`,
`redirect_dir=off`, `metacopy=off` and `volatile` (docs/security.md). This
mounts overlays of a lower directory of N small files (on the filesystem of
/var/tmp) with each variant, the upper on a tmpfs and on a btrfs subvolume
(as cloche's disk pool), and times, as medians over the rounds:
  - mount and umount of the overlay;
  - `link` of every lower file (each link copies its file up first);
  - `stat` of every lower file through the overlay (where `xino` would act);
and checks what a link's inode number is. Prints a table; asserts nothing.
"""
import argparse, ctypes, os, shutil, statistics, subprocess, sys, tempfile, time

libc = ctypes.CDLL(None, use_errno=True)

VARIANTS = [
    ("index=off (before)", "index=off,xino=off"),
    ("index=on", "index=on,xino=off"),
    ("index=on,volatile (cloche)", "index=on,xino=off,volatile"),
    ("index=on,xino=on", "index=on,xino=on"),
]
COMMON = "redirect_dir=off,metacopy=off"


def mount(src, target, fstype, opts=""):
    if libc.mount(src.encode(), target.encode(), fstype.encode(), 0, opts.encode()) != 0:
        e = ctypes.get_errno()
        sys.exit(f"mount {fstype} on {target} ({opts}): {os.strerror(e)}")


def umount(target):
    if libc.umount2(target.encode(), 0) != 0:
        sys.exit(f"umount {target}: {os.strerror(ctypes.get_errno())}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    mkfs = shutil.which("mkfs.btrfs") or "/usr/sbin/mkfs.btrfs"
    if not os.path.exists(mkfs):
        sys.exit("mkfs.btrfs missing: bash .ci/setup")
    work = tempfile.mkdtemp(prefix="cloche-bench-ovl-", dir="/var/tmp")
    lower, mnt, tm, bt = (os.path.join(work, d) for d in ["lower", "mnt", "tmpfs", "btrfs"])
    for d in (lower, mnt, tm, bt):
        os.mkdir(d)
    for i in range(a.files):
        with open(os.path.join(lower, f"f{i}"), "wb") as f:
            f.write(os.urandom(4096))
    img = os.path.join(work, "pool.img")
    mounted = []
    try:
        with open(img, "wb") as f:
            f.truncate(4 << 30)
        subprocess.run([mkfs, "-q", "-f", "-K", img], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["mount", "-o", "loop", img, bt], check=True)
        mounted.append(bt)
        mount("none", tm, "tmpfs", "size=2g")
        mounted.append(tm)
        rows = []
        for store, root in [("tmpfs", tm), ("btrfs", bt)]:
            for v, (label, opts) in enumerate(VARIANTS):
                t = {"mount": [], "umount": [], "link": [], "stat": []}
                inode_kept = None
                for r in range(a.rounds):
                    base = os.path.join(root, f"v{v}-{r}")
                    if store == "btrfs":
                        subprocess.run(["btrfs", "-q", "subvolume", "create", base], check=True,
                                       stdout=subprocess.DEVNULL)
                    else:
                        os.mkdir(base)
                    os.mkdir(os.path.join(base, "upper"))
                    os.mkdir(os.path.join(base, "work"))
                    o = f"lowerdir={lower},upperdir={base}/upper,workdir={base}/work,{COMMON},{opts}"
                    t0 = time.perf_counter()
                    mount("overlay", mnt, "overlay", o)
                    t["mount"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(a.files):
                        os.stat(os.path.join(mnt, f"f{i}"))
                    t["stat"].append(time.perf_counter() - t0)
                    before = os.stat(os.path.join(mnt, "f0")).st_ino
                    t0 = time.perf_counter()
                    for i in range(a.files):
                        os.link(os.path.join(mnt, f"f{i}"), os.path.join(mnt, f"l{i}"))
                    t["link"].append(time.perf_counter() - t0)
                    inode_kept = os.stat(os.path.join(mnt, "l0")).st_ino == before
                    t0 = time.perf_counter()
                    umount(mnt)
                    t["umount"].append(time.perf_counter() - t0)
                    if store == "btrfs":
                        subprocess.run(["btrfs", "-q", "subvolume", "delete", base], check=True,
                                       stdout=subprocess.DEVNULL)
                    else:
                        shutil.rmtree(base)
                med = {k: statistics.median(v) * 1000 for k, v in t.items()}
                rows.append((store, label, med, inode_kept))
        n = a.files
        print(f"overlay of {n} lower files of 4 KiB (medians of {a.rounds} rounds; "
              f"common: {COMMON})")
        print(f"{'upper':6} {'options':28} {'mount':>8} {'umount':>8} {f'link x{n}':>11} "
              f"{'us/link':>8} {f'stat x{n}':>10}  link keeps inode")
        for store, label, m, kept in rows:
            print(f"{store:6} {label:28} {m['mount']:6.2f}ms {m['umount']:6.2f}ms {m['link']:9.1f}ms "
                  f"{m['link'] * 1000 / n:8.1f} {m['stat']:8.1f}ms  {'yes' if kept else 'no'}")
    finally:
        for m in [mnt] + mounted[::-1]:
            if os.path.ismount(m):
                subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
