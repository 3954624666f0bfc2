"""Unpack progress (issue 13, item 6): `create` and a first `run` show each layer's extraction like docker pull's
"Extracting" lines (bytes, rate) on a terminal, on the layer's download line when a run pulls; in batch logs one
line per layer started and finished; nothing with -q."""

import re

from tests.integration.test_pull_progress import ANSI, _pull_on_a_terminal
from tests.support.build_test_images import LAYERS_RUN_OUTPUT

SIZE = r"\d+(\.\d+)?[kMG]?B"


def _layers(registry):
    layers = [digest.split(":")[1][:12] for digest in registry.images["test/layers:latest"].layers]
    assert len(layers) >= 2
    return layers


def test_create_on_a_terminal_shows_extraction_per_layer(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    assert udocker("-q", "pull", ref).returncode == 0
    status, stdout, drawn = _pull_on_a_terminal(udocker, "create", ref)
    assert status == 0 and re.fullmatch(r"[0-9a-f-]{36}\n", stdout), drawn
    assert "\x1b[2K" in drawn and "\x1b[F" in drawn  # redrawn in place, like pull's lines
    lines = ANSI.sub("", drawn).replace("\r\n", "\n").splitlines()
    for short in _layers(registry):
        mine = [line for line in lines if line.startswith(short + ": ")]
        extracting = [line for line in mine if "Extracting" in line]
        assert extracting, lines
        assert re.fullmatch(f"{short}: Extracting {SIZE}/{SIZE} \\({SIZE}/s\\)", extracting[0]), extracting[0]
        assert mine[-1] == f"{short}: Extracted"
        assert "Downloading" not in "".join(mine)


def test_first_run_on_a_terminal_downloads_then_extracts_on_one_line(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    status, stdout, drawn = _pull_on_a_terminal(udocker, "run", "--rm", ref)
    assert (status, stdout) == (0, LAYERS_RUN_OUTPUT), drawn
    lines = ANSI.sub("", drawn).replace("\r\n", "\n").splitlines()
    for short in _layers(registry):
        mine = [line for line in lines if line.startswith(short + ": ")]
        assert any("Downloading" in line for line in mine), lines
        assert any(re.search(f"[Ee]xtracting {SIZE}/{SIZE}", line) for line in mine), lines
        assert mine[-1] == f"{short}: Extracted"


def test_batch_logs_say_each_layer_extracting_and_extracted(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    assert udocker("-q", "pull", ref).returncode == 0
    loud = udocker("create", ref)
    assert loud.returncode == 0, loud.stderr
    assert "\x1b[" not in loud.stderr
    lines = loud.stderr.splitlines()
    for short in _layers(registry):
        assert re.fullmatch(f"{short}: extracting {SIZE}", next(x for x in lines if x.startswith(short)))
        assert len([line for line in lines if re.fullmatch(
            f"{short}: extracted {SIZE} in [0-9.]+s \\({SIZE}/s\\)", line)]) == 1, lines


def test_quiet_says_nothing_on_a_terminal_or_in_a_log(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    status, stdout, drawn = _pull_on_a_terminal(udocker, "-q", "run", "--rm", ref)
    assert (status, stdout, drawn) == (0, LAYERS_RUN_OUTPUT, "")
    quiet = udocker("-q", "create", ref)
    assert quiet.returncode == 0 and quiet.stderr == ""
