"""Fixed costs of the commands (issue 13, item 3): `udocker version` (and -V, --version), which scripts run to
check that udocker is there, is answered before click is imported (~15-30 ms of start-up). `images` and `ps`
with only their flags run without click too (cli/listing.py), and with anything else (help, a mistyped option)
load click and their own command's module only (cli/app.py's LazyGroup): never the other commands', the network
stack or the unpacker; neither dataclasses, typing, re, hashlib nor contextlib (NOT_FOR_READING), on a udocker 1.x
repository too; `ps` not even the image store. A pull of an unchanged image makes one manifest request
and writes nothing, and runs without click (cli/fastpull.py), dataclasses, typing, hashlib or json
(NOT_FOR_PULL), answering as the click command does. Counted with -X importtime (utils/bench_cli times them)."""

import os
import subprocess
import sys

import pytest

from udocker import __version__

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(TOP, "scripts", "udocker")


@pytest.mark.parametrize("args", [["version"], ["-V"], ["--version"], ["--repo", "/nonexistent/repo", "version"]])
def test_version_loads_no_click(args):
    done = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "udocker", *args], capture_output=True,
                          text=True, cwd=TOP, env=dict(os.environ, PYTHONPATH=TOP), timeout=60)
    assert (done.returncode, done.stdout) == (0, f"udocker {__version__}\n"), done.stderr[-2000:]
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not modules & {"click", "logging", "udocker.cli.app", "udocker.config"}, sorted(modules)


def test_version_with_more_arguments_is_clicks(udocker):
    """Anything else (--help, an extra argument) goes through click as before."""
    assert "Print the version of udocker." in udocker("version", "--help").stdout
    extra = udocker("version", "extra")
    assert extra.returncode == 2 and "unexpected extra argument" in extra.stderr


# -- images, ps and a cached pull (issue 13, item 3): what each loads is counted, not timed ---------------------
CLI_MODULES = {f"udocker.cli.{name}" for name in ("pull", "images", "containers", "services", "archive", "registry",
                                                    "install", "info", "general", "app")}
# never needed to list images or containers: the network stack, the unpacker, the writers' json, logging
NOT_FOR_LISTING = {"requests", "urllib3", "yaml", "tarfile", "gzip", "json", "logging", "concurrent.futures",
                   "difflib", "udocker.registry", "udocker.pull", "udocker.create", "udocker.unpack",
                   "udocker.store.adopt", "udocker.store.v1images", "udocker.store.overlap"}


