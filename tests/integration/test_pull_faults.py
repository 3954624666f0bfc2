"""Pulls through a fault-injecting proxy in front of the real registry: cuts, 429/5xx, wrong bytes,
kills at several points, concurrent pulls into one repository."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.integration.test_pull import _errors

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.host) as running:
        yield running


def _layers(registry, name="test/layers", tag="latest"):
    request = urllib.request.Request(f"{registry.url}/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request) as answer:
        manifest = json.load(answer)
    return [layer["digest"] for layer in manifest["layers"]]


def _blob_gets(proxy, digest):
    return [entry for entry in proxy.log if entry[0] == "GET" and entry[1].endswith("/blobs/" + digest)]


def _env(tmp_path, **extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "UDOCKER_DIR": str(tmp_path / "repo"), "UDOCKER_STALL_TIMEOUT": "5"}
    env.update(extra)
    return env


def _cmd(*args):
    return [sys.executable, "-m", "udocker", *args]


def _run(tmp_path, *args, **env):
    return subprocess.run(_cmd(*args), env=_env(tmp_path, **env), cwd=TOP, capture_output=True, text=True,
                          timeout=120)


def _clean(tmp_path):
    return [n for n in os.listdir(tmp_path / "repo" / "tmp") if n != ".lock"] == []


def test_cut_transfer_resumes_with_range(tmp_path, proxy, registry):
    big = _layers(registry)[0]
    proxy.faults.append(Fault("/blobs/" + big, "cut"))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest")
    assert result.returncode == 0, result.stderr
    gets = _blob_gets(proxy, big)
    assert len(gets) == 2 and gets[0][2] is None and gets[1][2].startswith("bytes=") and gets[1][3] == 206
    assert _run(tmp_path, "verify", f"{proxy.host}/test/layers:latest").returncode == 0


def test_server_ignoring_range_restarts_the_blob(tmp_path, proxy, registry):
    big = _layers(registry)[0]
    proxy.faults += [Fault("/blobs/" + big, "cut"), Fault("/blobs/" + big, "ignore-range")]
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest")
    assert result.returncode == 0, result.stderr
    assert _run(tmp_path, "verify", f"{proxy.host}/test/layers:latest").returncode == 0


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_statuses_are_retried(tmp_path, proxy, registry, status):
    proxy.faults += [Fault("/manifests/", "status", times=2, status=status),
                     Fault("/blobs/", "status", times=2, status=status)]
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest")
    assert result.returncode == 0, result.stderr


def test_persistent_5xx_is_a_clear_error(tmp_path, proxy):
    proxy.faults.append(Fault("/manifests/", "status", times=100, status=503))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES="2")
    assert result.returncode == 1
    assert _errors(result.stderr)[0] == (f"error: registry {proxy.host} failed with HTTP 503 for manifest "
                                         f"{proxy.host}/test/layers:latest")
    assert "Traceback" not in result.stderr


def test_wrong_blob_is_rejected_and_nothing_registered(tmp_path, proxy, registry):
    bad = _layers(registry)[-1]
    proxy.faults.append(Fault("/blobs/" + bad, "wrong", times=100))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES="1")
    assert result.returncode == 1
    assert _errors(result.stderr)[0].startswith(f"error: digest mismatch for blob {bad}")
    assert not os.path.exists(tmp_path / "repo" / "store" / "blobs" / "sha256" / bad.split(":")[1])
    assert "test/layers" not in _run(tmp_path, "images").stdout
    assert _clean(tmp_path)


@pytest.mark.parametrize("where", ["/manifests/", "first-layer", "last-layer"])
def test_pull_killed_then_pulled_again_completes(tmp_path, proxy, registry, where):
    layers = _layers(registry)
    match = {"/manifests/": "/manifests/", "first-layer": "/blobs/" + layers[0],
             "last-layer": "/blobs/" + layers[-1]}[where]
    proxy.faults.append(Fault(match, "stall", seconds=60))
    ref = f"{proxy.host}/test/layers:latest"
    process = subprocess.Popen(_cmd("pull", ref), env=_env(tmp_path, UDOCKER_STALL_TIMEOUT="120"), cwd=TOP,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(match in entry[1] for entry in proxy.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    proxy.faults.clear()
    result = _run(tmp_path, "pull", ref)
    assert result.returncode == 0, result.stderr
    assert _run(tmp_path, "verify", ref).returncode == 0
    assert _clean(tmp_path)


def test_concurrent_pulls_into_one_repository(tmp_path, proxy, registry):
    ref = f"{proxy.host}/test/layers:latest"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _run(tmp_path, "pull", ref), range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    for digest in _layers(registry):
        assert len(_blob_gets(proxy, digest)) == 1
    assert _run(tmp_path, "verify", ref).returncode == 0
    assert _clean(tmp_path)
