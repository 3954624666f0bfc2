"""Real registries for the integration tests: Debian's docker-registry in four configurations (plain HTTP,
TLS with a test CA, htpasswd Basic auth, token auth with a token server in a thread), each started once
per session with a tiny image pushed as tests/tiny:1.0."""

import os
import shutil
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from tests.support import local_registry

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPOSITORY = "tests/tiny"
TAG = "1.0"
USERS = {"alice": "wonderland"}


@dataclass
class Served:
    """A running registry and what was pushed into it."""

    registry: Any
    image: dict
    ca: Optional[str] = None
    token_server: Any = None

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def ref(self) -> str:
        return f"{self.host}/{REPOSITORY}:{TAG}"


def _serve(request, registry, pusher) -> Served:
    if not os.path.exists(local_registry.BINARY) or not shutil.which("openssl"):
        pytest.skip("docker-registry or openssl is not installed")
    registry.start()
    request.addfinalizer(registry.stop)
    return Served(registry, pusher.push_image(REPOSITORY, TAG))


@pytest.fixture(scope="session")
def plain_registry(request, tmp_path_factory) -> Served:
    """Anonymous, plain HTTP; also holds tests/other:1.0 so that the catalog has two pages of one."""
    registry = local_registry.LocalRegistry(str(tmp_path_factory.mktemp("plain")))
    served = _serve(request, registry, local_registry.Pusher(registry.url))
    local_registry.Pusher(registry.url).push_image("tests/other", TAG)
    return served


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory) -> dict:
    """{"ca", "cert", "key"}: a test CA and a server certificate for 127.0.0.1 signed by it."""
    return local_registry.make_tls(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="session")
def tls_registry(request, tmp_path_factory, tls_ca) -> Served:
    registry = local_registry.tls_registry(str(tmp_path_factory.mktemp("tls")), tls_ca)
    served = _serve(request, registry, local_registry.Pusher(registry.url, cafile=tls_ca["ca"]))
    served.ca = tls_ca["ca"]
    return served


@pytest.fixture(scope="session")
def htpasswd_registry(request, tmp_path_factory) -> Served:
    """Basic auth: USERS may pull and push, anonymous clients nothing."""
    registry = local_registry.htpasswd_registry(str(tmp_path_factory.mktemp("htpasswd")), USERS)
    return _serve(request, registry, local_registry.Pusher(registry.url, credentials=("alice", "wonderland")))


@pytest.fixture(scope="session")
def token_registry(request, tmp_path_factory) -> Served:
    """Token auth; `token_server.requests` records every token request."""
    server = local_registry.TokenServer(str(tmp_path_factory.mktemp("token-server")), USERS).start()
    request.addfinalizer(server.stop)
    registry = local_registry.token_registry(str(tmp_path_factory.mktemp("token")), server)
    served = _serve(request, registry, local_registry.Pusher(registry.url, credentials=("alice", "wonderland")))
    served.token_server = server
    return served


@pytest.fixture
def home(tmp_path) -> str:
    """An empty HOME, so that the developer's ~/.docker/config.json plays no part."""
    path = tmp_path / "home"
    path.mkdir(exist_ok=True)
    return str(path)
