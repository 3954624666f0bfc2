"""A repository on shared file systems whose locks are not what a local disk offers (issue 8, item 9).

No lock service: an LD_PRELOAD shim makes flock() and fcntl() locks fail with ENOSYS (Lustre `noflock`,
NFS without lockd); concurrent pulls and runs must still all succeed.

Two nodes: two private mount namespaces (each in its own user, UTS and PID namespace: another host name,
other pids), each mounting the same backing directory with bindfs (FUSE) at the same path, so that flocks
taken through one mount are invisible through the other (BeeGFS without global locks, Lustre `localflock`).
This needs FUSE for the test user inside a user namespace: bindfs installed and /dev/fuse readable and
writable by the user (Debian's udev default, mode 0666; a container's /dev may have 0600). Without it the
test skips, or fails under CI, where .ci/run must provide it.

Both end with: every command succeeded, `verify` passes, one image, one container per name, tmp/ empty.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TOP, require

CI = bool(os.environ.get("CI"))
IMAGE = "test/busybox:latest"
TASKS = 4  # of each kind, per node
pytestmark = pytest.mark.timeout(900)

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>

int flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOSYS; return -1; }

static int is_lock(int cmd) {
    return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK
        || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK;
}

#define WRAP(name) \
int name(int fd, int cmd, ...) { \
    va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap); \
    if (is_lock(cmd)) { errno = ENOSYS; return -1; } \
    static int (*real)(int, int, ...); \
    if (!real) real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, #name); \
    return real(fd, cmd, arg); \
}
WRAP(fcntl)
WRAP(fcntl64)
"""

PROBE = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
for name, call in (("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX)),
                   ("lockf", lambda: fcntl.lockf(fd, fcntl.LOCK_EX))):
    try:
        call()
        sys.exit(name + " worked")
    except OSError as exc:
        assert exc.errno == errno.ENOSYS, exc
"""


def _workload(image, name):
    """The argument lists of one node's tasks: TASKS `run --rm` and TASKS `run --pull=reuse --name`."""
    return ([["run", "--rm", image, "true"]] * TASKS
            + [["run", "--pull=reuse", f"--name={name}", image, "true"]] * TASKS)


def _check_repository(udocker, repo, image, name):
    result = udocker("verify", image, repo=repo)
    assert result.returncode == 0, result.stderr
    images = json.loads(udocker("images", "--json", repo=repo, check=True).stdout)
    assert len(images) == 1, images
    containers = json.loads(udocker("ps", "--json", repo=repo, check=True).stdout)
    assert len(containers) == 1, containers
    assert name in json.dumps(containers[0]), containers
    assert os.listdir(os.path.join(repo, "tmp")) == []


def test_concurrent_pulls_and_runs_without_any_lock_service(udocker, registry, tmp_path):
    require("gcc")
    (tmp_path / "shim.c").write_text(SHIM)
    shim = str(tmp_path / "nolocks.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", shim, str(tmp_path / "shim.c"), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    env = dict(udocker.env, LD_PRELOAD=shim, UDOCKER_DEFAULT_EXECUTION_MODE="P1")
    probe = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "probe")], env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, f"the shim does not take locks away: {probe.stderr}"
    image = registry.ref(IMAGE)
    command = [sys.executable, "-m", "udocker", "--repo", udocker.repo]
    tasks = [subprocess.Popen(command + args, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in _workload(image, "nolock")]
    failures = []
    for args, task in zip(_workload(image, "nolock"), tasks):
        out, err = task.communicate(timeout=600)
        if task.returncode != 0:
            failures.append(f"{' '.join(args)}: status {task.returncode}: {err.strip()[-500:]}")
    assert failures == []
    _check_repository(udocker, udocker.repo, image, "nolock")


NODE = """\
set -u
hostname "$NODE"
bindfs -f "$BACKING" "$SHARED" & fuse=$!
for _ in $(seq 200); do grep -q " $SHARED fuse" /proc/self/mounts && break; sleep 0.05; done
grep -q " $SHARED fuse" /proc/self/mounts || { echo "$NODE: bindfs did not mount $SHARED" >&2; exit 99; }
i=0
while IFS= read -r line; do
    eval "set -- $line"
    timeout -k 5 400 "$PYTHON" -m udocker --repo "$SHARED/repo" "$@" >"$OUT/$NODE-$i.out" 2>&1 &
    eval "task$i=\\$!"
    i=$((i + 1))
done <"$OUT/tasks"
status=0
for j in $(seq 0 $((i - 1))); do
    eval "pid=\\$task$j"
    wait "$pid"; rc=$?
    echo "$rc" >"$OUT/$NODE-$j.rc"
    [ "$rc" = 0 ] || status=1
done
umount "$SHARED" || fusermount -u "$SHARED"
kill "$fuse" 2>/dev/null; wait "$fuse" 2>/dev/null
exit "$status"
"""


def _fuse_in_user_namespace(tmp_path):
    """Why bindfs cannot mount inside a user namespace here, or None when it can."""
    for tool in ("bindfs", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package bindfs; unshare is util-linux)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by the test user (as root: chmod 0666 /dev/fuse)"
    (tmp_path / "probe-backing").mkdir()
    (tmp_path / "probe-mount").mkdir()
    script = f'bindfs "{tmp_path}/probe-backing" "{tmp_path}/probe-mount" && umount "{tmp_path}/probe-mount"'
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    return None if result.returncode == 0 else f"bindfs in a user namespace failed: {result.stderr.strip()}"


def test_two_nodes_whose_locks_do_not_see_each_other_share_one_repository(udocker, registry, tmp_path):
    missing = _fuse_in_user_namespace(tmp_path)
    if missing:
        if CI:
            pytest.fail(f"{missing}: .ci/run should provide FUSE for the test user")
        pytest.skip(missing)
    backing, shared, out = tmp_path / "backing", tmp_path / "shared", tmp_path / "out"
    for path in (backing, shared, out):
        path.mkdir()
    image = registry.ref(IMAGE)
    (out / "tasks").write_text("".join(" ".join(f"'{a}'" for a in args) + "\n" for args in _workload(image, "both")))
    (tmp_path / "node.sh").write_text(textwrap.dedent(NODE))
    nodes = {}
    for node in ("node-a", "node-b"):
        env = dict(udocker.env, NODE=node, BACKING=str(backing), SHARED=str(shared), OUT=str(out),
                   PYTHON=sys.executable, PYTHONPATH=TOP, UDOCKER_DEFAULT_EXECUTION_MODE="P1")
        nodes[node] = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--kill-child", "bash", str(tmp_path / "node.sh")], env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    reports = {node: process.communicate(timeout=600)[0] for node, process in nodes.items()}
    failures = []
    for node, process in nodes.items():
        for index, args in enumerate(_workload(image, "both")):
            rc_file = out / f"{node}-{index}.rc"
            rc = rc_file.read_text().strip() if rc_file.exists() else "missing"
            if rc != "0":
                log = out / f"{node}-{index}.out"
                failures.append(f"{node} {' '.join(args)}: status {rc}: "
                                f"{log.read_text()[-500:] if log.exists() else ''}")
        if process.returncode != 0 and not failures:
            failures.append(f"{node}: status {process.returncode}: {reports[node][-800:]}")
    assert failures == []
    _check_repository(udocker, str(backing / "repo"), image, "both")
