"""Services (issue 11, items 1, 2 and 4): `run -d`, `ps` with the run state, `logs`, `stop`, `kill`, `wait` and
`wait --until-port`, `rm` of a running container, `run -d --rm`. In P1 and R1, as the unprivileged test user,
with the real DEEPaaS test image (UDOCKER_TEST_DEEPAAS: Debian 12 with python3, PyPI's deepaas and our minimal
model tests/support/udocker_demo_model, built by .ci/run). A container's processes are found by a token in their
environment or command line (-e TOKEN=1: the detached udocker keeps its command line)."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.support.procs import deepaas_archive
from tests.support.procs import marked as _marked
from tests.support.procs import until as _until

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["P1", "R1"]


class Repo:
    def __init__(self, path, home):
        self.path = str(path)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
                    "PYTHONPATH": TOP, "PYTHONDONTWRITEBYTECODE": "1"}

    def __call__(self, *args, timeout=300):
        return subprocess.run([sys.executable, "-m", "udocker", "--repo", self.path, *args], cwd=TOP, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    archive = deepaas_archive()
    base = tmp_path_factory.mktemp("services")
    (base / "home").mkdir()
    udocker = Repo(base / "repo", base / "home")
    loaded = udocker("-q", "load", "-i", archive, "test/deepaas")
    assert loaded.returncode == 0, loaded.stderr
    udocker.image = "test/deepaas:12"
    return udocker


@pytest.fixture(scope="module", params=MODES)
def mode(request, repo):
    name = f"svc-{request.param.lower()}"
    assert repo("create", f"--name={name}", repo.image).returncode == 0
    setup = repo("setup", f"--execmode={request.param}", name)
    assert setup.returncode == 0, setup.stderr
    return request.param


def _container(repo, mode, label):
    """A new container of the image in `mode`, named NAME-label."""
    name = f"{label}-{mode.lower()}-{uuid.uuid4().hex[:6]}"
    assert repo("create", f"--name={name}", repo.image).returncode == 0
    setup = repo("setup", f"--execmode={mode}", name)
    assert setup.returncode == 0, setup.stderr
    return name


def _free_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _models(port):
    """The names of the models the DEEPaaS API at `port` serves (GET /v2/models/)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/", timeout=30) as response:
        return [model["name"] for model in json.loads(response.read())["models"]]


def _predict(port, text):
    """Our demo model's prediction for `text` (POST /v2/models/udocker-demo/predict/?text=...)."""
    query = urllib.parse.urlencode({"text": text})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/udocker-demo/predict/?{query}",
                                     data=b"", method="POST", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _row(repo, name):
    done = repo("ps", "--json")
    assert done.returncode == 0, done.stderr
    rows = [row for row in json.loads(done.stdout) if name in row["names"]]
    return rows[0] if rows else None


def _detach(repo, name, *command, options=()):
    """`run -d` of `command` in `name` with a token in its environment; (token, the run's answer)."""
    token = f"I11_{uuid.uuid4().hex}"
    done = repo("run", "-d", "-e", f"{token}=1", *options, name, *command, timeout=120)
    return token, done


