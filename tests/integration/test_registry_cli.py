"""login, logout, search and manifest inspect, run as `python -m udocker` against real registries."""

import base64
import json
import os

import pytest

from tests.integration.conftest import REPOSITORY, TAG
from tests.support.local_registry import free_port


def test_manifest_inspect(udocker, plain_registry):
    done = udocker("manifest", "inspect", plain_registry.ref)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(plain_registry.image["manifest"])
    assert udocker("manifest", "inspect", "--json", plain_registry.ref).stdout == done.stdout


def test_manifest_unknown(udocker, plain_registry):
    done = udocker("manifest", "inspect", f"{plain_registry.host}/library/ubunto:22.04")
    assert done.returncode == 1
    assert done.stderr == (f"error: manifest unknown: {plain_registry.host}/library/ubunto:22.04\n"
                           "hint: check the name or tag\n")


def test_connection_refused(udocker):
    host = f"127.0.0.1:{free_port()}"
    done = udocker("manifest", "inspect", f"{host}/tests/tiny:1.0", env={"UDOCKER_RETRIES": "0"})
    assert done.returncode == 1
    assert done.stderr == f"error: cannot reach registry {host}: connection refused\n"
    done = udocker("manifest", "inspect", f"{host}/tests/tiny:1.0", env={"UDOCKER_RETRIES": "1"})
    assert done.stderr == (f"cannot reach {host} (connection refused); retrying\n"
                           f"error: cannot reach registry {host}: connection refused\n")


def test_tls_needs_the_ca(udocker, tls_registry):
    env = {"UDOCKER_REGISTRY": tls_registry.registry.url}
    done = udocker("manifest", "inspect", f"{REPOSITORY}:{TAG}", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: tls verification failed for registry {tls_registry.host}: "
                                  "certificate verify failed")
    assert done.stderr.endswith("hint: set ca_file to the registry's CA bundle, or use --insecure\n")
    assert len(done.stderr.splitlines()) == 2
    done = udocker("--insecure", "manifest", "inspect", f"{REPOSITORY}:{TAG}", env=env)
    assert done.returncode == 0, done.stderr
    conf = os.path.join(os.path.dirname(udocker.repo), "ca.conf")
    with open(conf, "w", encoding="utf-8") as stream:
        stream.write(f"ca_file: {tls_registry.ca}\n")
    done = udocker("--config", conf, "manifest", "inspect", f"{REPOSITORY}:{TAG}", env=env)
    assert done.returncode == 0, done.stderr


def test_htpasswd_login_flow(udocker, htpasswd_registry):
    host, ref = htpasswd_registry.host, htpasswd_registry.ref
    done = udocker("manifest", "inspect", ref)
    assert done.returncode == 1
    assert done.stderr == (f"error: authentication required for manifest {ref}\n"
                           f"hint: run 'udocker login --registry={host}'\n")
    done = udocker("login", "--username=alice", "--password=wrong", f"--registry={host}")
    assert done.returncode == 1
    assert done.stderr == (f"error: login failed for {host}: username or password refused\n"
                           "hint: check the username and password\n")
    credentials = os.path.join(udocker.repo, "credentials.yaml")
    assert not os.path.exists(credentials)
    done = udocker("login", "--username", "alice", "--password-stdin", "--registry", f"http://{host}/",
                   input="wonderland\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"login succeeded: {host}\n"
    assert os.stat(credentials).st_mode & 0o777 == 0o600
    assert "wonderland" not in done.stdout + done.stderr
    assert udocker("manifest", "inspect", ref).returncode == 0
    done = udocker("logout", f"--registry={host}")
    assert done.stdout == f"removed credentials for {host}\n"
    assert udocker("manifest", "inspect", ref).returncode == 1
    assert udocker("logout", f"--registry={host}").stdout == f"not logged in to {host}\n"


def test_login_without_tty_needs_options(udocker, htpasswd_registry):
    done = udocker("login", "--username=alice", f"--registry={htpasswd_registry.host}")
    assert done.returncode == 2
    assert done.stderr.startswith("error: give --username and --password")


def test_logout_all(udocker, htpasswd_registry, token_registry):
    for served in (htpasswd_registry, token_registry):
        done = udocker("login", "-u", "alice", "-p", "wonderland", served.host)
        assert done.returncode == 0, done.stderr
    done = udocker("logout", "-a")
    assert sorted(done.stdout.splitlines()) == sorted(f"removed credentials for {s.host}"
                                                      for s in (htpasswd_registry, token_registry))


def test_docker_config_json(udocker, htpasswd_registry, home):
    os.makedirs(os.path.join(home, ".docker"))
    with open(os.path.join(home, ".docker", "config.json"), "w", encoding="utf-8") as stream:
        json.dump({"auths": {htpasswd_registry.host: {"auth": base64.b64encode(b"alice:wonderland").decode()}}},
                  stream)
    done = udocker("manifest", "inspect", htpasswd_registry.ref)
    assert done.returncode == 0, done.stderr


def test_token_login_and_pull(udocker, token_registry):
    host = token_registry.host
    done = udocker("login", "-u", "alice", "-p", "nope", f"--registry={host}")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: login failed for {host}: the auth server for {host} refused the "
                                  "username or password\n")
    assert udocker("login", "-u", "alice", "-p", "wonderland", f"--registry={host}").returncode == 0
    done = udocker("manifest", "inspect", token_registry.ref)
    assert done.returncode == 0, done.stderr


def test_search_catalog_and_tags(udocker, plain_registry):
    host = plain_registry.host
    done = udocker("search", f"{host}/tiny")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NAME", f"{host}/{REPOSITORY}"]
    done = udocker("search", "-a", "--registry", host, "tests")
    assert done.stdout.splitlines()[1:] == [f"{host}/tests/other", f"{host}/tests/tiny"]
    done = udocker("search", "--list-tags", f"{host}/{REPOSITORY}")
    assert (done.returncode, done.stdout) == (0, f"{TAG}\n")
    done = udocker("search", "--list-tags", f"{host}/tests/missing")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: repository unknown: {host}/tests/missing\n")


@pytest.mark.parametrize("setting", ["credHelpers", "credsStore"])
def test_docker_credential_helpers(udocker, htpasswd_registry, home, tmp_path, setting):
    """Docker's credential helpers (docker-credential-NAME get: server on stdin, JSON on stdout)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    asked = tmp_path / "asked"
    helper.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > {asked}\n"
                      "echo '{\"ServerURL\": \"x\", \"Username\": \"alice\", \"Secret\": \"wonderland\"}'\n")
    helper.chmod(0o755)
    os.makedirs(os.path.join(home, ".docker"))
    config = {"credHelpers": {htpasswd_registry.host: "fake"}} if setting == "credHelpers" else {"credsStore": "fake"}
    with open(os.path.join(home, ".docker", "config.json"), "w", encoding="utf-8") as stream:
        json.dump(config, stream)
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    done = udocker("pull", htpasswd_registry.ref, env={"PATH": path})
    assert done.returncode == 0, done.stderr
    assert asked.read_text() == htpasswd_registry.host
    helper.write_text("#!/bin/sh\necho 'credentials not found in native keychain'; exit 1\n")
    done = udocker("manifest", "inspect", htpasswd_registry.ref, env={"PATH": path})
    assert done.returncode == 1 and done.stderr.startswith("error: authentication required")
