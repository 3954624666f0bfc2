"""A table of bad inputs across every command, option, config setting and UDOCKER_* variable: each gives one
`error:` line (and at most one `hint:`), its documented exit status (1 udocker error, 2 usage error; run: 125,
126 not executable, 127 not found), no traceback, and leaves the repository as it was (and the current
directory untouched: an empty UDOCKER_DIR once made it a repository).

One repository per module, with one pulled image and one container, shared by every case: the cases must not
change it, and the snapshot taken after setting it up is compared after each case."""

import json
import os
import re
import shutil
from typing import NamedTuple, Optional

import pytest

from tests.conftest import UdockerRunner

BUSYBOX = "/bin/busybox"  # a binary file where text is expected (busybox-static: CI installs it)


class Case(NamedTuple):
    name: str
    args: tuple
    status: int
    says: str  # a lower-case part of the error line
    env: Optional[dict] = None
    repo: bool = True  # False: no --repo option (UDOCKER_DIR or ~/.udocker decide)


def conf(name: str) -> str:
    return "{tmp}/" + name + ".conf"


CONFS = {
    "yaml": "a: [\n", "list": "- a\n", "unknown": "bogus: 1\n", "huge": "connect_timeout: " + "1" + "0" * 40 + "\n",
    "negative": "retries: -1\n", "topdir": 'topdir: ""\n', "registry": "registry: not a url\n",
    "mirror": "mirrors: {docker.io: ['not a url']}\n", "mirrorftp": "mirrors: {docker.io: ['ftp://127.0.0.1/']}\n",
    "paths": "engine_paths: {proot: relative/proot}\n", "insecure": "insecure: 3\n", "nvidia": "nvidia: maybe\n",
    "mode": "default_execution_mode: Z9\n", "runtime": "oci_runtime: podman\n", "platform": "platform: 5\n",
    "stall": "stall_timeout: 1.5\n", "lock": "lock_timeout: 99999999999\n", "conc": "pull_concurrency: 100000\n",
    "index": "index: http://127.0.0.1:99999\n", "retries": "retries: 1000\n", "bool": "retries: true\n",
}

CONFIG = [
    Case("config-binary", ("--config", BUSYBOX, "images"), 1, "is not utf-8 text"),
    Case("config-missing", ("--config", "{tmp}/nonexistent.conf", "images"), 1, "cannot read config file"),
    Case("config-directory", ("--config", "{tmp}", "images"), 1, "cannot read config file"),
    Case("config-yaml", ("--config", conf("yaml"), "images"), 1, "not valid yaml"),
    Case("config-list", ("--config", conf("list"), "images"), 1, "must be a mapping"),
    Case("config-unknown", ("--config", conf("unknown"), "images"), 1, "unknown config key 'bogus'"),
    Case("config-huge-timeout", ("--config", conf("huge"), "pull", "{img}"), 1, "'connect_timeout'"),
    Case("config-negative", ("--config", conf("negative"), "images"), 1, "'retries'"),
    Case("config-retries-1000", ("--config", conf("retries"), "images"), 1, "at most 100"),
    Case("config-retries-bool", ("--config", conf("bool"), "images"), 1, "'retries'"),
    Case("config-empty-topdir", ("--config", conf("topdir"), "images"), 1, "'topdir'", repo=False),
    Case("config-registry", ("--config", conf("registry"), "images"), 1, "'registry'"),
    Case("config-index-port", ("--config", conf("index"), "images"), 1, "'index'"),
    Case("config-mirror", ("--config", conf("mirror"), "images"), 1, "'mirrors'"),
    Case("config-mirror-ftp", ("--config", conf("mirrorftp"), "images"), 1, "'mirrors'"),
    Case("config-engine-paths", ("--config", conf("paths"), "images"), 1, "'engine_paths'"),
    Case("config-insecure", ("--config", conf("insecure"), "images"), 1, "'insecure'"),
    Case("config-nvidia", ("--config", conf("nvidia"), "images"), 1, "'nvidia'"),
    Case("config-mode-create", ("--config", conf("mode"), "create", "{img}"), 1, "'default_execution_mode'"),
    Case("config-runtime", ("--config", conf("runtime"), "images"), 1, "'oci_runtime'"),
    Case("config-platform", ("--config", conf("platform"), "images"), 1, "'platform'"),
    Case("config-stall-float", ("--config", conf("stall"), "images"), 1, "'stall_timeout'"),
    Case("config-lock", ("--config", conf("lock"), "images"), 1, "'lock_timeout'"),
    Case("config-concurrency", ("--config", conf("conc"), "images"), 1, "'pull_concurrency'"),
    Case("config-run", ("--config", conf("huge"), "run", "ct", "true"), 125, "'connect_timeout'"),
    Case("config-binary-run", ("--config", BUSYBOX, "run", "ct", "true"), 125, "is not utf-8 text"),
]