def _kill_all(token):
    for pid in _marked(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_a_detached_deepaas_service_is_listed_logged_and_stopped(repo, mode):
    name = f"svc-{mode.lower()}"
    port = _free_port()
    token, done = _detach(repo, name, "deepaas-run", "--listen-ip", "127.0.0.1", "--listen-port", str(port),
                          options=("-e", "PYTHONUNBUFFERED=1"))
    try:
        assert done.returncode == 0, done.stderr
        cid = done.stdout.strip()
        assert len(cid) == 36 and done.stdout == cid + "\n"
        ready = repo("wait", "--until-port", str(port), "--timeout", "180", name, timeout=200)
        assert ready.returncode == 0, (ready.stderr, repo("logs", name).stdout[-3000:])
        assert _answers(f"http://127.0.0.1:{port}/v2/models/")
        assert _models(port) == ["udocker-demo"]  # our model's entry point, not DEEPaaS's built-in test model
        text = f"udocker {mode} {uuid.uuid4().hex}"
        answer = _predict(port, text)["predictions"]  # a predict call: the model's work is done
        assert answer == {"model": "udocker-demo", "reversed": text[::-1], "length": len(text),
                          "sha256": hashlib.sha256(text.encode()).hexdigest()}, answer
        row = _row(repo, name)
        assert row["status"] == "running" and row["mode"] == mode, row
        assert isinstance(row["pid"], int) and row["pid"] in _marked(token)
        table = repo("ps").stdout
        line = [text for text in table.splitlines() if text.startswith(cid)][0]
        assert " Up " in f" {line} " and str(row["pid"]) in line.split() and mode in line.split(), table
        assert _until(lambda: "Running on" in repo("logs", name).stdout, 30), repo("logs", name).stdout[-3000:]
        tail = repo("logs", "--tail", "1", name).stdout
        assert len(tail.splitlines()) <= 1
        started = time.monotonic()
        stopped = repo("stop", "-t", "30", name, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert time.monotonic() - started < 30
        assert _until(lambda: not _marked(token), 2) is True, _marked(token)
        assert not _answers(f"http://127.0.0.1:{port}/v2/models/")
        row = _row(repo, name)
        assert row["status"] == "exited" and row["exit"] == 0 and row["pid"] is None, row
        assert "Exited (0)" in repo("ps").stdout
        assert repo("wait", name).stdout == "0\n"
    finally:
        _kill_all(token)


def test_kill_9_of_every_process_shows_exited_and_rm_works(repo, mode):
    name = _container(repo, mode, "k9")
    token, done = _detach(repo, name, "sh", "-c", "sleep 300 & sleep 300; wait")
    try:
        assert done.returncode == 0, done.stderr
        assert _row(repo, name)["status"] == "running"
        pids = _marked(token)
        assert len(pids) >= 3
        _kill_all(token)
        assert _until(lambda: not _marked(token), 5) is True
        row = _row(repo, name)
        assert row["status"] == "exited" and row["pid"] is None, row
        assert "Up" not in [line for line in repo("ps").stdout.splitlines() if name in line][0]
        removed = repo("rm", name)
        assert removed.returncode == 0, removed.stderr
        assert _row(repo, name) is None
    finally:
        _kill_all(token)


def test_rm_of_a_running_container_needs_f(repo, mode):
    name = _container(repo, mode, "rmf")
    token, done = _detach(repo, name, "sleep", "300")
    try:
        assert done.returncode == 0, done.stderr
        refused = repo("rm", name)
        assert refused.returncode == 1 and refused.stdout == "", refused
        assert refused.stderr.startswith("error: ") and "running" in refused.stderr.splitlines()[0]
        assert _row(repo, name)["status"] == "running"
        forced = repo("rm", "-f", name, timeout=120)
        assert forced.returncode == 0, forced.stderr
        assert _until(lambda: not _marked(token), 2) is True
        assert _row(repo, name) is None
    finally:
        _kill_all(token)


def test_run_d_rm_removes_the_container_when_it_stops(repo, mode):
    name = f"rm-{mode.lower()}-{uuid.uuid4().hex[:6]}"
    token, done = _detach(repo, repo.image, "sleep", "300", options=("--rm", f"--name={name}"))
    try:
        assert done.returncode == 0, done.stderr
        assert _row(repo, name)["status"] == "running"
        stopped = repo("stop", "-t", "5", name, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert _until(lambda: _row(repo, name) is None, 10)
        assert not _marked(token)
    finally:
        _kill_all(token)


def test_wait_until_port_fails_when_the_container_exits_first(repo, mode):
    name = _container(repo, mode, "exit")
    token, done = _detach(repo, name, "sh", "-c", "echo started; sleep 1; exit 3")
    try:
        assert done.returncode == 0, done.stderr
        waited = repo("wait", "--until-port", str(_free_port()), "--timeout", "60", name, timeout=90)
        assert waited.returncode != 0 and len(waited.stderr.splitlines()) == 1, waited
        assert "exited" in waited.stderr
        assert repo("wait", name).stdout == "3\n"
        assert _row(repo, name)["exit"] == 3
        assert repo("logs", "-f", name, timeout=30).stdout == "started\n"  # -f ends: the container is not running
    finally:
        _kill_all(token)


def test_wait_until_port_times_out_and_kill_signals_the_program(repo, mode):
    name = _container(repo, mode, "kill")
    token, done = _detach(repo, name, "sh", "-c", "trap 'exit 7' USR1; while :; do sleep 0.2; done")
    try:
        assert done.returncode == 0, done.stderr
        started = time.monotonic()
        waited = repo("wait", "--until-port", str(_free_port()), "--timeout", "2", name, timeout=60)
        assert waited.returncode != 0 and len(waited.stderr.splitlines()) == 1, waited
        assert "timeout" in waited.stderr or "timed out" in waited.stderr
        assert time.monotonic() - started < 30
        assert repo("kill", "-s", "USR1", name).returncode == 0
        assert repo("wait", name, timeout=60).stdout == "7\n"
        assert _until(lambda: not _marked(token), 2) is True
    finally:
        _kill_all(token)


def test_a_foreground_run_is_recorded(repo, mode):
    name = f"svc-{mode.lower()}"
    assert repo("run", name, "sh", "-c", "exit 5").returncode == 5
    row = _row(repo, name)
    assert row["status"] == "exited" and row["exit"] == 5 and row["mode"] == mode, row
    assert repo("logs", "--tail", "0", name).returncode == 0


def test_two_detached_runs_share_a_log_past_its_rotation(repo):
    """Two detached runs of one container write ~12 MB each into its log at the same time (the cap is 10 MB,
    rotated once): every line stays whole, each run keeps its latest lines without a gap, and the log and its
    rotated part stay near the cap."""
    from udocker.engines.detach import LOG_MAX

    name = _container(repo, "P1", "logs")
    last = 1_500_000
    tokens = []
    try:
        for tag in "AB":
            token, done = _detach(repo, name, "seq", "-f", f"{tag}%.0f", "1", str(last))
            assert done.returncode == 0, done.stderr
            tokens.append(token)
        assert _until(lambda: not any(_marked(t) for t in tokens), 240) is True
        assert _until(lambda: _row(repo, name)["status"] == "exited", 30), _row(repo, name)
        logs = repo("logs", name, timeout=120)
        assert logs.returncode == 0, logs.stderr
        kept = {"A": [], "B": []}
        for line in logs.stdout.splitlines():
            assert line[:1] in kept and line[1:].isdigit(), line[:80]  # whole lines: none torn by the other run
            kept[line[:1]].append(int(line[1:]))
        for tag, numbers in kept.items():
            assert numbers and numbers[-1] == last and numbers == list(range(numbers[0], last + 1)), tag
        slack = 4 * 65536  # what each logger had read when it checked the size
        assert LOG_MAX - slack <= len(logs.stdout) <= 2 * LOG_MAX + slack, len(logs.stdout)
        assert kept["A"][0] > 1 or kept["B"][0] > 1  # past the cap: the oldest lines (of either run) went
    finally:
        for token in tokens:
            _kill_all(token)
