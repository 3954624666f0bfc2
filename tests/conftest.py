"""Fixtures shared by every test: real registries with the test images, and a runner for the udocker CLI.

registry          session: a plain-HTTP docker-registry on loopback with every test image pushed
make_registry     session: a factory for more registries (htpasswd users, TLS, chosen images)
udocker           function: run the CLI in a subprocess against a fresh repository in tmp_path
debian_image      session: the Debian 12 image built by tests/support/build_debian_image.py, pushed to `registry` as
                  test/debian:12; needs UDOCKER_TEST_DEBIAN (skips without it, fails under CI)
udocker13         function: a factory of udocker 1.3.17 runners (tests/support/udocker13), UDOCKER_TEST_V13

The image builders live in tests/support/build_test_images.py (LAYERS_EXPECTED, check_tree, ...): import them as
`from tests.support.build_test_images import ...`; this file puts the checkout's root on sys.path.
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from tests.support import build_debian_image as debian  # noqa: E402
from tests.support import build_test_images as builders  # noqa: E402
from tests.support.local_registry import BINARY, LocalRegistry  # noqa: E402


def require(binary: str) -> None:
    """Skip the test when a host tool is missing, except under CI, where .ci/run installs it: there it fails."""
    if shutil.which(binary) or os.access(binary, os.X_OK):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{binary} is missing: .ci/run should have installed it")
    pytest.skip(f"{binary} is not installed")


@dataclass
class RunningRegistry:
    """A started registry. `images` maps repository:tag (e.g. "test/busybox:latest") to what was pushed
    (tests.support.build_test_images.Pushed: digest, media_type, config_digest, layers, children by platform)."""

    server: LocalRegistry
    users: Dict[str, str] = field(default_factory=dict)
    cafile: Optional[str] = None
    images: Dict[str, "builders.Pushed"] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def scheme(self) -> str:
        return self.server.scheme

    @property
    def workdir(self) -> str:
        return self.server.workdir

    @property
    def digests(self) -> Dict[str, str]:
        """repository:tag -> manifest (or index) digest."""
        return {ref: pushed.digest for ref, pushed in self.images.items()}

    def ref(self, name: str) -> str:
        """The full reference of a repository:tag here, e.g. ref("test/busybox:latest")."""
        return f"{self.host}/{name}"

    def client(self, *, user: Optional[str] = None) -> "builders.Registry":
        """A pushing client for this registry, authenticated as user (default: the first one, if any)."""
        user = user or next(iter(self.users), None)
        auth = (user, self.users[user]) if user else None
        return builders.Registry(self.host, scheme=self.scheme, auth=auth, cafile=self.cafile)

    def push(self, which: Iterable[str] = builders.NAMES, *, prefix: str = "test/") -> Dict[str, "builders.Pushed"]:
        """Push more test images (busybox, layers, multiarch), e.g. under another prefix."""
        pushed = builders.push_test_images(self.client(), prefix=prefix, which=which)
        self.images.update(pushed)
        return pushed


def _htpasswd(workdir: str, users: Dict[str, str]) -> str:
    require("htpasswd")
    path = os.path.join(workdir, "htpasswd")
    lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
                            text=True).stdout.strip() for user, password in users.items()]
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    return path


def _certificate(workdir: str) -> Dict[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost; the certificate is also its own CA file."""
    require("openssl")
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return {"certificate": cert, "key": key}


@pytest.fixture(scope="session")
def make_registry(tmp_path_factory):
    """Factory: make_registry(*, images=("busybox",), users=None, tls=False, extra=None) -> RunningRegistry.

    images: groups from tests.support.build_test_images.NAMES to push (pushed as the first user when users is set);
    users: {name: password} enables htpasswd basic authentication; tls: serve HTTPS with a self-signed
    certificate (RunningRegistry.cafile trusts it); extra: merged into the registry's config. Every registry
    stops at the end of the session.
    """
    require(BINARY)
    started: List[LocalRegistry] = []

    def make(*, images: Iterable[str] = ("busybox",), users: Optional[Dict[str, str]] = None,
             tls: bool = False, extra: Optional[dict] = None) -> RunningRegistry:
        workdir = str(tmp_path_factory.mktemp("registry"))
        config = dict(extra or {})
        cafile = None
        if users:
            config["auth"] = {"htpasswd": {"realm": "udocker-tests", "path": _htpasswd(workdir, users)}}
        if tls:
            config["http"] = {**config.get("http", {}), "tls": _certificate(workdir)}
            cafile = config["http"]["tls"]["certificate"]
        server = LocalRegistry(workdir, extra=config, scheme="https" if tls else "http")
        server.start()
        started.append(server)
        running = RunningRegistry(server, dict(users or {}), cafile)
        if images:
            running.push(images)
        return running

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def registry(make_registry) -> RunningRegistry:
    """A plain-HTTP registry on loopback with every test image: test/busybox, test/busybox-oci, test/layers,
    test/multiarch (OCI index), test/multiarch-docker (Docker list), all tagged latest."""
    return make_registry(images=builders.NAMES)