ENVIRONMENT = [
    Case("env-dir-empty", ("images",), 1, "udocker_dir", {"UDOCKER_DIR": ""}, repo=False),
    Case("env-dir-empty-run", ("run", "ct", "true"), 125, "udocker_dir", {"UDOCKER_DIR": ""}, repo=False),
    Case("env-topdir-empty", ("ps",), 1, "udocker_topdir", {"UDOCKER_TOPDIR": ""}, repo=False),
    Case("env-repo-option-empty", ("--repo", "", "images"), 1, "'topdir'", repo=False),
    Case("env-retries-expr", ("images",), 1, "udocker_retries", {"UDOCKER_RETRIES": "10**25"}),
    Case("env-retries-huge", ("images",), 1, "at most 100", {"UDOCKER_RETRIES": "1" + "0" * 25}),
    Case("env-retries-negative", ("images",), 1, "udocker_retries", {"UDOCKER_RETRIES": "-1"}),
    Case("env-retries-run", ("run", "ct", "true"), 125, "udocker_retries", {"UDOCKER_RETRIES": "1" + "0" * 25}),
    Case("env-stall-text", ("images",), 1, "udocker_stall_timeout", {"UDOCKER_STALL_TIMEOUT": "abc"}),
    Case("env-connect-huge", ("pull", "{img}"), 1, "udocker_connect_timeout",
         {"UDOCKER_CONNECT_TIMEOUT": "1" + "0" * 40}),
    Case("env-connect-digits", ("images",), 1, "udocker_connect_timeout", {"UDOCKER_CONNECT_TIMEOUT": "9" * 5000}),
    Case("env-lock-float", ("images",), 1, "udocker_lock_timeout", {"UDOCKER_LOCK_TIMEOUT": "1e9"}),
    Case("env-concurrency", ("images",), 1, "udocker_pull_concurrency", {"UDOCKER_PULL_CONCURRENCY": "100000"}),
    Case("env-insecure", ("images",), 1, "udocker_insecure", {"UDOCKER_INSECURE": "maybe"}),
    Case("env-nvidia", ("images",), 1, "udocker_nvidia", {"UDOCKER_NVIDIA": "sometimes"}),
    Case("env-infiniband", ("images",), 1, "udocker_infiniband", {"UDOCKER_INFINIBAND": "2"}),
    Case("env-host-mpi", ("images",), 1, "udocker_host_mpi", {"UDOCKER_HOST_MPI": "yes please"}),
    Case("env-mode-create", ("create", "{img}"), 1, "udocker_default_execution_mode",
         {"UDOCKER_DEFAULT_EXECUTION_MODE": "Z9"}),
    Case("env-mode-run", ("run", "ct", "true"), 125, "udocker_default_execution_mode",
         {"UDOCKER_DEFAULT_EXECUTION_MODE": "Z9"}),
    Case("env-runtime", ("images",), 1, "udocker_oci_runtime", {"UDOCKER_OCI_RUNTIME": "podman"}),
    Case("env-registry-not-url", ("pull", "busybox"), 1, "udocker_registry", {"UDOCKER_REGISTRY": "not a url"}),
    Case("env-registry-ftp", ("pull", "busybox"), 1, "udocker_registry", {"UDOCKER_REGISTRY": "ftp://127.0.0.1/"}),
    Case("env-registry-port", ("pull", "busybox"), 1, "udocker_registry",
         {"UDOCKER_REGISTRY": "http://127.0.0.1:99999"}),
    Case("env-registry-run", ("run", "busybox", "true"), 125, "udocker_registry", {"UDOCKER_REGISTRY": "file:///"}),
    Case("env-index", ("search", "foo"), 1, "udocker_index", {"UDOCKER_INDEX": "gopher://127.0.0.1/"}),
    Case("env-mirrors", ("images",), 1, "udocker_mirrors", {"UDOCKER_MIRRORS": "http://127.0.0.1/"}),
    Case("env-engine-paths", ("images",), 1, "udocker_engine_paths", {"UDOCKER_ENGINE_PATHS": "/x"}),
    Case("env-engines-url", ("install",), 2, "not an http(s) url", {"UDOCKER_ENGINES_URL": "ftp://127.0.0.1/x"}),
    Case("env-platform", ("pull", "{img}"), 2, "invalid platform", {"UDOCKER_PLATFORM": "linux/"}),
]

