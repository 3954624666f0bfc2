"""`udocker run` of an existing container makes few file-system calls on the repository (issue 13, item 4): on
Lustre or NFS each is a round trip to a server, paid by every task of a job array. Counted with strace: the
calls of udocker's own processes (strace detaches from the engine at its execve) whose path is under the
repository. utils/bench_run reports the same count."""

import shutil
import subprocess
import sys

import pytest

from tests.support.build_test_images import busybox_layer

LIMIT = 20  # issue 13: <= 20 per run (17 in P1 and 18 in R1 when this was written)
SCRIPT_ARGS = ["-m", "udocker"]


def repository_calls(udocker, container, log):
    command = ["strace", "-f", "-b", "execve", "-e", "trace=%file", "-o", str(log), sys.executable, *SCRIPT_ARGS,
               "--repo", udocker.repo, "run", container, "/bin/true"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=udocker.cwd, env=udocker.env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    return [line for line in lines if udocker.repo in line and " execve(" not in line and "resumed>" not in line]


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
@pytest.mark.parametrize("mode", ["P1", "R1"])
def test_a_run_makes_few_calls_on_the_repository(udocker, tmp_path, mode):
    layer = tmp_path / "busybox.tar.gz"
    layer.write_bytes(busybox_layer().data)
    assert udocker("import", str(layer), "test/calls:1").returncode == 0
    assert udocker("create", "--name=c", "test/calls:1").returncode == 0
    setup = udocker("setup", f"--execmode={mode}", "c")
    if setup.returncode != 0:
        pytest.skip(f"{mode} cannot run here: {setup.stderr.strip()[-200:]}")
    first = udocker("run", "c", "/bin/true")  # prepares the mode (R1: its bundle)
    if first.returncode != 0:
        pytest.skip(f"{mode} cannot run here: {first.stderr.strip()[-200:]}")
    calls = repository_calls(udocker, "c", tmp_path / "strace.log")
    assert calls, "strace saw no call on the repository: the count would prove nothing"
    assert len(calls) <= LIMIT, "\n".join([f"{len(calls)} calls on the repository:"] + calls)