def _loaded(udocker, *args, bare=False):
    """(stdout, the modules the command imported after the interpreter's site) of `udocker ARGS`. `bare`: through
    the script pip installs, without site (-S), whose imports (an editable install's finder loads re, enum,
    contextlib) would hide the command's own."""
    start = ["-S", SCRIPT] if bare else ["-m", "udocker"]
    done = subprocess.run([sys.executable, "-X", "importtime", *start, "--repo", udocker.repo, *args],
                          capture_output=True, text=True, cwd=udocker.cwd, env=udocker.env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    names = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done.stdout, set(names[names.index("site") + 1:] if "site" in names else names)


@pytest.fixture
def listed(udocker, tmp_path):
    """A repository with one image and one container of it."""
    from tests.support.build_test_images import busybox_layer

    layer = tmp_path / "busybox.tar.gz"
    layer.write_bytes(busybox_layer().data)
    assert udocker("import", str(layer), "test/fixed:1").returncode == 0
    assert udocker("create", "--name=c", "test/fixed:1").returncode == 0
    return udocker


# Nor what the store's writers need (issue 13: `images` took 65 ms, 50 of them imports): dataclasses (inspect, ast,
# dis), typing, re, hashlib (OpenSSL), threading, contextlib and collections. The store's modules load them where
# they write, hash a layer or parse a reference; the listing reads index.json and a few small JSON blobs.
NOT_FOR_READING = {"dataclasses", "inspect", "typing", "re", "enum", "hashlib", "_hashlib", "threading",
                   "contextlib", "collections", "functools"}


@pytest.mark.parametrize("args", [["images"], ["images", "-l", "-p", "--no-trunc", "-a"], ["--repo=R", "-q", "images"]])
def test_images_loads_no_click(listed, args):
    args = [f"--repo={listed.repo}" if arg == "--repo=R" else arg for arg in args]
    out, modules = _loaded(listed, *args)
    assert "docker.io/test/fixed:1" in out
    assert {"udocker.cli.listing", "udocker.store.images"} <= modules
    assert not modules & (NOT_FOR_LISTING | CLI_MODULES | {"click"}), sorted(modules)
    bare, modules = _loaded(listed, *args, bare=True)
    assert bare == out
    assert not modules & NOT_FOR_READING, sorted(modules & NOT_FOR_READING)


@pytest.mark.parametrize("args", [["ps"], ["ps", "-m", "-p", "--all"]])
def test_ps_loads_no_click_nor_the_image_store(listed, args):
    out, modules = _loaded(listed, *args)
    assert "docker.io/test/fixed:1" in out
    assert {"udocker.cli.listing", "udocker.store.containers"} <= modules
    not_for_ps = {"click", "udocker.store.images", "udocker.store.blobs"}
    assert not modules & (NOT_FOR_LISTING | not_for_ps | CLI_MODULES), sorted(modules)
    bare, modules = _loaded(listed, *args, bare=True)
    assert bare == out
    assert not modules & NOT_FOR_READING, sorted(modules & NOT_FOR_READING)


def test_images_of_a_udocker13_repository_loads_only_the_check_of_its_tags(udocker, udocker13, registry):
    """On a repository of udocker 1.x (repos/ beside udocker 2's store), every `images` checks whether 1.3 changed
    its tags (store/adopt.py): once they are adopted, that check reads directories and one small JSON file, and
    loads neither json, gzip, logging nor the readers' heavy modules; the listing is the same."""
    v13 = udocker13()
    done = v13("pull", f"--registry=http://{registry.host}", "test/busybox:latest")
    assert done.returncode == 0, done.stdout + done.stderr
    os.chmod(v13.topdir, 0o755)  # as 1.3 leaves ~/.udocker under umask 022: the warning is said once, then not
    first = udocker("images")
    assert first.returncode == 0 and "adopted udocker 1 image test/busybox:latest" in first.stderr, first.stderr
    for args in (["images"], ["images", "--no-trunc", "-a"]):
        out, modules = _loaded(udocker, *args, bare=True)
        assert "docker.io/test/busybox:latest" in out
        assert {"udocker.store.adopt", "udocker.store.v1images"} <= modules
        heavy = NOT_FOR_LISTING - {"udocker.store.adopt", "udocker.store.v1images"} | NOT_FOR_READING
        assert not modules & heavy, sorted(modules & heavy)
    assert _loaded(udocker, "images")[0] == first.stdout


@pytest.mark.parametrize("command, module", [("images", "udocker.cli.images"), ("ps", "udocker.cli.containers")])
def test_anything_but_flags_goes_through_click_and_its_command_only(listed, command, module):
    """-lp (combined flags) is click's to parse; the output is the same as with the flags apart."""
    apart, _ = _loaded(listed, command, "-p", "-a")
    out, modules = _loaded(listed, command, "-pa")
    assert out == apart
    assert {"click", module} <= modules
    clicks = {"difflib"}  # click's parser loads it to read -pa
    assert not modules & (NOT_FOR_LISTING - clicks | CLI_MODULES - {"udocker.cli.app", module}), sorted(modules)


def test_json_output_still_loads_json(listed):
    out, modules = _loaded(listed, "ps", "--json")
    assert "json" in modules and json_names(out) == [["c"]]


def json_names(text):
    import json

    return [row["names"] for row in json.loads(text)]


# What a cached pull (one manifest check: http.client, which loads re, enum, email, ssl, socket) does without:
# click (cli/fastpull.py reads its options), dataclasses and typing (record.py), hashlib (oci/digest.py hashes a
# manifest with the builtin sha256), json (fastjson), and what only credentials (json) or TLS (importlib.util) need.
NOT_FOR_PULL = {"click", "dataclasses", "inspect", "ast", "dis", "typing", "hashlib", "_hashlib", "json",
                "importlib.util", "uuid", "platform", "concurrent.futures", "logging"}


def test_a_cached_pull_checks_the_manifest_and_writes_nothing(udocker, registry):
    """Pulling an image again whose manifest is unchanged: one manifest request, no download threads (nor
    concurrent.futures), no unpacker, and index.json not rewritten; the output is a pull's as before. It runs
    without click, nor dataclasses, typing, hashlib or json (NOT_FOR_PULL)."""
    ref = f"{registry.host}/test/busybox:latest"
    first = udocker("pull", ref)
    assert first.returncode == 0, first.stderr
    index = os.path.join(udocker.repo, "store", "index.json")
    before = os.stat(index)
    out, modules = _loaded(udocker, "pull", ref)
    assert out == f"{ref}\n"
    assert {"udocker.pull", "udocker.cli.fastpull", "http.client"} <= modules
    unneeded = {"concurrent.futures", "tarfile", "yaml", "udocker.unpack", "udocker.store.adopt",
                "udocker.store.overlap", "requests", "urllib3"}  # a direct request: http.client (registry/wire.py)
    assert not modules & (unneeded | CLI_MODULES | {"click"}), sorted(modules)
    bare, modules = _loaded(udocker, "-q", "pull", "--platform", "linux/amd64", ref, bare=True)
    assert bare == out
    assert not modules & NOT_FOR_PULL, sorted(modules & NOT_FOR_PULL)
    after = os.stat(index)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    again = udocker("pull", ref)
    assert again.returncode == 0 and again.stderr.count("already exists") == 2, again.stderr
    assert first.stderr.split("Digest: ")[1] == again.stderr.split("Digest: ")[1]
    assert [n for n in os.listdir(os.path.join(udocker.repo, "locks")) if not n.endswith(".readers")] == []


def _through_click(udocker, *args, env=None):
    """`udocker ARGS` through the click application (cli/app.py), as before cli/fastpull.py: the reference the
    lean path must match."""
    code = "import sys; from udocker.cli import app, private_umask; private_umask(); app.main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, "--repo", udocker.repo, *args], capture_output=True,
                          text=True, cwd=udocker.cwd, env=dict(udocker.env, **(env or {})), timeout=120)


