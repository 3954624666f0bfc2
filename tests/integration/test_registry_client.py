"""RegistryClient against real docker-registry processes (see conftest.py)."""

import base64
import json

import pytest

from tests.integration.conftest import REPOSITORY, TAG
from udocker.config import Config
from udocker.errors import AuthError, NotFound, RegistryError
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.paths import Layout
from udocker.reference import parse
from udocker.registry.client import RegistryClient
from udocker.registry.credentials import CredentialStore
from udocker.store import Repository


def make_client(tmp_path, **values):
    config = Config.load(cli={"topdir": str(tmp_path / "repo"), "retries": 1, **values}, environ={},
                         system_file=str(tmp_path / "none"))
    return RegistryClient(config, Layout(config["topdir"]))


def fetch_layer(tmp_path, client, ref, image):
    repo = Repository.open(Layout(str(tmp_path / "repo")))
    descriptor = Descriptor(mediatypes.DOCKER_LAYER_GZIP, image["layer_digest"], len(image["layer"]))
    seen = []
    with repo.blobs.ingest(descriptor) as sink:
        client.fetch_blob(ref, descriptor, sink, progress=seen.append)
    assert sum(seen) == len(image["layer"])
    with open(repo.blobs.path(descriptor.digest), "rb") as stream:
        return stream.read()


def test_endpoint(tmp_path):
    client = make_client(tmp_path, registry="https://hub.example/")
    assert client.endpoint(parse("busybox")) == "https://hub.example"
    assert client.endpoint(parse("127.0.0.1:5000/a")) == "http://127.0.0.1:5000"
    assert client.endpoint(parse("localhost:5000/a")) == "http://localhost:5000"
    assert client.endpoint(parse("quay.io/a/b")) == "https://quay.io"


def test_anonymous_manifest_and_blob(tmp_path, plain_registry):
    client = make_client(tmp_path)
    ref = parse(plain_registry.ref)
    answer = client.get_manifest(ref)
    image = plain_registry.image
    assert (answer.data, answer.media_type, answer.digest) == (image["manifest"], image["media_type"],
                                                               image["digest"])
    assert fetch_layer(tmp_path, client, ref, image) == image["layer"]


def test_pull_by_digest(tmp_path, plain_registry):
    client = make_client(tmp_path)
    digest = plain_registry.image["digest"]
    pinned = parse(f"{plain_registry.host}/{REPOSITORY}@{digest}")
    assert client.get_manifest(pinned).data == plain_registry.image["manifest"]
    by_digest = client.get_manifest_by_digest(parse(plain_registry.ref), digest)
    assert by_digest.digest == digest


def test_manifest_unknown(tmp_path, plain_registry):
    with pytest.raises(NotFound) as caught:
        make_client(tmp_path).get_manifest(parse(f"{plain_registry.host}/library/ubunto:22.04"))
    assert caught.value.message == f"manifest unknown: {plain_registry.host}/library/ubunto:22.04"
    assert caught.value.hint == "check the name or tag"


def test_tags_and_catalog_pages(tmp_path, plain_registry):
    client = make_client(tmp_path)
    assert client.tags(parse(plain_registry.ref)) == [TAG]
    assert client.catalog(plain_registry.host) == ["tests/other", "tests/tiny"]
    target = client._targets(plain_registry.host, mirrors=False)[0]
    pages = list(client._pages(target, "/v2/_catalog?n=1", scope="registry:catalog:*", what=("catalog", "x")))
    assert [p["repositories"] for p in pages][:2] == [["tests/other"], ["tests/tiny"]]


def test_mirror_falls_back_to_registry(tmp_path, plain_registry):
    from tests.support.local_registry import free_port

    client = make_client(tmp_path, mirrors={plain_registry.host: [f"http://127.0.0.1:{free_port()}"]})
    assert client.get_manifest(parse(plain_registry.ref)).digest == plain_registry.image["digest"]