REFERENCES = [
    Case("pull-no-argument", ("pull",), 2, "missing argument"),
    Case("pull-upper-case", ("pull", "Bad/Name"), 1, "invalid reference format"),
    Case("pull-port-99999", ("pull", "127.0.0.1:99999/x"), 1, "invalid registry port"),
    Case("pull-port-20-digits", ("pull", "127.0.0.1:99999999999999999999/x"), 1, "invalid registry port"),
    Case("pull-port-0", ("pull", "localhost:0/x"), 1, "invalid registry port"),
    Case("pull-bad-digest", ("pull", "x@sha256:abc"), 1, "invalid"),
    Case("pull-long-tag", ("pull", "x:" + "a" * 200), 1, "invalid tag"),
    Case("pull-space", ("pull", " busybox"), 1, "invalid reference format"),
    Case("pull-empty", ("pull", ""), 1, "invalid reference format"),
    Case("pull-long-name", ("pull", "127.0.0.1/" + "a" * 300), 1, "too long"),
    Case("pull-unknown-repository", ("pull", "{reg}/test/nonexistent"), 1, "unknown"),
    Case("pull-unknown-tag", ("pull", "{reg}/test/busybox:nosuchtag"), 1, "unknown"),
    Case("pull-refused", ("pull", "127.0.0.1:1/x"), 1, "cannot reach registry"),
    Case("pull-platform", ("pull", "--platform", "windows/z80", "{img}"), 1, "not windows/z80"),
    Case("pull-platform-syntax", ("pull", "--platform", "z80", "{img}"), 2, "invalid platform"),
    Case("pull-registry-option", ("pull", "--registry", "ftp://127.0.0.1", "busybox"), 1, "'registry'"),
    Case("pull-unknown-option", ("pull", "--jsn", "{img}"), 2, "no such option"),
    Case("manifest-port", ("manifest", "inspect", "127.0.0.1:99999/x"), 1, "invalid registry port"),
    Case("manifest-unknown", ("manifest", "inspect", "{reg}/test/nonexistent"), 1, "unknown"),
    Case("manifest-no-subcommand-arg", ("manifest", "inspect"), 2, "missing argument"),
]

