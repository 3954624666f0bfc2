"""`udocker run` behaviours beyond the per-mode matrix: images as arguments, --rm, --pull policies,
--location, exit codes of udocker's own failures, signals, concurrent runs of one container."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.cli import container as _container
from tests.fixtures.cli import ok

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def busybox(udocker, registry):
    return registry.ref("test/busybox:latest")


def test_run_image_pulls_creates_and_runs(udocker, busybox):
    result = udocker("run", "--name=fresh", busybox, "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr
    names = [row["names"] for row in json.loads(ok(udocker("ps", "--json")))]
    assert names == [["fresh"]]
    again = udocker("run", "--pull=reuse", "--name=fresh", busybox, "echo", "again")
    assert again.stdout == "again\n"
    assert len(json.loads(ok(udocker("ps", "--json")))) == 1


def test_run_rm_removes_the_container(udocker, busybox):
    result = udocker("run", "--rm", busybox, "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr
    assert json.loads(ok(udocker("ps", "--json"))) == []


def test_pull_never_needs_a_local_image(udocker, busybox):
    result = udocker("run", "--pull=never", busybox, "true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"error: no container or image named {busybox}")


@pytest.mark.parametrize(
    "args, message",
    [(["--bogus", "x"], "error: unknown option: --bogus"),
     ([], "error: run needs a container or an image"),
     (["--pull=sometimes", "x"], "error: invalid --pull policy: sometimes"),
     (["nosuchimage:1"], "error: ")],
)
def test_udocker_failures_exit_125(udocker, args, message):
    result = udocker("run", *args)
    assert result.returncode == 125
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


def test_entrypoint_cmd_and_image_defaults(udocker, busybox):
    name = _container(udocker, busybox)
    assert ok(udocker("run", name, "pwd")) == "/\n"
    assert ok(udocker("run", "--entrypoint=echo", name, "a", "b")) == "a b\n"
    assert ok(udocker("run", "-u", "tester", name, "id", "-u")).strip() in ("1000", str(os.getuid()))


def test_location_runs_a_directory(udocker, busybox, tmp_path):
    name = _container(udocker, busybox)
    rootfs = ok(udocker("inspect", "-p", name)).strip()
    result = udocker("run", f"--location={rootfs}", "echo", "located")
    assert (result.returncode, result.stdout) == (0, "located\n"), result.stderr


def test_sigterm_reaches_the_program_and_nothing_is_left(udocker, busybox, tmp_path):
    name = _container(udocker, busybox)
    marker = tmp_path / "marker"
    marker.mkdir()
    script = "trap 'echo got-term > /m/term; exit 143' TERM; echo ready > /m/ready; while true; do sleep 0.1; done"
    process = subprocess.Popen([sys.executable, "-m", "udocker", "--repo", udocker.repo, "run", "-v",
                                f"{marker}:/m", name, "sh", "-c", script], env=udocker.env, cwd=TOP,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (marker / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (marker / "ready").exists(), process.stderr.read() if process.poll() is not None else "not ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 143
    assert (marker / "term").read_text() == "got-term\n"
    time.sleep(0.2)
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout
    assert leftovers == ""


@pytest.mark.parametrize("mode", ["P1", "R1"])
def test_sixteen_concurrent_runs_of_one_container(udocker, busybox, mode):
    name = _container(udocker, busybox, mode=mode)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: udocker("run", name, "sh", "-c", f"echo {i}; exit {i % 3}"), range(16)))
    assert [(r.returncode, r.stdout) for r in results] == [(i % 3, f"{i}\n") for i in range(16)], \
        [r.stderr for r in results if r.returncode != 0]


def test_run_options(udocker, busybox, tmp_path):
    """The udocker 1.3 run options not covered by the per-mode matrix, in P1."""
    name = _container(udocker, busybox)
    me = f"{os.getuid()}"
    assert me in ok(udocker("run", "--hostauth", name, "cut", "-d:", "-f3", "/etc/passwd")).split()
    assert me not in ok(udocker("run", "--containerauth", name, "cut", "-d:", "-f3", "/etc/passwd")).split() \
        or os.getuid() in (0, 1000)
    assert ok(udocker("run", name, "ls", "/proc/self")) != ""
    assert ok(udocker("run", "--nosysdirs", name, "ls", "/proc")) == ""
    nometa = udocker("run", "--nometa", name)
    assert nometa.returncode == 125 and nometa.stderr.startswith("error: no command specified")
    assert ok(udocker("run", "--nometa", name, "pwd")) == "/\n"
    env = {"UDOCKER_TEST_HOSTVAR": "from-host"}
    assert "UDOCKER_TEST_HOSTVAR" not in ok(udocker("run", name, "env", env=env))
    assert "UDOCKER_TEST_HOSTVAR=from-host" in ok(udocker("run", "--hostenv", name, "env", env=env))
    home = udocker.env["HOME"]
    (tmp_path / "home" / "in-home").write_text("home file\n")
    assert ok(udocker("run", "--bindhome", name, "cat", f"{home}/in-home")) == "home file\n"
    assert ok(udocker("run", "--cpuset-cpus=0", name, "grep", "Cpus_allowed_list", "/proc/self/status")).split() \
        == ["Cpus_allowed_list:", "0"]
    assert ok(udocker("run", "--nobanner", "-i", "-t", name, "true")) == ""
    assert ok(udocker("run", "--device=/dev/null", "--nosysdirs", name, "sh", "-c", "echo x > /dev/null; echo ok")) \
        == "ok\n"
    assert ok(udocker("run", "-p", "8080:8080", "--publish=9090", name, "true")) == ""
    remap = udocker("run", "-p", "8080:80", name, "true")
    assert remap.returncode == 125 and "containers share the host's network" in remap.stderr
    assert ok(udocker("run", "--novol=/proc", name, "ls", "/proc")) == ""


def test_run_image_options_platform_registry(udocker, registry):
    """--platform, --registry and --index reach the pull that `run IMAGE` does."""
    multi = registry.ref("test/multiarch:latest")
    result = udocker("run", "--rm", "--platform=linux/amd64", multi, "cat", "/platform")
    assert (result.returncode, result.stdout) == (0, "linux/amd64\n"), result.stderr
    result = udocker("run", "--rm", f"--registry=http://{registry.host}", "--index=http://127.0.0.1:9",
                     "test/busybox", "echo", "via-registry")
    assert (result.returncode, result.stdout) == (0, "via-registry\n"), result.stderr


@pytest.mark.parametrize("mode", ["P1", "R1"])
def test_terminal_passes_through(udocker, busybox, mode):
    """With a terminal on stdin (script(1) provides one), the program gets a terminal and its status."""
    import shlex

    name = _container(udocker, busybox, mode=mode)
    command = shlex.join([sys.executable, "-m", "udocker", "--repo", udocker.repo, "run", name, "sh", "-c",
                          "tty; exit 4"])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], env=udocker.env, cwd=TOP,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "/dev/pts/" in result.stdout


def test_quiet_silences_the_run_path(udocker, busybox):
    """-q on `run` as on the other commands (issue 9): no pull progress, only errors."""
    result = udocker("-q", "run", "--rm", busybox, "echo", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")


def test_debug_on_the_run_path(udocker, busybox, registry):
    """-D on `run` as on the other commands: the registry's debug lines, then the engine's command line."""
    result = udocker("-D", "run", "--rm", busybox, "true")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert f"GET http://{registry.host}/v2/test/busybox/manifests/latest -> 200" in lines
    assert any(line.startswith("debug: mode ") for line in lines), result.stderr
    plain = udocker("run", "--rm", busybox, "true")
    assert " -> 200" not in plain.stderr and "debug: " not in plain.stderr


def test_general_options_reach_run_through_click(udocker, busybox):
    """`udocker -qD run` (options the lean parser leaves to click) keeps --repo, -q and -D."""
    ok(udocker("-q", "pull", busybox))
    result = udocker("-qD", "run", "--rm", busybox, "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr
    assert any(line.startswith("debug: mode ") for line in result.stderr.splitlines()), result.stderr