def _lean(udocker, *args, env=None):
    return subprocess.run([sys.executable, "-m", "udocker", "--repo", udocker.repo, *args], capture_output=True,
                          text=True, cwd=udocker.cwd, env=dict(udocker.env, **(env or {})), timeout=120)


def test_pull_without_click_answers_as_click_did(udocker, registry):
    """The same arguments through cli/fastpull.py and through click: the same stdout, stderr and status, for a
    pull, a cached pull, its options in either form, and failures (a bad name, a bad platform, an unreachable
    registry, a missing image); anything fastpull does not read (help, a bad option) is still click's."""
    from tests.support.local_registry import free_port

    ref = f"{registry.host}/test/busybox:latest"
    first = _lean(udocker, "pull", ref)
    assert first.returncode == 0 and first.stdout == f"{ref}\n", first.stderr
    assert "downloading" in first.stderr and "Digest: sha256:" in first.stderr
    unreachable = f"127.0.0.1:{free_port()}/tests/tiny:1.0"
    cases = [["pull", ref], ["-q", "pull", ref], ["pull", "--platform=linux/amd64", ref],
             ["pull", ref, "--platform", "linux/amd64"], ["pull", "Bad/Name"], ["pull", "--platform=linux", ref],
             ["pull", "--platform", "windows/amd64", ref], ["pull", f"{registry.host}/test/missing:1"],
             ["pull", unreachable]]
    for args in cases:
        lean, clicked = _lean(udocker, *args, env={"UDOCKER_RETRIES": "0"}), \
            _through_click(udocker, *args, env={"UDOCKER_RETRIES": "0"})
        assert (lean.returncode, lean.stdout, lean.stderr) == (clicked.returncode, clicked.stdout, clicked.stderr), args
    assert _lean(udocker, "pull", "Bad/Name").returncode == 1
    debug, clicked = _lean(udocker, "-D", "pull", "Bad/Name"), _through_click(udocker, "-D", "pull", "Bad/Name")
    assert debug.returncode == clicked.returncode == 1 and "Traceback" in debug.stderr  # its frames differ
    assert debug.stderr.splitlines()[-2:] == clicked.stderr.splitlines()[-2:]
    assert "cannot reach registry" in _lean(udocker, "pull", unreachable, env={"UDOCKER_RETRIES": "0"}).stderr
    usage = _lean(udocker, "pull", "--platfrom=linux/amd64", ref)
    assert usage.returncode == 2 and usage.stderr.startswith("error: no such option '--platfrom'"), usage.stderr
    assert "Download IMAGE from its registry" in _lean(udocker, "pull", "--help").stdout
