"""kill -9 at random moments of pull, create, rm and rmi, and rmi racing create and run (issue 8).

After every kill the repository must be consistent: `images` and `ps` work and list nothing broken or
half-made, every image verifies, every container keeps the name it was created with (or its name is
free again), and the next command leaves nothing in tmp/. The moments are random (a delay up to the
command's normal duration, or the first entry the command makes in tmp/); the seed is printed, and
UDOCKER_TEST_SEED=N replays a run. Every loop is bounded.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.cli import ok

KILLS = 24  # kills that must land (the process still running when killed)
ATTEMPTS = 60  # at most this many tries to land them
RACES = 8


@pytest.fixture
def rng():
    seed = int(os.environ.get("UDOCKER_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"UDOCKER_TEST_SEED={seed}")
    return random.Random(seed)


def start(udocker, *args):
    return subprocess.Popen([sys.executable, "-m", "udocker", "--repo", udocker.repo, *args], env=udocker.env,
                            cwd=udocker.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=180):
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def timed(udocker, *args):
    began = time.monotonic()
    ok(udocker(*args))
    return time.monotonic() - began


def tmp_entries(udocker):
    try:
        return [name for name in os.listdir(os.path.join(udocker.repo, "tmp")) if name != ".lock"]
    except FileNotFoundError:
        return []


def kill_at_random(udocker, rng, duration, *args):
    """Start udocker ARGS and kill -9 it after a random delay or at its first tmp/ entry; True when the
    kill landed (the process had not ended)."""
    process = start(udocker, *args)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0, duration * 1.2))
    else:
        for _ in range(int(duration * 1.5 / 0.005) + 1):  # poll, bounded by the command's duration
            if process.poll() is not None or tmp_entries(udocker):
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
    landed = process.poll() is None
    if landed:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return landed


def check_consistent(udocker):
    """The repository after a kill: everything listed is whole, and the next command cleans tmp/."""
    rows = json.loads(ok(udocker("ps", "--json")))
    assert tmp_entries(udocker) == [], tmp_entries(udocker)
    for row in rows:
        assert not row.get("broken"), row
        assert row["names"], f"container without its name: {row}"  # every create here names its container
        assert os.path.isdir(os.path.join(udocker.repo, "containers", row["id"], "rootfs"))
    images = json.loads(ok(udocker("images", "--json")))
    for image in images:
        assert not image.get("broken"), image
        ok(udocker("verify", image["reference"]))
    return rows, [image["reference"] for image in images]


def test_kill9_at_random_moments_leaves_the_repository_consistent(udocker, registry, rng):
    image = registry.ref("test/layers:latest")
    duration = {"pull": timed(udocker, "-q", "pull", image), "create": timed(udocker, "create", "--name=c0", image),
                "rm": timed(udocker, "rm", "c0"), "rmi": timed(udocker, "rmi", image)}
    landed, tried, counter = {op: 0 for op in duration}, 0, 0
    while sum(landed.values()) < KILLS and tried < ATTEMPTS:
        tried += 1
        counter += 1
        op = rng.choice(sorted(duration))
        rows, images = check_consistent(udocker)
        if op == "pull" and image in images:
            ok(udocker("rmi", "-f", image))  # the pull has blobs to fetch
        if op != "pull" and image not in images:
            ok(udocker("-q", "pull", image))
        if op == "rm":
            ok(udocker("create", f"--name=r{counter}", image))
        args = {"pull": ("-q", "pull", image), "create": ("create", f"--name=k{counter}", image),
                "rm": ("rm", f"r{counter}"), "rmi": ("rmi", "-f", image)}[op]
        if kill_at_random(udocker, rng, duration[op], *args):
            landed[op] += 1
        rows, images = check_consistent(udocker)
        names = {name for row in rows for name in row["names"]}
        if op == "create" and f"k{counter}" not in names:  # the name a killed create took is free again
            ok(udocker("create", f"--name=k{counter}", image))
        if len(rows) > 4:
            ok(udocker("rm", *[row["id"] for row in rows]))
    print(f"kills landed: {landed} in {tried} attempts")
    assert sum(landed.values()) >= 20, landed
    ok(udocker("-q", "pull", image))
    ok(udocker("create", "--name=final", image))
    check_consistent(udocker)


def _fresh(udocker, image):
    """No container and no unpacked tree of `image`, which is pulled: the next create unpacks it."""
    rows = json.loads(ok(udocker("ps", "--json")))
    if rows:
        ok(udocker("rm", *[row["id"] for row in rows]))
    if image not in ok(udocker("images")):
        ok(udocker("-q", "pull", image))
    ok(udocker("rmi", "-f", image))  # collects the tree, now that no container uses it
    ok(udocker("-q", "pull", image))
    unpacked = os.path.join(udocker.repo, "unpacked")
    assert not os.path.isdir(unpacked) or not os.listdir(unpacked)


def _race(udocker, rng, first, second):
    a = start(udocker, *first)
    time.sleep(rng.uniform(0, 0.3))
    b = start(udocker, *second)
    return finish(a), finish(b)


@pytest.mark.parametrize("force", [False, True], ids=["rmi", "rmi-f"])
def test_rmi_racing_create_never_deletes_what_create_reads(udocker, registry, rng, force):
    image = registry.ref("test/layers:latest")
    outcomes = []
    for i in range(RACES):
        _fresh(udocker, image)
        rmi = ("rmi", "-f", image) if force else ("rmi", image)
        create = ("create", f"--name=c{i}", image)
        pair = _race(udocker, rng, create, rmi) if i % 2 == 0 else _race(udocker, rng, rmi, create)[::-1]
        (crc, _, cerr), (rrc, _, rerr) = pair
        assert "cannot read layer" not in cerr and "blob" not in cerr, cerr
        if crc == 0:
            rootfs = ok(udocker("inspect", "-p", f"c{i}")).strip()
            assert os.path.isfile(os.path.join(rootfs, "bin", "busybox"))
            if not force:
                assert rrc == 1 and ("is used by container" in rerr or "being unpacked" in rerr), rerr
        else:
            assert cerr.startswith("error: image not found"), cerr
            assert rrc == 0, rerr
        outcomes.append((crc, rrc))
        check_consistent(udocker)
    print(f"create/rmi{' -f' if force else ''} races: {outcomes}")


def test_rmi_racing_run_never_deletes_what_run_reads(udocker, registry, rng):
    image = registry.ref("test/busybox:latest")
    ok(udocker("-q", "pull", image))
    outcomes = []
    for i in range(RACES):
        _fresh(udocker, image)
        run = ("run", "--rm", "--pull=never", image, "echo", f"ran{i}")
        rmi = ("rmi", "-f", image) if i % 2 else ("rmi", image)
        (urc, out, uerr), (rrc, _, rerr) = _race(udocker, rng, run, rmi)
        assert "cannot read layer" not in uerr, uerr
        if urc == 0:
            assert out == f"ran{i}\n"
        else:
            assert urc == 125 and ("not found" in uerr or "no container or image" in uerr), uerr
        assert rrc == 0 or "is used by container" in rerr or "being unpacked" in rerr, rerr
        outcomes.append((urc, rrc))
        check_consistent(udocker)
    print(f"run/rmi races: {outcomes}")
