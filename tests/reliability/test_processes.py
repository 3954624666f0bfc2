"""No process outlives `udocker run` (issue 8, item 3), in every mode this host runs, on the Debian 12 image:
- kill -9 of `udocker run` (what scancel, `timeout -s KILL` and CI runners end with) leaves nothing of the
  container within 2 s;
- SIGTERM, SIGINT and SIGHUP reach the program, which exits, and nothing is left;
- a program that ignores SIGTERM is killed after `stop_timeout` (2 s here);
- a DEEPaaS/gunicorn-like service (a main process that forks workers and, on SIGTERM, stops them and exits)
  stops gracefully: every worker and the main process run their handlers and the status is 0.

A container's processes are found by a token in their environment (-e) or command line (the supervisor
udocker forks keeps `udocker run`'s command line). Runs as the unprivileged test user, as CI does."""

import glob
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.support.procs import deepaas_archive, until
from tests.support.procs import marked as _marked

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3"]
GONE_WITHIN = 2.0  # seconds: the bound for "nothing of the container is left"
READY_WITHIN = 30.0


def _until(condition, seconds):
    return until(condition, seconds, pause=0.05)  # polled finely: GONE_WITHIN is a tight bound


SERVICE = """#!/bin/sh
# A stand-in for DEEPaaS (aiohttp/gunicorn): a main process that forks workers; on SIGTERM it signals its
# workers, waits for them and exits 0. Each worker stops its own child and exits 0 on SIGTERM.
out=$1
worker() {
    trap 'kill $job; echo stopped > $out/worker$1; exit 0' TERM
    sleep 300 & job=$!
    echo ready > $out/ready$1
    wait $job
}
worker 1 & w1=$!
worker 2 & w2=$!
trap 'kill -TERM $w1 $w2; wait $w1; wait $w2; echo stopped > $out/main; exit 0' TERM
while ! test -f $out/ready1 || ! test -f $out/ready2; do sleep 0.1; done
echo ready > $out/ready
wait
"""