IMAGES = [
    Case("images-extra", ("images", "x", "y"), 2, "unexpected extra argument"),
    Case("images-option", ("images", "--jsn"), 2, "no such option"),
    Case("inspect-unknown", ("inspect", "nonexistent"), 1, "nonexistent"),
    Case("inspect-no-argument", ("inspect",), 2, "missing argument"),
    Case("inspect-p-unknown", ("inspect", "-p", "nonexistent"), 1, "nonexistent"),
    Case("tag-unknown", ("tag", "nonexistent", "x:1"), 1, "nonexistent"),
    Case("tag-bad-target", ("tag", "{img}", "Bad Name"), 1, "invalid reference"),
    Case("tag-port", ("tag", "{img}", "127.0.0.1:99999/x"), 1, "invalid registry port"),
    Case("tag-one-argument", ("tag", "{img}"), 2, "missing argument"),
    Case("rmi-unknown", ("rmi", "nonexistent"), 1, "nonexistent"),
    Case("rmi-invalid", ("rmi", "Invalid@@"), 1, "invalid"),
    Case("rmi-no-argument", ("rmi",), 2, "missing argument"),
    Case("verify-unknown", ("verify", "nonexistent"), 1, "nonexistent"),
    Case("protect-unknown", ("protect", "nonexistent"), 1, "nonexistent"),
    Case("unprotect-unknown", ("unprotect", "nonexistent"), 1, "nonexistent"),
    Case("load-missing", ("load", "-i", "{tmp}/nonexistent.tar"), 1, "nonexistent.tar"),
    Case("load-binary", ("load", "-i", BUSYBOX), 1, "not a valid tar archive"),
    Case("load-empty", ("load", "-i", "{tmp}/empty.tar"), 1, "empty file"),
    Case("load-platform", ("load", "--platform", "z80", "-i", "{tmp}/empty.tar"), 2, "invalid platform"),
    Case("save-unknown", ("save", "-o", "{tmp}/out/x.tar", "nonexistent"), 1, "nonexistent"),
    Case("save-unwritable", ("save", "-o", "{tmp}/nonexistent/x.tar", "{img}"), 1, "nonexistent"),
    Case("import-missing", ("import", "{tmp}/nonexistent.tar", "x:1"), 1, "nonexistent.tar"),
    Case("import-binary", ("import", BUSYBOX, "x:1"), 1, "not a tar archive"),
    Case("import-bad-name", ("import", "{tmp}/empty.tar", "Bad Name"), 1, "invalid reference"),
    Case("import-platform", ("import", "--platform", "z80", "{tmp}/empty.tar", "x:1"), 2, "invalid platform"),
]

CONTAINERS = [
    Case("create-unknown", ("create", "nonexistent"), 1, "nonexistent"),
    Case("create-name-in-use", ("create", "--name", "ct", "{img}"), 1, "ct"),
    Case("create-bad-name", ("create", "--name", "bad/name", "{img}"), 1, "name"),
    Case("create-no-argument", ("create",), 2, "missing argument"),
    Case("ps-option", ("ps", "--bogus"), 2, "no such option"),
    Case("rm-unknown", ("rm", "nonexistent"), 1, "nonexistent"),
    Case("rm-no-argument", ("rm",), 2, "missing argument"),
    Case("name-unknown", ("name", "nonexistent", "x"), 1, "nonexistent"),
    Case("name-bad", ("name", "ct", "bad/name"), 1, "name"),
    Case("rmname-unknown", ("rmname", "nonexistent"), 1, "nonexistent"),
    Case("rename-unknown", ("rename", "nonexistent", "x"), 1, "nonexistent"),
    Case("clone-unknown", ("clone", "nonexistent"), 1, "nonexistent"),
    Case("export-unknown", ("export", "-o", "{tmp}/out/x.tar", "nonexistent"), 1, "nonexistent"),
    Case("export-unwritable", ("export", "-o", "{tmp}/nonexistent/x.tar", "ct"), 1, "nonexistent"),
    Case("setup-bad-mode", ("setup", "--execmode", "Z9", "ct"), 2, "execmode"),
    Case("setup-unknown", ("setup", "nonexistent"), 1, "nonexistent"),
]