DEBIAN_ENV = "UDOCKER_TEST_DEBIAN"


@dataclass
class DebianImage:
    """The Debian 12 image in `registry` under `name` ("test/debian:12"). `archive`: the OCI layout tarball it
    was pushed from; `info`: tests/support/build_debian_image.py's record of the build (debian_version, packages,
    layers with digest/diff_id/size, seconds, ...); `expected`: layer 2's effects on layer 1 and
    `base_expected`: a few facts of layer 1, both for tests.support.build_test_images.check_tree()."""

    registry: RunningRegistry
    name: str
    pushed: "builders.Pushed"
    archive: str
    info: dict

    @property
    def ref(self) -> str:
        """The full reference, e.g. 127.0.0.1:PORT/test/debian:12."""
        return self.registry.ref(self.name)

    @property
    def digest(self) -> str:
        return self.pushed.digest

    @property
    def expected(self) -> Dict[str, dict]:
        return self.info["expected"]

    @property
    def base_expected(self) -> Dict[str, dict]:
        return self.info["base_expected"]


@pytest.fixture(scope="session")
def debian_image(registry) -> DebianImage:
    """Push the archive named by UDOCKER_TEST_DEBIAN to `registry` as test/debian:12 (not listed in
    registry.images, whose set of names other tests know). Unset: skip, or fail under CI (.ci/run builds it)."""
    archive = os.environ.get(DEBIAN_ENV)
    if not archive:
        how = (f"build it as root with `python3 tests/support/build_debian_image.py /some/dir/debian12.tar` and set "
               f"{DEBIAN_ENV}=/some/dir/debian12.tar")
        if os.environ.get("CI"):
            pytest.fail(f"{DEBIAN_ENV} is not set: .ci/run should have built the Debian image ({how})")
        pytest.skip(f"no Debian test image: {how}")
    try:
        info = debian.load_info(archive)
        pushed = debian.push_archive(registry.client(), archive, f"test/debian:{debian.TAG}")
    except (OSError, ValueError, KeyError) as error:
        pytest.fail(f"{DEBIAN_ENV}={archive}: cannot push it: {error}")
    if pushed.digest != info["manifest_digest"]:
        pytest.fail(f"{archive}: manifest {pushed.digest} is not the one its info names, {info['manifest_digest']}")
    return DebianImage(registry, pushed.ref, pushed, archive, info)


class UdockerRunner:
    """Runs `python -m udocker --repo REPO ARGS...` in a subprocess with an explicit environment.

    repo: the per-test repository (tmp_path/repo, not created in advance); home: HOME (tmp_path/home);
    env: the base environment (PATH, HOME, LANG, PYTHONPATH pointing at this checkout).
    """

    def __init__(self, tmp_path):
        self.repo = str(tmp_path / "repo")
        self.home = str(tmp_path / "home")
        self.cwd = str(tmp_path)
        os.makedirs(self.home, exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": self.home, "LANG": "C.UTF-8",
                    "PYTHONPATH": TOP, "PYTHONDONTWRITEBYTECODE": "1", "UDOCKER_RETRIES": "1"}

    def __call__(self, *args: str, repo=None, env: Optional[Dict[str, Optional[str]]] = None,
                 input: Optional[str] = None, timeout: float = 120, cwd: Optional[str] = None,
                 check: bool = False) -> subprocess.CompletedProcess:
        """Run udocker with args. repo: None -> this test's repository, False -> no --repo option (so
        UDOCKER_DIR or ~/.udocker applies), a path -> that repository. env: added to the base environment;
        a None value removes a variable. check: raise CalledProcessError on a non-zero exit."""
        command = [sys.executable, "-m", "udocker"]
        if repo is not False:
            command += ["--repo", str(repo or self.repo)]
        environment = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return subprocess.run(command + [str(arg) for arg in args], env=environment, input=input,
                              timeout=timeout, cwd=cwd or self.cwd, text=True, capture_output=True,
                              check=check)


@pytest.fixture
def udocker(tmp_path) -> UdockerRunner:
    """run(*args, repo=None, env=None, input=None, timeout=120, cwd=None, check=False) -> CompletedProcess."""
    return UdockerRunner(tmp_path)


@pytest.fixture
def udocker13(tmp_path):
    """Factory: udocker13(topdir=None) -> tests.support.udocker13.Udocker13 on topdir (default: this test's
    udocker repository path, so that `udocker` and udocker 1.3 share it). Needs UDOCKER_TEST_V13 (skips without it,
    fails under CI, where .ci/run installs udocker 1.3.17)."""
    from tests.support import udocker13 as v13

    if not v13.executable():
        if os.environ.get("CI"):
            pytest.fail(f"{v13.ENV} is not set: .ci/run should have installed udocker 1.3.17")
        pytest.skip(f"no udocker 1.3: pip install udocker==1.3.17 into a venv of its own and set {v13.ENV}")

    def make(topdir: Optional[str] = None) -> "v13.Udocker13":
        return v13.Udocker13(topdir or str(tmp_path / "repo"))

    return make
