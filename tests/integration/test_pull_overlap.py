"""The first `run IMAGE` of an image not pulled yet unpacks each layer while it downloads (issue 13, item 1):
the tree is published only once every blob is verified; a bad blob leaves no name and no tree; resumed and
restarted transfers still give the image's exact files."""

import os

from tests.fixtures.faultproxy import Fault
from tests.integration.test_pull import _errors
from tests.integration.test_pull_faults import _clean, _layers, _run, proxy  # noqa: F401 - proxy is a fixture
from tests.support.build_test_images import KNOWN_CONTENT, LAYERS_RUN_OUTPUT


def _trees(tmp_path):
    unpacked = tmp_path / "repo" / "unpacked"
    return sorted(os.listdir(unpacked)) if unpacked.is_dir() else []


def test_first_run_unpacks_while_pulling(tmp_path, proxy):  # noqa: F811
    result = _run(tmp_path, "-D", "run", "--rm", f"{proxy.host}/test/layers:latest")
    assert (result.returncode, result.stdout) == (0, LAYERS_RUN_OUTPUT), result.stderr
    assert "unpacked image sha256:" in result.stderr and "while pulling it" in result.stderr
    assert "gave up" not in result.stderr
    assert len(_trees(tmp_path)) == 1 and _clean(tmp_path)
    assert _run(tmp_path, "verify", f"{proxy.host}/test/layers:latest").returncode == 0


def test_digest_mismatch_on_the_last_layer_leaves_no_name_and_no_tree(tmp_path, proxy, registry):  # noqa: F811
    bad = _layers(registry)[-1]
    proxy.faults.append(Fault("/blobs/" + bad, "wrong", times=100))
    result = _run(tmp_path, "run", "--rm", f"{proxy.host}/test/layers:latest", UDOCKER_RETRIES="1")
    assert result.returncode == 125, result.stderr
    assert _errors(result.stderr)[0].startswith(f"error: digest mismatch for blob {bad}")
    assert "test/layers" not in _run(tmp_path, "images").stdout
    assert _run(tmp_path, "ps").stdout.strip().count("\n") == 0  # the header only
    assert _trees(tmp_path) == [] and _clean(tmp_path)


def test_resumed_transfer_unpacks_the_exact_files(tmp_path, proxy, registry):  # noqa: F811
    for digest in _layers(registry):
        proxy.faults.append(Fault("/blobs/" + digest, "cut"))
    result = _run(tmp_path, "-D", "run", "--rm", f"{proxy.host}/test/layers:latest", "cat", "/data/known.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == KNOWN_CONTENT and "while pulling it" in result.stderr


def test_restarted_transfer_falls_back_to_unpacking_the_stored_blobs(tmp_path, proxy, registry):  # noqa: F811
    big = _layers(registry)[0]
    proxy.faults += [Fault("/blobs/" + big, "cut"), Fault("/blobs/" + big, "ignore-range")]
    result = _run(tmp_path, "-D", "run", "--rm", f"{proxy.host}/test/layers:latest")
    assert (result.returncode, result.stdout) == (0, LAYERS_RUN_OUTPUT), result.stderr
    assert "gave up" in result.stderr and len(_trees(tmp_path)) == 1 and _clean(tmp_path)