OTHERS = [
    Case("unknown-command", ("frobnicate",), 2, "frobnicate"),
    Case("unknown-general-option", ("--frob", "images"), 2, "no such option"),
    Case("help-unknown", ("help", "frobnicate"), 2, "frobnicate"),
    Case("version-extra", ("version", "x"), 2, "unexpected extra argument"),
    Case("showconf-extra", ("showconf", "x"), 2, "unexpected extra argument"),
    Case("info-option", ("info", "--bogus"), 2, "no such option"),
    Case("login-refused", ("login", "--registry", "127.0.0.1:1", "-u", "u", "-p", "p"), 1, "cannot reach"),
    Case("login-port", ("login", "--registry", "http://127.0.0.1:99999", "-u", "u", "-p", "p"), 1, "port out of range"),
    Case("login-no-password", ("login", "--registry", "{reg}", "-u", "u", "--password-stdin"), 2, "no password"),
    Case("login-empty-username", ("login", "--registry", "{reg}", "-u", "", "-p", ""), 2, "username"),
    Case("login-exclusive", ("login", "-u", "u", "-p", "p", "--password-stdin"), 2, "mutually exclusive"),
    Case("search-port", ("search", "--registry", "127.0.0.1:99999", "x"), 1, "port out of range"),
    Case("logout-option", ("logout", "--bogus"), 2, "no such option"),
    Case("search-no-term", ("search",), 2, "missing argument"),
    Case("search-refused", ("search", "--registry", "127.0.0.1:1", "x"), 1, "cannot reach"),
    Case("install-missing", ("install", "--from", "{tmp}/nonexistent.tar.gz"), 1, "nonexistent"),
    Case("install-ftp", ("install", "--from", "ftp://127.0.0.1/x.tar.gz"), 1, "ftp://127.0.0.1/x.tar.gz"),
    Case("install-port", ("install", "--from", "http://127.0.0.1:99999/x.tar.gz"), 2, "port out of range"),
    Case("install-bad-sha", ("install", "--from", "{tmp}/empty.tar", "--sha256", "xyz"), 2, "sha256"),
    Case("mkrepo-file", ("mkrepo", BUSYBOX), 1, BUSYBOX),
    Case("mkrepo-no-argument", ("mkrepo",), 2, "missing argument"),
    Case("mkrepo-empty", ("mkrepo", ""), 2, "must not be empty"),
]

RUN = [
    Case("run-nothing", ("run",), 125, "run needs a container or an image"),
    Case("run-unknown-option", ("run", "--bogus", "ct"), 125, "unknown option"),
    Case("run-option-value-missing", ("run", "-w"), 125, "requires a value"),
    Case("run-env-file-binary", ("run", "--env-file=" + BUSYBOX, "ct", "true"), 125, "is not utf-8 text"),
    Case("run-env-file-missing", ("run", "--env-file", "{tmp}/nonexistent", "ct", "true"), 125, "cannot read"),
    Case("run-env-empty-key", ("run", "-e", "=x", "ct", "true"), 125, "invalid environment variable"),
    Case("run-workdir-relative", ("run", "-w", "relative", "ct", "true"), 125, "absolute path"),
    Case("run-volume-empty-target", ("run", "-v", "/tmp:", "ct", "true"), 125, "invalid volume"),
    Case("run-volume-empty-middle", ("run", "-v", "/tmp::ro", "ct", "true"), 125, "invalid volume"),
    Case("run-volume-relative", ("run", "-v", "relative:/x", "ct", "true"), 125, "invalid volume"),
    Case("run-volume-missing", ("run", "-v", "{tmp}/nonexistent:/x", "ct", "true"), 125, "does not exist"),
    Case("run-volume-flag", ("run", "-v", "/tmp:/x:rx", "ct", "true"), 125, "invalid volume option"),
    Case("run-volume-parts", ("run", "-v", "/a:/b:ro:x", "ct", "true"), 125, "invalid volume"),
    Case("run-port-text", ("run", "-p", "http", "ct", "true"), 125, "invalid port"),
    Case("run-port-99999", ("run", "-p", "99999:99999", "ct", "true"), 125, "invalid port"),
    Case("run-port-20-digits", ("run", "-p", "9" * 20, "ct", "true"), 125, "invalid port"),
    Case("run-port-mapped", ("run", "--network=host", "-p", "8080:80", "ct", "true"), 125, "--network=host"),
    Case("run-network-value", ("run", "--network", "bridge", "ct", "true"), 125, "invalid --network"),
    Case("run-cpuset-text", ("run", "--cpuset-cpus", "abc", "ct", "true"), 125, "cpuset"),
    Case("run-cpuset-huge", ("run", "--cpuset-cpus", "0-99999999999", "ct", "true"), 125, "cpuset"),
    Case("run-pull-policy", ("run", "--pull", "sometimes", "ct"), 125, "pull"),
    Case("run-user-unknown", ("run", "-u", "nosuchuser", "ct", "true"), 125, "nosuchuser"),
    Case("run-group-unknown", ("run", "-u", "0:nosuchgroup", "ct", "true"), 125, "nosuchgroup"),
    Case("run-uid-huge", ("run", "-u", "9" * 20, "ct", "true"), 125, "invalid uid"),
    Case("run-gid-huge", ("run", "-u", "0:2147483648", "ct", "true"), 125, "invalid gid"),
    Case("run-cpuset-absent", ("run", "--cpuset-cpus", "60000", "ct", "true"), 125, "none of these cpus"),
    Case("run-program-missing", ("run", "ct", "/nonexistent"), 127, "/nonexistent"),
    Case("run-program-in-path-missing", ("run", "ct", "nonexistent-program"), 127, "nonexistent-program"),
    Case("run-program-not-executable", ("run", "ct", "/etc/passwd"), 126, "/etc/passwd"),
    Case("run-no-command", ("run", "--entrypoint=", "ct"), 125, "no command"),
    Case("run-location-missing", ("run", "--location", "{tmp}/nonexistent", "true"), 125, "not a directory"),
    Case("run-pull-never", ("run", "--pull=never", "nonexistent"), 125, "nonexistent"),
    Case("run-bad-reference", ("run", "127.0.0.1:99999/x"), 125, "invalid registry port"),
    Case("run-registry-option", ("run", "--registry=ftp://127.0.0.1", "busybox", "true"), 125, "'registry'"),
    Case("run-nvidia-without-gpu", ("run", "--nvidia", "ct", "true"), 125, "nvidia"),
    Case("run-device-missing", ("run", "--device", "{tmp}/nonexistent", "ct", "true"), 125, "device does not exist"),
    Case("run-device-relative", ("run", "--device", "fuse", "ct", "true"), 125, "invalid device"),
]