class Repo:
    def __init__(self, path, home):
        self.path = str(path)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
                    "PYTHONPATH": TOP, "PYTHONDONTWRITEBYTECODE": "1"}

    def argv(self, *args):
        return [sys.executable, "-m", "udocker", "--repo", self.path, *args]

    def __call__(self, *args):
        return subprocess.run(self.argv(*args), cwd=TOP, env=self.env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    archive = os.environ.get("UDOCKER_TEST_DEBIAN")
    if not archive:
        if os.environ.get("CI"):
            pytest.fail("UDOCKER_TEST_DEBIAN is not set: .ci/run should have built the Debian image")
        pytest.skip("no Debian test image (UDOCKER_TEST_DEBIAN)")
    base = tmp_path_factory.mktemp("processes")
    (base / "home").mkdir()
    udocker = Repo(base / "repo", base / "home")
    loaded = udocker("-q", "load", "-i", archive, "test/processes")
    assert loaded.returncode == 0, loaded.stderr
    udocker.image = "test/processes:12"
    return udocker


@pytest.fixture(scope="module", params=MODES)
def container(request, repo):
    mode = request.param
    name = f"proc-{mode.lower()}"
    created = repo("create", f"--name={name}", repo.image)
    assert created.returncode == 0, created.stderr
    setup = repo("setup", f"--execmode={mode}", name)
    if setup.returncode != 0:
        assert setup.stderr.startswith("error: ") and "Traceback" not in setup.stderr, setup.stderr
        if mode in os.environ.get("UDOCKER_TEST_REQUIRE_MODES", "").split(","):
            pytest.fail(setup.stderr)
        pytest.skip(f"mode cannot run here: {setup.stderr.splitlines()[0]}")
    return repo, name


def _sleeps(token):
    """How many of the container's processes are `sleep` (F1/F2 run programs through the loader: by argv)."""
    count = 0
    for pid in _marked(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                argv = stream.read().split(b"\0")
        except OSError:
            continue
        count += any(os.path.basename(arg) == b"sleep" for arg in argv)
    return count


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as stream:
            return stream.read().strip()
    except OSError:
        return ""


class Run:
    """`udocker run` of `script` (sh -c SCRIPT, or an argv) in the background, with a bind-mounted scratch
    directory /m."""

    def __init__(self, container, tmp_path, script, *, env=None, files=None):
        repo, name = container
        self.token = f"I8C_{uuid.uuid4().hex}"
        self.dir = tmp_path / "m"
        self.dir.mkdir()
        for file_name, text in (files or {}).items():
            (self.dir / file_name).write_text(text)
        argv = repo.argv("run", "-v", f"{self.dir}:/m", "-e", f"{self.token}=1", name,
                         *(["sh", "-c", script] if isinstance(script, str) else script))
        self.process = subprocess.Popen(argv, cwd=TOP, env=dict(repo.env, **(env or {})), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def ready(self, *, sleeps=0, name="ready"):
        """Wait until /m/NAME exists and `sleeps` sleep processes of the container run."""
        ok = _until(lambda: (self.dir / name).exists() and _sleeps(self.token) >= sleeps, READY_WITHIN)
        if not ok:
            self.stop()
            pytest.fail(f"the program did not start: {self.stderr()}")

    def stderr(self):
        """What `udocker run` wrote on stderr so far (without waiting: a leftover process may hold the pipe)."""
        os.set_blocking(self.process.stderr.fileno(), False)
        try:
            return (self.process.stderr.read() or b"").decode(errors="replace")
        except OSError:
            return ""

    def wait(self, seconds=60):
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
        return self.process.returncode

    def leftovers(self):
        """Processes of the container still there after GONE_WITHIN seconds at most (polled)."""
        return _until(lambda: not _marked(self.token), GONE_WITHIN) or _marked(self.token)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        for pid in _marked(self.token):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def file(self, name):
        path = self.dir / name
        return path.read_text() if path.exists() else None


def test_kill_9_of_udocker_run_leaves_nothing(container, tmp_path):
    run = Run(container, tmp_path, "sleep 300 & sleep 300 & echo ready > /m/ready; wait")
    try:
        run.ready(sleeps=2)
        os.kill(run.process.pid, signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
        assert run.leftovers() is True, [(p, _comm(p)) for p in _marked(run.token)]
        states = os.path.join(container[0].path, "containers", "*", "engine", "*", "state", "*")
        assert _until(lambda: not glob.glob(states), GONE_WITHIN), glob.glob(states)  # runc's, of the killed run
    finally:
        run.stop()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_a_stop_signal_reaches_the_program(container, tmp_path, number):
    name = signal.Signals(number).name[3:]
    script = (f"trap 'echo got {name} > /m/got; kill $a $b; exit 3' {name}; sleep 300 & a=$!; sleep 300 & b=$!; "
              "echo ready > /m/ready; wait")
    run = Run(container, tmp_path, script)
    try:
        run.ready(sleeps=2)
        os.kill(run.process.pid, number)
        status = run.wait()
        assert run.file("got") == f"got {name}\n", run.stderr()
        assert status == 3
        assert run.leftovers() is True, [(p, _comm(p)) for p in _marked(run.token)]
    finally:
        run.stop()


def test_a_program_that_ignores_sigterm_is_killed_after_stop_timeout(container, tmp_path):
    script = "trap 'echo got TERM >> /m/got' TERM; sleep 300 & echo ready > /m/ready; while :; do sleep 1; done"
    run = Run(container, tmp_path, script, env={"UDOCKER_STOP_TIMEOUT": "2"})
    try:
        run.ready(sleeps=1)
        os.kill(run.process.pid, signal.SIGTERM)
        status = run.wait()
        assert _until(lambda: run.file("got"), 5) == "got TERM\n"
        assert status == 128 + signal.SIGKILL, run.stderr()
        assert run.leftovers() is True, [(p, _comm(p)) for p in _marked(run.token)]
    finally:
        run.stop()


def test_a_service_with_workers_stops_gracefully_on_sigterm(container, tmp_path):
    run = Run(container, tmp_path, ["sh", "/m/service.sh", "/m"], env={"UDOCKER_STOP_TIMEOUT": "30"},
              files={"service.sh": SERVICE})
    try:
        run.ready(sleeps=2)
        os.kill(run.process.pid, signal.SIGTERM)
        status = run.wait()
        stopped = [run.file(n) for n in ("worker1", "worker2", "main")]
        assert stopped == ["stopped\n"] * 3, (status, sorted(os.listdir(run.dir)), run.stderr())
        assert status == 0
        assert run.leftovers() is True, [(p, _comm(p)) for p in _marked(run.token)]
    finally:
        run.stop()


def _read_until(fd, text, seconds=READY_WITHIN):
    """Output of the terminal `fd` until it holds `text` or the time is up."""
    import select

    out, deadline = b"", time.monotonic() + seconds
    while text.encode() not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


def test_ctrl_c_on_a_terminal_reaches_the_program_and_stops_nothing(container):
    """With a terminal the program stays in its foreground group: ^C reaches it from the terminal, and is no
    stop: an interactive program that handles SIGINT is not killed after stop_timeout."""
    import pty

    repo, name = container
    script = "trap 'echo caught' INT; echo ready; while ! read x; do :; done; echo after $x; exit 4"
    pid, terminal = pty.fork()
    if pid == 0:
        os.chdir(TOP)
        os.execve(sys.executable, repo.argv("run", "-t", name, "sh", "-c", script),
                  dict(repo.env, UDOCKER_STOP_TIMEOUT="1"))
    try:
        assert "ready" in _read_until(terminal, "ready")
        os.write(terminal, b"\x03")
        assert "caught" in _read_until(terminal, "caught")
        time.sleep(2)  # past stop_timeout: nothing may kill the program
        os.write(terminal, b"line\n")
        assert "after line" in _read_until(terminal, "after line")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 4
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(terminal)


def test_the_program_gets_sigpipe_and_sigxfsz_at_their_defaults(container):
    """`yes | head -1` must end `yes` by SIGPIPE: the exec'd engine used to inherit Python's SIG_IGN of SIGPIPE
    and SIGXFSZ."""
    repo, name = container
    result = repo("run", name, "grep", "SigIgn", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    ignored = int(result.stdout.split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0, result.stdout


# --- the DEEPaaS case (issue 8, item 3): a real DEEPaaS API (PyPI's deepaas in a Debian 12 image with
# python3, built by .ci/run) serving its test model, stopped by SIGTERM to `udocker run` in P1 and R1.


@pytest.fixture(scope="module")
def deepaas_image(repo):
    archive = deepaas_archive()
    loaded = repo("-q", "load", "-i", archive, "test/deepaas")
    assert loaded.returncode == 0, loaded.stderr
    return "test/deepaas:12"


@pytest.fixture(scope="module", params=["P1", "P2", "R1", "R2", "R3"])
def deepaas(request, repo, deepaas_image):
    name = f"deepaas-{request.param.lower()}"
    assert repo("create", f"--name={name}", deepaas_image).returncode == 0
    setup = repo("setup", f"--execmode={request.param}", name)
    assert setup.returncode == 0, setup.stderr
    return repo, name


def _free_port():
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def _answers(url):
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_deepaas_api_stops_gracefully_on_sigterm(deepaas, tmp_path):
    """DEEPaaS's main process, its multiprocessing resource tracker and its spawned worker all end on one
    SIGTERM, well within a stop_timeout of 60 s (P1 used to keep the main process until the watchdog's
    SIGKILL), and nothing of the container is left."""
    port = _free_port()
    run = Run(deepaas, tmp_path, ["deepaas-run", "--listen-ip", "127.0.0.1", "--listen-port", str(port)],
              env={"UDOCKER_STOP_TIMEOUT": "60"})
    try:
        if not _until(lambda: run.process.poll() is not None or _answers(f"http://127.0.0.1:{port}/v2/models/"),
                      120) or run.process.poll() is not None:
            pytest.fail(f"the DEEPaaS API did not answer: {run.stderr()[-2000:]}")
        processes = len(_marked(run.token))
        os.kill(run.process.pid, signal.SIGTERM)
        status = run.wait(30)
        assert status is not None, f"still running 30 s after SIGTERM: {run.stderr()[-2000:]}"
        assert status == 0, run.stderr()[-2000:]
        assert processes >= 3  # the main process, the resource tracker, the worker (and the supervisor)
        assert run.leftovers() is True, [(p, _comm(p)) for p in _marked(run.token)]
        assert not _answers(f"http://127.0.0.1:{port}/v2/models/")
    finally:
        run.stop()
