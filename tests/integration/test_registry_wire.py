"""A direct pull goes through http.client (registry/wire.py), never importing requests: fresh and cached pulls
from a plain-HTTP registry, a Bearer-token registry (401 challenge, token with stored credentials), a Basic-auth
registry (credentials.yaml) and a TLS registry verified with a test CA; and the token request follows redirects."""

import pytest

from tests.integration.conftest import USERS
from udocker.paths import Layout
from udocker.registry.credentials import CredentialStore

HEAVY = ("requests", "urllib3", "idna", "charset_normalizer", "certifi", "socks")


def imported(stderr: str) -> set:
    """Top-level packages named in -X importtime lines (PYTHONPROFILEIMPORTTIME)."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("kind", ["plain", "token", "htpasswd", "tls"])
def test_fresh_and_cached_pulls_do_not_import_requests(udocker, request, kind):
    served = request.getfixturevalue(f"{kind}_registry")
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    if served.ca:
        env["UDOCKER_CA_FILE"] = served.ca
    if kind in ("token", "htpasswd"):
        user, password = next(iter(USERS.items()))
        CredentialStore(Layout(udocker.repo)).store(served.host, user, password)
    for _ in range(2):  # fresh, then cached (the manifest check only)
        done = udocker("-q", "pull", served.ref, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == served.ref
        modules = imported(done.stderr)
        assert "udocker" in modules  # the profile is there
        assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_a_proxy_takes_requests(udocker, plain_registry):
    """A dead proxy: the request went through requests (its error names the proxy)."""
    done = udocker("-q", "pull", plain_registry.ref, "--httpproxy=http://127.0.0.1:9",
                   env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode != 0
    assert "requests" in imported(done.stderr)
    assert "through proxy http://127.0.0.1:9" in done.stderr