CASES = CONFIG + ENVIRONMENT + REFERENCES + IMAGES + CONTAINERS + OTHERS + RUN


def _snapshot(repo: str) -> dict:
    """What `images`, `ps` and `verify` rest on: every blob (name, size), index.json, every container record and
    name link (not rootfs contents, tmp/ or locks/)."""
    found = {}
    for top in ("store", "containers"):
        for where, dirs, files in os.walk(os.path.join(repo, top)):
            rel = os.path.relpath(where, repo)
            if os.path.basename(where) == "rootfs" or "/rootfs/" in rel + "/" or "/engine" in rel:
                dirs[:] = []
                continue
            for name in files + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
                path = os.path.join(where, name)
                if os.path.islink(path):
                    found[os.path.join(rel, name)] = "-> " + os.readlink(path)
                elif name.endswith(".json"):
                    with open(path, "rb") as stream:
                        found[os.path.join(rel, name)] = stream.read()
                else:
                    found[os.path.join(rel, name)] = os.path.getsize(path)
    return found


class Setup(NamedTuple):
    runner: UdockerRunner
    tmp: str
    cwd: str
    values: dict
    snapshot: dict
    listing: tuple


def _listing(runner) -> tuple:
    """`images` and `ps` as they read, but for the ages in ps's STATUS (Exited (0) 3 seconds ago) and the
    widths of its columns."""
    images = runner("images")
    ps = runner("ps")
    assert images.returncode == 0 and ps.returncode == 0, images.stderr + ps.stderr
    return images.stdout, re.sub(r" +", " ", re.sub(r"(Up|\)) [^ ]+ [a-z]+( ago)?", r"\1 AGE", ps.stdout))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, registry) -> Setup:
    if not os.path.isfile(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (busybox-static)")
    base = tmp_path_factory.mktemp("bad-inputs")
    runner = UdockerRunner(base)
    tmp = str(base / "files")
    os.makedirs(os.path.join(tmp, "out"))
    for name, text in CONFS.items():
        with open(os.path.join(tmp, name + ".conf"), "w", encoding="utf-8") as stream:
            stream.write(text)
    open(os.path.join(tmp, "empty.tar"), "wb").close()
    cwd = str(base / "cwd")
    os.makedirs(cwd)
    img = registry.ref("test/busybox:latest")
    for args in (("pull", img), ("create", "--name", "ct", img), ("run", "ct", "true")):
        done = runner(*args, input="")
        assert done.returncode == 0, done.stderr
    values = {"img": img, "reg": registry.host, "tmp": tmp}
    return Setup(runner, tmp, cwd, values, _snapshot(runner.repo), _listing(runner))


def _one_error(stderr: str) -> str:
    """The error line: exactly one, followed by nothing or one hint (progress and retry notices may precede)."""
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    after = lines[errors[0] + 1:]
    assert after == [] or (len(after) == 1 and after[0].startswith("hint: ")), stderr
    return lines[errors[0]]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(setup, case):
    args = [arg.format(**setup.values) for arg in case.args]
    env = {key: value.format(**setup.values) for key, value in (case.env or {}).items()}
    if not case.repo:
        env.setdefault("UDOCKER_DIR", setup.runner.repo)
    done = setup.runner(*args, env=env, repo=None if case.repo else False, cwd=setup.cwd, input="", timeout=60)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    line = _one_error(done.stderr)
    assert case.says.lower() in line.lower(), line
    assert done.returncode == case.status, done.stderr
    assert os.listdir(setup.cwd) == [], "the current directory was written to"
    assert _snapshot(setup.runner.repo) == setup.snapshot
    shutil.rmtree(os.path.join(setup.tmp, "out"))
    os.makedirs(os.path.join(setup.tmp, "out"))


def test_repository_still_lists_what_was_there(setup):
    assert _listing(setup.runner) == setup.listing
    assert setup.runner("verify", setup.values["img"]).returncode == 0


def test_the_table_is_large_enough():
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)


