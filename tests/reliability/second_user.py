"""A second local user against the first user's repository (issue 8, item 4). Run as root, after the suite:

    python3 tests/reliability/second_user.py [--owner udtest] [--intruder nobody]

As OWNER: make a repository, import an image whose tarball has a 1777 /tmp and 0666 files, create a
container. As INTRUDER: try to read the repository and to create, append to and replace files in the image's
unpacked tree and in the container (its /tmp, /etc), with the repository as udocker made it (0700) and again
opened to others (0755, as a repository in a home directory might be). Every write must fail; reads must fail
while the repository is private. Exit status 0 when so, 1 otherwise (each success is printed)."""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ATTEMPTS = r"""
import glob, json, os, sys
repo = sys.argv[1]
done = []
def attempt(what, action):
    try:
        action()
        done.append(what)
    except OSError:
        pass
def create(path):
    with open(path, "x") as stream:
        stream.write("intruder")
def append(path):
    with open(path, "a") as stream:
        stream.write("intruder")
def replace(path):
    create(path + ".new")
    os.rename(path + ".new", path)
attempt("list the repository", lambda: os.listdir(repo))
for top in glob.glob(os.path.join(repo, "unpacked", "*")) + glob.glob(os.path.join(repo, "containers", "*", "rootfs")):
    for name in ("tmp/intruder", "etc/intruder", "intruder"):
        attempt(f"create {top}/{name}", lambda: create(os.path.join(top, name)))
    for name in ("etc/open", "data/open", "etc/hostname"):
        attempt(f"append to {top}/{name}", lambda: append(os.path.join(top, name)))
        attempt(f"replace {top}/{name}", lambda: replace(os.path.join(top, name)))
for path in glob.glob(os.path.join(repo, "*")) + glob.glob(os.path.join(repo, "containers", "*")):
    if os.path.isdir(path):
        attempt(f"create in {path}", lambda: create(os.path.join(path, "intruder")))
print(json.dumps(done))
"""


def _tarball(path):
    with tarfile.open(path, "w") as archive:
        for name, mode in (("tmp", 0o1777), ("etc", 0o755), ("data", 0o777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            archive.addfile(info)
        for name in ("etc/open", "data/open", "etc/hostname"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 5, 0o666
            archive.addfile(info, io.BytesIO(b"data\n"))


def _as(user, command, env):
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                           *command], capture_output=True, text=True, timeout=300)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owner", default="udtest")
    parser.add_argument("--intruder", default="nobody")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("second_user.py: run me as root (I switch to two users)")
    base = tempfile.mkdtemp(prefix="udocker-second-user-")
    try:
        os.chmod(base, 0o755)
        shutil.chown(base, args.owner)
        repo = os.path.join(base, "repo")
        tarball = os.path.join(base, "image.tar")
        _tarball(tarball)
        shutil.chown(tarball, args.owner)
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": base, "PYTHONPATH": TOP}
        for command in (["import", tarball, "open"], ["create", "--name=c", "open"]):
            done = _as(args.owner, [sys.executable, "-m", "udocker", "--repo", repo, *command], env)
            if done.returncode != 0:
                sys.exit(f"second_user.py: udocker {command[0]} as {args.owner} failed: {done.stderr.strip()}")
        failures = []
        for mode in (0o700, 0o755):
            os.chmod(repo, mode)
            done = _as(args.intruder, [sys.executable, "-c", ATTEMPTS, repo], {"PATH": env["PATH"]})
            allowed = json.loads(done.stdout) if done.returncode == 0 else [f"attempts failed: {done.stderr}"]
            if mode == 0o755:
                allowed = [what for what in allowed if what != "list the repository"]  # open on purpose
            failures += [f"repository {mode:04o}: {args.intruder} could {what}" for what in allowed]
        for line in failures:
            print(line)
        print(f"second_user.py: {len(failures)} intrusions into {args.owner}'s repository by {args.intruder}")
        return 1 if failures else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
