"""The runs of a container: containers/<id>/runs/, one record per run of `udocker run` (detached or not).

A run is the `udocker run` process that supervises the container's program (engines/supervisor.py: nothing of
the container outlives it; SIGTERM to it is a stop with a grace period). It is identified by its owner token
(lockfile.Owner: host, boot id, PID namespace, pid and start time), so that a record left by a run that died
unseen (kill -9 of every process, the node rebooted) is never taken for a live run whose pid was reused.

- begin(): at the start, `runs/<owner token>.json` (one atomic write, not fsynced: a crash ends the run too);
- end(): at the end, the record with its exit status replaces `runs/last.json` and its own file goes; records
  of runs of this node that are provably dead are removed then (they are older than this end), judged by
  their names: with many runs of one container at once (a job array), no run reads the others' records;
- listing (ps, stop, wait) checks each live record: on this node, in this PID namespace, psutil (imported
  here, never on the start path of `run`) says whether the process with that pid and start time still runs.
  A run of another node (a repository on a shared file system) or PID namespace cannot be checked: it is
  listed as running there ("host").

Several runs of one container may overlap: the container is running while any run is; `last.json` holds the
run that ended last."""

import os
import time

from udocker import fastjson, fs, lockfile
from udocker.errors import UdockerError
from udocker.paths import Layout

LAST = "last.json"
LOST_STATUS = 137  # a run that died unseen: as if killed by SIGKILL (kill -9, a node's power cut)


def begin(directory, *, mode, stop_timeout, detached=False, logger=None, volumes=(), ports=()):
    """Record the run of this process in the container `directory`; returns (path, record). `volumes`: its -v
    binds ("HOST:CONTAINER[:ro]", for a later run's --volumes-from); `ports`: what it published."""
    owner = lockfile.me()
    record = {"owner": owner.token(), "pid": owner.pid, "host": owner.host, "mode": mode, "detached": detached,
              "started": time.time(), "stop_timeout": stop_timeout, "logger": logger}
    if volumes:
        record["volumes"] = list(volumes)
    if ports:
        record["ports"] = [list(port) for port in ports]
    path = os.path.join(Layout.container_runs(directory), f"{owner.token()}.json")
    _write(path, record)
    return path, record


def _write(path, record):
    """Write a run's record (atomically, not fsynced: a crash ends the run too; with the umask's permissions,
    no chmod). runs/ is made only when missing (a container made before runs were recorded): every call
    here is a round trip to the server of a repository on NFS or Lustre."""
    data = fastjson.dumps(record).encode()
    try:
        with fs.atomic_output(path, mode=None, durable=False) as stream:
            stream.write(data)
    except FileNotFoundError:
        try:
            os.mkdir(os.path.dirname(path), 0o755)
        except FileExistsError:
            pass
        fs.atomic_write(path, data, mode=None, durable=False)
    except OSError as exc:
        raise fs.store_error("write", path, exc) from None


def end(started, status):
    """The run begun as `started` ended with `status`: it becomes last.json. Never raises (the container may
    have been removed meanwhile)."""
    if not started:
        return
    path, record = started
    try:
        _finish(path, record, status)
        _prune(os.path.dirname(path))
    except (OSError, UdockerError):
        pass


def cancel(started):
    """The run begun as `started` never started (refused before the engine ran): it leaves no record. Never
    raises."""
    if started:
        try:
            os.unlink(started[0])
        except OSError:
            pass


def _finish(path, record, status):
    _write(os.path.join(os.path.dirname(path), LAST), dict(record, exit=status, finished=time.time()))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def forget(run, status=LOST_STATUS):
    """A run found dead or killed by another process (stop): record its end as `status` if it has none."""
    if os.path.exists(run["path"]):
        try:
            _finish(run["path"], {k: v for k, v in run.items() if k not in ("path", "state")}, status)
        except (OSError, UdockerError):
            pass


def _prune(runs):
    """Remove the records of runs of this node whose process is gone (lockfile's test: no psutil). The owner
    is in the record's name; a record named otherwise (`<pid>-<start>.json`, before) is read for it. Every
    run's end sweeps, and 64 concurrent runs each see the 63 others: one kill(pid, 0) per record, no read of
    /proc/PID/stat (~1.4 ms per run with 64 alive, issue 13 item 4); a record whose pid was reused stays until
    that process is gone too (ps, stop and wait check the start time: they see it lost)."""
    for name in os.listdir(runs):
        if name == LAST or name.startswith(".") or not name.endswith(".json"):
            continue
        owner = lockfile.Owner.parse(name[:-len(".json")])
        if owner is None:
            record = _read(os.path.join(runs, name))
            owner = lockfile.Owner.parse(record.get("owner", "")) if record else None
        if owner and lockfile.provably_dead(owner, reused=False):
            try:
                os.unlink(os.path.join(runs, name))
            except FileNotFoundError:
                pass