def _container(udocker, registry, name, *setup_args, img=None):
    img = img or registry.ref("test/busybox:latest")
    for args in (("pull", img), ("create", "--name", name, img)) + ((("setup",) + setup_args + (name,),)
                                                                       if setup_args else ()):
        done = udocker(*args, input="")
        assert done.returncode == 0, done.stderr
    return name


@pytest.mark.parametrize("mode", ["P1", "R1", "F1"])
def test_tty_without_terminal_and_relative_workdir_in_every_mode(udocker, registry, mode, request):
    """udocker 1.3 ignores -t when stdin is not a terminal (R modes failed opening /dev/tty); a relative -w is
    one udocker line and 125 in every mode (R modes printed runc's log line and exited 1). Fakechroot needs
    dynamic programs: F1 runs the Debian image."""
    img = request.getfixturevalue("debian_image").ref if mode.startswith("F") else None
    name = _container(udocker, registry, "m" + mode.lower(), "--execmode", mode, img=img)
    done = udocker("run", "-t", name, "sh", "-c", "echo hi", input="")
    assert (done.returncode, done.stdout.strip()) == (0, "hi"), done.stderr
    done = udocker("run", "-i", "-t", "-w", "relative", name, "true", input="")
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["error: the working directory 'relative' is invalid: it needs to be an "
                                        "absolute path", "hint: use -w /PATH"]
    assert done.returncode == 125


def test_setup_nvidia_on_a_node_without_gpu(udocker, registry):
    """A container set up with --nvidia (often on a login node) still runs on a node without a GPU, with a
    warning; run --nvidia there is an error; setup --purge forgets --nvidia."""
    from udocker.inject import nvidia

    if nvidia.driver_present("/") and nvidia.gpus("/"):
        pytest.skip("this node has an NVIDIA GPU")
    name = _container(udocker, registry, "gpu", "--nvidia")
    done = udocker("run", name, "echo", "ran", input="")
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(("warning:", "error:"))] == [
        f"warning: container {_id(udocker, name)[:12]} is set up with --nvidia but this node has no NVIDIA GPU: "
        "running without the driver"]
    assert udocker("-q", "run", name, "true", input="").stderr == ""
    done = udocker("run", "--nvidia", name, "true", input="")
    assert done.returncode == 125 and _one_error(done.stderr).startswith("error: no NVIDIA driver on this node")
    assert udocker("setup", "--purge", name).returncode == 0
    assert _record(udocker, name).get("nvidia") is None
    done = udocker("run", name, "true", input="")
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


def _id(udocker, name):
    return _record(udocker, name)["id"]


def _record(udocker, name):
    path = udocker("inspect", "-p", name).stdout.strip()
    with open(os.path.join(os.path.dirname(path), "container.json"), encoding="utf-8") as stream:
        return json.load(stream)
