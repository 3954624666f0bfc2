"""A direct pull goes through http.client (registry/wire.py), never importing requests: fresh and cached pulls
from a plain-HTTP registry, a Bearer-token registry (401 challenge, token with stored credentials), a Basic-auth
registry (credentials.yaml) and a TLS registry verified with a test CA; and the token request follows redirects,
gzip bodies are decoded and connections kept alive."""

import gzip
import hashlib
import json

import pytest

from tests.integration.conftest import USERS
from tests.integration.test_registry_client import make_client
from tests.integration.test_registry_http import BASIC, BLOB, DIGEST, reply, servers  # noqa: F401 (a fixture)
from udocker.oci import mediatypes
from udocker.paths import Layout
from udocker.reference import parse
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


def test_a_netrc_takes_requests(udocker, plain_registry):
    """requests reads ~/.netrc for credentials: with one there, requests sends the requests, as before."""
    with open(f"{udocker.home}/.netrc", "w", encoding="ascii") as stream:
        stream.write("machine example.invalid login a password b\n")
    done = udocker("-q", "pull", plain_registry.ref, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "requests" in imported(done.stderr)


def test_token_realm_redirect_keep_alive_and_gzip(tmp_path, servers):  # noqa: F811
    """A Bearer challenge whose realm redirects (the credentials go to the realm's host only), a gzip-encoded
    manifest (decoded; its digest is of the decoded bytes), and one kept-alive connection for all of it."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST, "config": {
        "mediaType": mediatypes.DOCKER_CONFIG, "digest": DIGEST, "size": len(BLOB)}, "layers": []}).encode()
    token_host = servers(lambda h: reply(h, 200, json.dumps({"token": "t0k"}).encode()))

    ports = set()

    def registry(handler):
        ports.add(handler.client_address[1])
        if handler.path.startswith("/auth"):
            reply(handler, 307, headers=[("Location", f"http://localhost:{token_host.port}/token?x=1")])
        elif handler.headers.get("Authorization") != "Bearer t0k":
            reply(handler, 401, headers=[("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{origin.port}/auth",'
                                                              'service="svc"')])
        else:
            reply(handler, 200, gzip.compress(manifest), headers=[
                ("Content-Type", mediatypes.DOCKER_MANIFEST), ("Content-Encoding", "gzip")])

    origin = servers(registry)
    CredentialStore(Layout(str(tmp_path / "repo"))).store(f"127.0.0.1:{origin.port}", "alice", "wonderland")
    client = make_client(tmp_path)
    got = client.get_manifest(parse(f"127.0.0.1:{origin.port}/tests/blob:1"))
    assert got.data == manifest and got.digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert [path.split("?")[0] for path, _ in origin.seen] == ["/v2/tests/blob/manifests/1", "/auth",
                                                              "/v2/tests/blob/manifests/1"]
    assert origin.seen[1][1].get("Authorization") == BASIC
    assert token_host.seen[0][0] == "/token?x=1" and "Authorization" not in token_host.seen[0][1]
    assert len(ports) == 1  # one kept-alive connection carried the three requests to the registry
    client.close()