def test_tls_with_ca_file_without_and_insecure(tmp_path, tls_registry):
    ref = parse(tls_registry.ref)
    # 127.0.0.1 is loopback, so the client would use http: name the HTTPS URL as the registry's mirror-free
    # endpoint through a docker.io-style registry setting instead.
    hub = parse(f"{REPOSITORY}:{TAG}")
    url = tls_registry.registry.url
    assert make_client(tmp_path, registry=url, ca_file=tls_registry.ca).get_manifest(hub).digest \
        == tls_registry.image["digest"]
    with pytest.raises(RegistryError) as caught:
        make_client(tmp_path, registry=url).get_manifest(hub)
    assert caught.value.message.startswith(f"tls verification failed for registry {tls_registry.host}: "
                                           "certificate verify failed")
    assert "--insecure" in caught.value.hint
    assert make_client(tmp_path, registry=url, insecure=True).get_manifest(hub).data \
        == tls_registry.image["manifest"]
    assert ref.domain == tls_registry.host


def test_htpasswd_needs_credentials(tmp_path, htpasswd_registry):
    client = make_client(tmp_path)
    with pytest.raises(AuthError) as caught:
        client.get_manifest(parse(htpasswd_registry.ref))
    assert caught.value.message == f"authentication required for manifest {htpasswd_registry.ref}"
    assert caught.value.hint == f"run 'udocker login --registry={htpasswd_registry.host}'"


def test_htpasswd_with_stored_credentials(tmp_path, htpasswd_registry):
    client = make_client(tmp_path)
    CredentialStore(Layout(str(tmp_path / "repo"))).store(htpasswd_registry.host, "alice", "wonderland")
    ref = parse(htpasswd_registry.ref)
    assert client.get_manifest(ref).digest == htpasswd_registry.image["digest"]
    assert fetch_layer(tmp_path, client, ref, htpasswd_registry.image) == htpasswd_registry.image["layer"]


def test_docker_config_json_is_honoured(tmp_path, htpasswd_registry, monkeypatch, home):
    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    docker = tmp_path / "home" / ".docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {htpasswd_registry.host: {
        "username": "alice", "password": "wonderland"}}}))
    assert make_client(tmp_path).get_manifest(parse(htpasswd_registry.ref)).digest \
        == htpasswd_registry.image["digest"]


def test_token_is_fetched_once_and_reused(tmp_path, token_registry):
    client = make_client(tmp_path)
    CredentialStore(Layout(str(tmp_path / "repo"))).store(token_registry.host, "alice", "wonderland")
    ref = parse(token_registry.ref)
    before = token_registry.token_server.token_requests()
    assert client.get_manifest(ref).digest == token_registry.image["digest"]
    assert token_registry.token_server.token_requests() == before + 1
    last = token_registry.token_server.requests[-1]
    assert last["user"] == "alice"
    assert last["query"]["scope"] == [f"repository:{REPOSITORY}:pull"]
    client.get_manifest(ref)
    assert fetch_layer(tmp_path, client, ref, token_registry.image) == token_registry.image["layer"]
    assert token_registry.token_server.token_requests() == before + 1


def test_token_anonymous_is_refused(tmp_path, token_registry):
    with pytest.raises(AuthError) as caught:
        make_client(tmp_path).get_manifest(parse(token_registry.ref))
    assert caught.value.message == f"authentication required for manifest {token_registry.ref}"


def test_check_login(tmp_path, token_registry, htpasswd_registry):
    for served in (token_registry, htpasswd_registry):
        client = make_client(tmp_path)
        client.check_login(served.host, username="alice", password="wonderland")
        with pytest.raises(AuthError) as caught:
            client.check_login(served.host, username="alice", password="wrong")
        assert caught.value.message.startswith(f"login failed for {served.host}: ")


def test_credentials_aliases_and_docker_auth_field(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    token = base64.b64encode(b"bob:secret").decode()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": token}}}))
    store = CredentialStore(Layout(str(tmp_path / "repo")))
    assert store.get("docker.io") == ("bob", "secret")
    store.store("registry-1.docker.io", "carol", "pw")
    assert store.get("index.docker.io") == ("carol", "pw")
    assert (tmp_path / "repo" / "credentials.yaml").stat().st_mode & 0o777 == 0o600
    assert store.remove("docker.io") is True
    assert store.get("docker.io") == ("bob", "secret")
