"""The run records of a container (store/runs.py) and the rotated log of detached runs (engines/detach.py)."""

import json
import os
import subprocess
import sys
import time

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


def _dead_owner():
    """The owner of a process of this node that ran and is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = lockfile.process_start(child.pid)
    child.kill()
    child.wait()
    me = lockfile.me()
    return lockfile.Owner(me.host, me.boot, me.pidns, child.pid, start)


def _record_of_a_dead_process(tmp_path):
    """The record a run left when it was killed unseen: its process is gone."""
    owner = _dead_owner()
    (tmp_path / "runs").mkdir(exist_ok=True)
    record = {"owner": owner.token(), "pid": owner.pid, "mode": "R1", "started": 1.0e9, "stop_timeout": 10}
    (tmp_path / "runs" / f"{owner.pid}-{owner.start}.json").write_text(json.dumps(record))


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
    dead = _dead_owner()
    me = lockfile.me()
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


def _kept(path, tag):
    """The numbers of writer `tag`'s lines in the log and its rotated part, oldest first; every line whole."""
    numbers = []
    for name in (path + ".1", path):
        if os.path.exists(name):
            for line in open(name, "rb").read().splitlines():
                assert line[:1] in (b"A", b"B") and line[1:].isdigit(), line  # no torn or mixed line
                if line[:1] == tag:
                    numbers.append(int(line[1:]))
    return numbers


SLACK = 512  # bytes: what loggers had read when they checked the log's size (a few batches)


def _until_logged(path, line):
    for _ in range(100000):
        for name in (path, path + ".1"):
            try:
                if line in open(name, "rb").read():
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.001)
    return False


def test_two_loggers_of_one_log_rotate_without_losing_or_tearing_lines(tmp_path):
    """Two detached runs of one container: two loggers append to one log and both want to rotate it. What is
    kept of each writer is its latest lines without a gap (a rotation never drops the newer part), in order,
    and the log and its rotated part stay near the cap after every batch of lines."""
    path = str(tmp_path / "container.log")
    limit = 4096
    code = ("import sys; from udocker.engines.detach import write_log; "
            f"write_log(sys.stdin.fileno(), {path!r}, limit={limit})")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    loggers = {tag: subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env)
               for tag in (b"A", b"B")}
    for start in range(0, 4000, 20):  # ~10 rotations' worth from each, both loggers busy at once
        for tag, logger in loggers.items():
            logger.stdin.write(b"".join(tag + b"%d\n" % number for number in range(start, start + 20)))
            logger.stdin.flush()
        for tag in loggers:  # both wrote the batch (else a logger would read it all in one chunk at the end)
            assert _until_logged(path, tag + b"%d\n" % (start + 19))
        sizes = [os.path.getsize(name) if os.path.exists(name) else None for name in (path, path + ".1")]
        # A rotation keeps a full log (never a fresh one that another logger had just started), and nobody
        # goes on writing into the rotated one: both stay near the cap (a batch is ~120 bytes a writer).
        assert sizes[0] <= limit + SLACK and (sizes[1] is None or limit - SLACK <= sizes[1] <= limit + SLACK), sizes
    for logger in loggers.values():
        logger.stdin.close()
        assert logger.wait(timeout=60) == 0
    for tag in (b"A", b"B"):
        kept = _kept(path, tag)
        assert kept and kept[-1] == 3999, (tag, kept[-5:])
        assert kept == list(range(kept[0], 4000)), tag  # a suffix: nothing lost in the middle


def test_a_partial_line_is_logged_while_the_program_waits(tmp_path):
    """Lines are logged whole, but a prompt or a progress bar without a newline still shows up in the log."""
    path = str(tmp_path / "container.log")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(writer)
        try:
            write_log(reader, path)
        finally:
            os._exit(0)
    os.close(reader)
    os.write(writer, b"line one\nprogress 10%")
    try:
        assert _until_logged(path, b"line one\nprogress 10%")
        os.write(writer, b"\rprogress 100%\n")
    finally:
        os.close(writer)
        os.waitpid(pid, 0)
    assert open(path, "rb").read() == b"line one\nprogress 10%\rprogress 100%\n"


def test_the_end_of_a_run_reads_no_proc_stat_of_the_others(tmp_path, monkeypatch):
    """Issue 13 item 4: every run's end sweeps the records of the runs beside it, so the sweep costs one
    kill(pid, 0) per record and reads no /proc/PID/stat (~1.4 ms per run when 64 run at once). A live run's
    record stays; so does, until its pid is gone too, the record of a dead run whose pid another process took
    (ps sees that one as lost: test_a_pid_reused_by_another_process_is_not_the_run)."""
    me = lockfile.me()
    (tmp_path / "runs").mkdir()
    alive = lockfile.Owner(me.host, me.boot, me.pidns, os.getppid(), lockfile.process_start(os.getppid()))
    reused = alive.replace(start=alive.start + 1000)
    for owner in (alive, reused):
        (tmp_path / "runs" / f"{owner.token()}.json").write_text("{}")
    started = runs.begin(str(tmp_path), mode="P1", stop_timeout=10)
    read = []
    monkeypatch.setattr(lockfile, "process_start", lambda pid: read.append(pid))
    runs.end(started, 0)
    assert read == []
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(["last.json", f"{alive.token()}.json",
                                                            f"{reused.token()}.json"])