def _read(path):
    try:
        with open(path, "rb") as stream:
            record = fastjson.loads(stream.read())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


# -- reading -----------------------------------------------------------------------------------------------
def records(directory):
    """The runs recorded in the container `directory` that have not ended, each a dict with "path" and
    "state": "running" (checked alive here), "elsewhere" (another node or PID namespace: not checkable) or
    "lost" (dead without its end recorded). Oldest first."""
    runs = Layout.container_runs(directory)
    try:
        names = sorted(os.listdir(runs))
    except OSError:
        return []
    found = []
    for name in names:
        if name == LAST or name.startswith(".") or not name.endswith(".json"):
            continue
        record = _read(os.path.join(runs, name))
        if record is not None:
            record.update(path=os.path.join(runs, name), state=_state(record))
            found.append(record)
    return sorted(found, key=lambda r: r.get("started") or 0)


def live(directory):
    """The runs of the container that may still run (running here, or elsewhere)."""
    return [run for run in records(directory) if run["state"] != "lost"]


def volumes(directory):
    """The volumes ("HOST:CONTAINER[:ro]") of the container's latest run (begun last, ended or not), or []."""
    runs = Layout.container_runs(directory)
    try:
        names = [name for name in os.listdir(runs) if name.endswith(".json") and not name.startswith(".")]
    except OSError:
        return []
    found = [record for record in (_read(os.path.join(runs, name)) for name in names) if record]
    latest = max(found, key=lambda record: record.get("started") or 0, default={})
    return [text for text in latest.get("volumes") or () if isinstance(text, str)]


def last(directory):
    """The record of the run that ended last, or None."""
    return _read(os.path.join(Layout.container_runs(directory), LAST))


def _state(record):
    owner = lockfile.Owner.parse(record.get("owner", ""))
    if owner is None:
        return "lost"
    mine = lockfile.me()
    if owner.host != mine.host:
        return "elsewhere"
    if not mine.boot or owner.boot != mine.boot:
        return "lost" if mine.boot and owner.boot else "elsewhere"
    if owner.pidns != mine.pidns:
        return "elsewhere"
    return "running" if same_process(owner.pid, owner.start) else "lost"


def identity(run):
    """(pid, start time) of the process of the run record `run`, from its owner token ((pid, -1), never
    the same process, for a record without one)."""
    owner = lockfile.Owner.parse(run.get("owner") or "")
    return (owner.pid, owner.start) if owner else (run.get("pid"), -1)


def same_process(pid, start):
    """True when process `pid` runs and started at `start` (clock ticks since boot), as psutil sees it."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        ticks = (process.create_time() - psutil.boot_time()) * os.sysconf("SC_CLK_TCK")
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # another user's process (hidepid): not our run
        return False
    return abs(ticks - start) <= 2


def summary(directory):
    """What `ps` shows of the container: {"status": "running"|"exited"|"created", "pid", "mode", "started",
    "finished", "exit", "runs" (live runs), "host" (when it runs on another node), "lost" (the last run died
    unseen)}."""
    found = records(directory)
    running = [run for run in found if run["state"] != "lost"]
    if running:
        first = running[0]
        return {"status": "running", "pid": first["pid"] if first["state"] == "running" else None,
                "mode": first.get("mode"), "started": first.get("started"), "finished": None, "exit": None,
                "runs": len(running), "host": None if first["state"] == "running" else first.get("host")}
    ended = last(directory)
    lost = [run for run in found if not ended or (run.get("started") or 0) > (ended.get("started") or 0)]
    if lost:
        ended = dict(lost[-1], exit=LOST_STATUS, finished=None, lost=True)
    if not ended:
        return {"status": "created", "pid": None, "mode": None, "started": None, "finished": None, "exit": None,
                "runs": 0}
    return {"status": "exited", "pid": None, "mode": ended.get("mode"), "started": ended.get("started"),
            "finished": ended.get("finished"), "exit": ended.get("exit"), "runs": 0, "lost": bool(ended.get("lost"))}
