"""The run records of a container (store/runs.py) and the rotated log of detached runs (engines/detach.py)."""

import json
import os
import subprocess
import sys

from udocker import lockfile
from udocker.engines.detach import write_log
from udocker.store import runs


def test_a_run_is_running_while_its_process_lives_then_ends_in_last_json(tmp_path):
    started = runs.begin(str(tmp_path), mode="P1", stop_timeout=10)
    summary = runs.summary(str(tmp_path))
    assert (summary["status"], summary["pid"], summary["mode"], summary["runs"]) == ("running", os.getpid(), "P1", 1)
    runs.end(started, 3)
    assert os.listdir(tmp_path / "runs") == ["last.json"]
    summary = runs.summary(str(tmp_path))
    assert (summary["status"], summary["exit"], summary["pid"], summary["mode"]) == ("exited", 3, None, "P1")


def test_a_container_without_runs_gets_the_directory_at_its_first_run(tmp_path):
    """runs/ is made when missing (a container made before runs were recorded), not looked for at every run;
    the records get the umask's permissions."""
    started = runs.begin(str(tmp_path), mode="R1", stop_timeout=10)
    assert os.listdir(tmp_path / "runs") == [os.path.basename(started[0])]
    assert json.loads(open(started[0]).read())["mode"] == "R1"
    runs.end(started, 0)
    assert json.loads((tmp_path / "runs" / "last.json").read_text())["exit"] == 0
    again = runs.begin(str(tmp_path), mode="R1", stop_timeout=10)
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(["last.json", os.path.basename(again[0])])
    runs.end(again, 1)


def test_a_container_never_run_is_created(tmp_path):
    assert runs.summary(str(tmp_path))["status"] == "created"


def _record_of_a_dead_process(tmp_path):
    """The record a run left when it was killed unseen: its process is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = lockfile.process_start(child.pid)
    child.kill()
    child.wait()
    me = lockfile.me()
    owner = lockfile.Owner(me.host, me.boot, me.pidns, child.pid, start)
    (tmp_path / "runs").mkdir(exist_ok=True)
    record = {"owner": owner.token(), "pid": child.pid, "mode": "R1", "started": 1.0e9, "stop_timeout": 10}
    (tmp_path / "runs" / f"{child.pid}-{start}.json").write_text(json.dumps(record))


def test_a_run_that_died_unseen_is_exited_never_running(tmp_path):
    _record_of_a_dead_process(tmp_path)
    summary = runs.summary(str(tmp_path))
    assert (summary["status"], summary["exit"], summary["lost"]) == ("exited", runs.LOST_STATUS, True)
    assert runs.live(str(tmp_path)) == []


def test_a_pid_reused_by_another_process_is_not_the_run(tmp_path):
    me = lockfile.me()
    assert runs.same_process(me.pid, me.start)
    assert not runs.same_process(me.pid, me.start + 1000)


def test_the_end_of_a_run_removes_the_records_of_dead_runs(tmp_path):
    _record_of_a_dead_process(tmp_path)
    runs.end(runs.begin(str(tmp_path), mode="P1", stop_timeout=10), 0)
    assert os.listdir(tmp_path / "runs") == ["last.json"]
    assert runs.summary(str(tmp_path))["exit"] == 0


def test_the_end_of_a_run_judges_other_records_by_their_names(tmp_path):
    """A record is named by its run's owner: the end of a run removes a dead run's record without reading it
    (64 runs of one container at once would read each other's records otherwise), keeps a live one, and
    still reads a record named the old way (<pid>-<start>.json)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = lockfile.process_start(child.pid)
    child.kill()
    child.wait()
    me = lockfile.me()
    dead = lockfile.Owner(me.host, me.boot, me.pidns, child.pid, start)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{dead.token()}.json").write_text("not read")
    other = lockfile.Owner("othernode", "b" * 32, 1, 4242, 99)
    (tmp_path / "runs" / f"{other.token()}.json").write_text(json.dumps({"owner": other.token(), "pid": 4242}))
    started = runs.begin(str(tmp_path), mode="P1", stop_timeout=10)
    assert os.path.basename(started[0]) == f"{me.token()}.json"
    runs.end(started, 0)
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(["last.json", f"{other.token()}.json"])


def test_a_run_of_another_node_counts_as_running_there(tmp_path):
    (tmp_path / "runs").mkdir()
    owner = lockfile.Owner("othernode", "b" * 32, 1, 4242, 99)
    record = {"owner": owner.token(), "pid": 4242, "host": "othernode", "mode": "P1", "started": 1.0e9}
    (tmp_path / "runs" / "4242-99.json").write_text(json.dumps(record))
    summary = runs.summary(str(tmp_path))
    assert (summary["status"], summary["host"], summary["pid"]) == ("running", "othernode", None)


def _log(path, data, limit):
    reader, writer = os.pipe()
    os.write(writer, data)
    os.close(writer)
    write_log(reader, path, limit=limit)
    os.close(reader)


def test_the_log_is_rotated_and_capped(tmp_path):
    path = str(tmp_path / "container.log")
    for line in (b"x" * 60 + b"\n", b"y" * 60 + b"\n", b"z" * 10 + b"\n"):
        _log(path, line, 100)
    assert open(path + ".1", "rb").read() == b"x" * 60 + b"\n"
    assert open(path, "rb").read() == b"y" * 60 + b"\n" + b"z" * 10 + b"\n"
