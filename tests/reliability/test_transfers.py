"""Every transfer is bounded: a server that cuts every blob answer and ignores Range, and one that sends
headers and then nothing, make a pull fail with one error line after a bounded number of requests (before,
the first pulled forever: every restart from byte 0 counted as progress)."""

import os

import pytest

from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.integration.test_pull import _errors
from tests.integration.test_pull_faults import _blob_gets, _clean, _layers, _run

RETRIES = 2


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.host) as running:
        yield running


def _failed_once(result, digest):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = _errors(result.stderr)
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    assert lines[0].startswith(f"error: download of blob {digest} in "), lines[0]
    return lines[0]


def test_cut_and_range_ignored_fails_after_retries(tmp_path, proxy, registry):
    big = _layers(registry)[0]
    proxy.faults.append(Fault("/blobs/" + big, "cut-ignore-range", times=10000, size=1000))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES=str(RETRIES))
    line = _failed_once(result, big)
    assert "without progress past byte 1000" in line
    # the first answer makes progress (0 -> 1000 bytes), then RETRIES + 1 answers that get no further
    assert len(_blob_gets(proxy, big)) == RETRIES + 2
    assert _clean(tmp_path)
    assert "test/layers" not in _run(tmp_path, "images").stdout


def test_cut_and_range_ignored_with_progress_each_time_completes(tmp_path, proxy, registry):
    """A server that ignores Range but sends more every time is progress: the pull completes."""
    big = _layers(registry)[0]
    proxy.faults += [Fault("/blobs/" + big, "cut-ignore-range", size=1000 * n) for n in (1, 2, 3, 4)]
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES="1")
    assert result.returncode == 0, result.stderr
    assert len(_blob_gets(proxy, big)) == 5
    assert _run(tmp_path, "verify", f"{proxy.host}/test/layers:latest").returncode == 0


def test_server_sending_headers_then_nothing_fails_bounded(tmp_path, proxy, registry):
    big = _layers(registry)[0]
    proxy.faults.append(Fault("/blobs/" + big, "hang", times=10000, seconds=60))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES=str(RETRIES),
                  UDOCKER_STALL_TIMEOUT="1")
    line = _failed_once(result, big)
    assert "timed out" in line
    assert len(_blob_gets(proxy, big)) == RETRIES + 1  # each answer stalls at once: no attempt progresses
    assert _clean(tmp_path)
    assert not os.path.exists(tmp_path / "repo" / "store" / "blobs" / "sha256" / big.split(":")[1])


@pytest.mark.parametrize("where", ["/manifests/", "/blobs/"])
@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:1/x"])
def test_redirect_to_another_scheme_is_refused_in_our_words(tmp_path, proxy, where, location):
    proxy.faults.append(Fault(where, "redirect", times=100, location=location))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _errors(result.stderr) == [f"error: registry {proxy.host} redirected to a URL that is not http(s): "
                                      f"{location.split('?')[0]}"], result.stderr
    assert _clean(tmp_path)


def test_manifest_stalling_after_headers_fails_bounded(tmp_path, proxy):
    proxy.faults.append(Fault("/manifests/", "hang", times=10000, seconds=60))
    result = _run(tmp_path, "pull", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES=str(RETRIES),
                  UDOCKER_STALL_TIMEOUT="1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert _errors(result.stderr) == [f"error: download of manifest {proxy.host}/test/layers:latest failed: "
                                      "timed out"]
    assert 1 <= len([e for e in proxy.log if "/manifests/" in e[1]]) <= RETRIES + 1
