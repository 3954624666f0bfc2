"""The fast start of `udocker run` (issue 9, item 5; issue 13, item 2): the modules it imports are an explicit
set. Running an existing container must load neither click, requests, yaml, tarfile, logging nor the unpacker,
nor json, re, enum, contextlib or collections (~12 ms together here: udocker/fastjson.py, the classes of fs.py):
each is start-up time added to the engine's on every run of a job. Checked without site (-S), which may load
some of them itself (an editable install's finder does), through the script pip installs (scripts/udocker)."""

import os
import subprocess
import sys

import pytest

from tests.support.build_test_images import busybox_layer

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Every udocker module `udocker run` of an existing container may load. A module added to the run path is added
# here on purpose (and its cost measured with utils/bench_run), never by accident.
RUN_PATH = {
    "udocker", "udocker.cli", "udocker.cli.boundary", "udocker.cli.run", "udocker.errors", "udocker.config",
    "udocker.paths", "udocker.rootpath", "udocker.run", "udocker.runspec", "udocker.runopts", "udocker.runbuild",
    "udocker.fastjson",
    "udocker.launch",
    "udocker.provision", "udocker.inject", "udocker.store", "udocker.store.containers",
    # the run's record (issue 11: ps, stop, wait): one atomic write at the start, one at the end
    "udocker.store.runs", "udocker.fs", "udocker.lockfile",
}
# the engines: the one of the container's mode is loaded, with what it builds on
ENGINES = {"udocker.engines", "udocker.engines.base", "udocker.engines.common", "udocker.modetable",
           "udocker.engines.modes", "udocker.engines.supervisor",
           "udocker.engines.locate", "udocker.engines.proot", "udocker.engines.fakechroot",
           "udocker.engines.elfpatch", "udocker.engines.ocirt", "udocker.engines.runc", "udocker.engines.crun",
           "udocker.engines.idmap"}  # ocirt's uid/gid mappings, moved into a module of their own (076fe6c)
FORBIDDEN = {"click", "requests", "yaml", "tarfile", "logging", "udocker.unpack",
             "json", "re", "enum", "contextlib", "collections", "functools", "importlib", "signal",
             "encodings.ascii",  # a text stream opened with encoding="ascii" loads it: read bytes, decode
             "ctypes", "struct"}  # the supervisor's subreaper loads _ctypes alone (after 0.1 s: not here)
SCRIPT = os.path.join(TOP, "scripts", "udocker")


def _imported(stderr):
    """The modules named by -X importtime's lines in `stderr`."""
    lines = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:")]
    return {parts[2].strip() for parts in lines if len(parts) == 3 and parts[0].split(":")[1].strip().isdigit()}


def _check(modules):
    assert not modules & FORBIDDEN, f"`udocker run` loads {sorted(modules & FORBIDDEN)}"
    extra = {name for name in modules if name.split(".")[0] == "udocker"} - RUN_PATH - ENGINES
    assert not extra, f"`udocker run` loads {sorted(extra)}: not in RUN_PATH (tests/functional/test_run_imports.py)"


def test_the_run_path_imports_only_its_modules():
    """What `udocker run` imports before it knows the container: cli/run.py and the use case."""
    code = "import udocker.cli, udocker.cli.run, udocker.run, udocker.engines.modes"
    done = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code], capture_output=True, text=True,
                          cwd=TOP, env=dict(os.environ, PYTHONPATH=TOP))
    assert done.returncode == 0, done.stderr
    modules = _imported(done.stderr)
    assert {"udocker.run", "udocker.provision", "udocker.launch", "udocker.runbuild"} <= modules
    _check(modules)


def test_running_an_existing_container_imports_only_its_modules(udocker, tmp_path):
    layer = tmp_path / "busybox.tar.gz"
    layer.write_bytes(busybox_layer().data)
    assert udocker("import", str(layer), "test/imports:1").returncode == 0
    assert udocker("create", "--name=c", "test/imports:1").returncode == 0
    first = udocker("run", "c", "/bin/true")  # chooses and prepares the mode
    if first.returncode != 0:
        pytest.skip(f"no engine runs a container here: {first.stderr.strip()[-200:]}")
    done = subprocess.run([sys.executable, "-S", "-X", "importtime", SCRIPT, "--repo", udocker.repo, "run", "c",
                           "/bin/true"], capture_output=True, text=True, cwd=udocker.cwd, env=udocker.env, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = _imported(done.stderr)
    assert "udocker.store.containers" in modules
    _check(modules)
