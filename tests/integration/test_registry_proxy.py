"""Proxies (--httpproxy, http_proxy and friends, no_proxy) and plain-HTTP registries on other hosts, against the
real registries of tests/integration/conftest.py and tests/support/relay_proxy.py (HTTP CONNECT and forwarding,
SOCKS5, SOCKS4/4a). A name only the proxy knows (NAME, an .invalid host) proves the traffic went through it:
udocker cannot even resolve it on its own."""

import json
import os
import socket
import urllib.parse

import pytest

from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.integration.conftest import REPOSITORY, TAG
from tests.support import local_registry
from tests.support.local_registry import free_port
from tests.support.relay_proxy import RelayProxy

NAME = "registry.proxied.invalid"
BLOBS = "blobs.proxied.invalid"


@pytest.fixture
def proxy(plain_registry):
    """A relay proxy that knows NAME (any port) as the plain registry."""
    with RelayProxy({NAME: plain_registry.host, BLOBS: plain_registry.host}) as running:
        yield running


def _named(plain_registry) -> str:
    return f"{NAME}:{plain_registry.registry.port}"


def _one_error(done) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_pull_through_the_option_reaches_a_name_only_the_proxy_knows(udocker, plain_registry, proxy):
    named = _named(plain_registry)
    ref = f"{named}/{REPOSITORY}:{TAG}"
    done = udocker("pull", f"--registry=http://{named}", ref, env={"UDOCKER_RETRIES": "0"})
    assert _one_error(done).startswith(f"error: cannot reach registry {named}: "), done.stderr
    assert proxy.count() == 0
    done = udocker("pull", f"--registry=http://{named}", f"--httpproxy={proxy.url()}", ref)
    assert done.returncode == 0, done.stderr
    assert proxy.count("forward") >= 3 and set(proxy.targets()) == {named}  # manifest, config, layer
    assert udocker("images").stdout.count(f"{named}/{REPOSITORY}") == 1


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a", "http"])
def test_socks_and_http_proxies_carry_pulls_of_insecure_registries(udocker, plain_registry, proxy, scheme):
    named = _named(plain_registry)
    done = udocker("pull", f"--httpproxy={proxy.url(scheme)}", f"{named}/{REPOSITORY}:{TAG}",
                   env={"UDOCKER_INSECURE_REGISTRIES": f"other.invalid:1,{named}"})
    assert done.returncode == 0, done.stderr
    kind = {"socks5h": "socks5", "socks4a": "socks4", "http": "forward"}[scheme]
    assert proxy.count(kind) >= (3 if kind == "forward" else 1)  # a tunnel carries several requests
    assert proxy.count() == proxy.count(kind)
    assert set(proxy.targets()) == {named}


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
def test_socks_proxies_that_resolve_locally(udocker, plain_registry, proxy, scheme):
    done = udocker("manifest", "inspect", f"--httpproxy={proxy.url(scheme)}", plain_registry.ref)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(plain_registry.image["manifest"])
    assert set(proxy.targets()) == {plain_registry.host}
    # a name only the proxy knows cannot be resolved here: socks5 and socks4 send addresses, not names
    done = udocker("manifest", "inspect", f"--httpproxy={proxy.url(scheme)}", f"{_named(plain_registry)}/x:1",
                   env={"UDOCKER_INSECURE_REGISTRIES": NAME, "UDOCKER_RETRIES": "0"})
    assert _one_error(done).startswith(f"error: cannot reach registry {_named(plain_registry)} through proxy "
                                       f"{proxy.url(scheme)}: "), done.stderr


def test_manifest_takes_the_option_before_inspect_too(udocker, plain_registry, proxy):
    done = udocker("manifest", f"--httpproxy={proxy.url('socks5h')}", "inspect",
                   f"{_named(plain_registry)}/{REPOSITORY}:{TAG}", env={"UDOCKER_INSECURE_REGISTRIES": NAME})
    assert done.returncode == 0, done.stderr
    assert proxy.count("socks5") == 1


def test_search_through_the_proxy(udocker, plain_registry, proxy):
    named = _named(plain_registry)
    done = udocker("search", f"--httpproxy={proxy.url()}", f"--registry=http://{named}", "tests/")
    assert done.returncode == 0, done.stderr
    assert f"{named}/{REPOSITORY}" in done.stdout
    done = udocker("search", f"--httpproxy={proxy.url('socks4a')}", f"--registry=http://{named}", "--list-tags",
                   REPOSITORY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [TAG]
    assert proxy.count("forward") >= 1 and proxy.count("socks4") == 1 and set(proxy.targets()) == {named}


def test_login_and_its_token_fetch_through_the_proxy(udocker, token_registry):
    realm = urllib.parse.urlsplit(token_registry.token_server.realm).netloc
    with RelayProxy() as relay:
        done = udocker("login", "-u", "alice", "-p", "wonderland", f"--registry={token_registry.host}",
                       f"--httpproxy={relay.url('socks5h')}")
        assert done.returncode == 0, done.stderr
        assert {token_registry.host, realm} == set(relay.targets())


def test_login_to_basic_auth_through_the_proxy(udocker, htpasswd_registry):
    with RelayProxy() as relay:
        done = udocker("login", "-u", "alice", "-p", "nope", f"--httpproxy={relay.url()}",
                       f"--registry=http://{htpasswd_registry.host}")
        assert _one_error(done) == f"error: login failed for {htpasswd_registry.host}: username or password refused"
        done = udocker("login", "-u", "alice", "-p", "wonderland", f"--httpproxy={relay.url()}",
                       htpasswd_registry.host)
        assert done.returncode == 0, done.stderr
        assert relay.count("forward") >= 2


def test_https_goes_through_a_connect_tunnel(udocker, tls_registry):
    with RelayProxy() as relay:
        done = udocker("pull", f"--httpproxy={relay.url()}", tls_registry.ref,
                       env={"UDOCKER_CA_FILE": tls_registry.ca})
        assert done.returncode == 0, done.stderr
        # a loopback registry is asked over plain HTTP first (forwarded), then over TLS (tunnelled)
        assert relay.count("connect") >= 1 and relay.count() == relay.count("connect") + relay.count("forward")
        assert set(relay.targets()) == {tls_registry.host}


@pytest.mark.parametrize("variable", ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
def test_environment_proxies_for_https(udocker, tls_registry, variable):
    with RelayProxy() as relay:
        done = udocker("manifest", "inspect", tls_registry.ref,
                       env={"UDOCKER_CA_FILE": tls_registry.ca, variable: relay.url()})
        assert done.returncode == 0, done.stderr
        assert relay.count("connect") == 1  # 127.0.0.1 too: only no_proxy keeps a host off the proxy


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy"])
def test_environment_proxies_for_plain_http(udocker, plain_registry, proxy, variable):
    named = _named(plain_registry)
    done = udocker("pull", f"--registry=http://{named}", f"{named}/{REPOSITORY}:{TAG}",
                   env={variable: proxy.url("socks5h") if variable == "all_proxy" else proxy.url()})
    assert done.returncode == 0, done.stderr
    assert proxy.count() >= (1 if variable == "all_proxy" else 3) and set(proxy.targets()) == {named}


def test_the_option_wins_over_the_environment_and_the_scheme_chooses_the_variable(udocker, plain_registry, proxy):
    dead = f"http://127.0.0.1:{free_port()}"
    done = udocker("manifest", "inspect", f"--httpproxy={proxy.url()}", plain_registry.ref,
                   env={"http_proxy": dead, "all_proxy": dead})
    assert done.returncode == 0, done.stderr
    done = udocker("manifest", "inspect", plain_registry.ref, env={"https_proxy": dead, "http_proxy": proxy.url()})
    assert done.returncode == 0, done.stderr  # an http:// registry: https_proxy does not apply
    assert proxy.count("forward") == 2


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "localhost,127.0.0.0/8", ".0.0.1"])
def test_no_proxy_sends_requests_direct(udocker, plain_registry, proxy, no_proxy):
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"http_proxy": dead, "no_proxy": no_proxy, "UDOCKER_RETRIES": "0"}
    done = udocker("manifest", "inspect", plain_registry.ref, env=env)
    if no_proxy == ".0.0.1":  # a domain suffix never matches an IP address
        assert _one_error(done) == (f"error: cannot reach registry {plain_registry.host} through proxy {dead}: "
                                    "connection refused")
        return
    assert done.returncode == 0, done.stderr
    done = udocker("manifest", "inspect", f"--httpproxy={proxy.url()}", plain_registry.ref,
                   env={"NO_PROXY": no_proxy})
    assert done.returncode == 0, done.stderr
    assert proxy.count() == 0  # no_proxy applies to --httpproxy too (as curl's NO_PROXY does)


def test_blob_redirects_to_another_host_go_through_the_proxy(udocker, plain_registry, proxy):
    manifest = json.loads(plain_registry.image["manifest"])
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    with FaultProxy(plain_registry.host) as front:
        for digest in digests:
            front.faults.append(Fault(f"/blobs/{digest}", "redirect", times=5, location=(
                f"http://{BLOBS}:{plain_registry.registry.port}/v2/{REPOSITORY}/blobs/{digest}")))
        done = udocker("pull", f"--httpproxy={proxy.url()}", f"{front.host}/{REPOSITORY}:{TAG}")
        assert done.returncode == 0, done.stderr
    blob_host = f"{BLOBS}:{plain_registry.registry.port}"
    assert proxy.targets().count(blob_host) == len(digests)
    assert set(proxy.targets()) == {front.host, blob_host}


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_a_dead_proxy_is_a_one_line_error(udocker, plain_registry, scheme):
    dead = f"{scheme}://127.0.0.1:{free_port()}"
    done = udocker("pull", f"--httpproxy={dead}", plain_registry.ref, timeout=60)
    assert _one_error(done) == (f"error: cannot reach registry {plain_registry.host} through proxy {dead}: "
                                "connection refused")
    assert done.returncode == 1
    done = udocker("run", f"--httpproxy={dead}", plain_registry.ref, "true", timeout=60)
    assert _one_error(done).startswith(f"error: cannot reach registry {plain_registry.host} through proxy {dead}")
    assert done.returncode == 125


@pytest.mark.parametrize("scheme, reason", [
    ("http", "tunnel connection failed: 502 bad gateway"),
    ("socks5h", "the proxy refused the connection (0x05: connection refused)"),
    ("socks4a", "the proxy refused the connection (0x5b: request rejected or failed)")])
def test_a_proxy_that_cannot_reach_the_registry(udocker, proxy, scheme, reason):
    done = udocker("manifest", "inspect", f"--httpproxy={proxy.url(scheme)}", "nowhere.invalid/x:1",
                   env={"UDOCKER_RETRIES": "0"})
    assert _one_error(done) == (f"error: cannot reach registry nowhere.invalid through proxy {proxy.url(scheme)}: "
                                f"{reason}")
    assert done.returncode == 1


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
def test_a_silent_proxy_times_out(udocker, plain_registry, scheme):
    """A proxy that accepts connections and never answers: the connect and stall timeouts end the wait."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.listen(16)
        url = f"{scheme}://127.0.0.1:{silent.getsockname()[1]}"
        done = udocker("manifest", "inspect", f"--httpproxy={url}", f"{NAME}:443/x:1", timeout=100,
                       env={"UDOCKER_RETRIES": "0", "UDOCKER_CONNECT_TIMEOUT": "1", "UDOCKER_STALL_TIMEOUT": "1"})
    assert _one_error(done) == f"error: cannot reach registry {NAME}:443 through proxy {url}: timed out"


def test_a_proxy_with_credentials_is_named_without_them(udocker, plain_registry):
    port = free_port()
    done = udocker("manifest", "inspect", f"--httpproxy=http://user:secret@127.0.0.1:{port}", plain_registry.ref,
                   env={"UDOCKER_RETRIES": "0"})
    assert _one_error(done) == (f"error: cannot reach registry {plain_registry.host} through proxy "
                                f"http://127.0.0.1:{port}: connection refused")
    assert "secret" not in done.stderr


@pytest.mark.parametrize("bad", ["ftp://proxy:3128", "socks5://", "http://proxy:99999", "http://proxy:3128/path",
                                 "socks6://proxy:1080"])
def test_a_bad_proxy_url_is_a_one_line_error(udocker, plain_registry, bad):
    done = udocker("pull", f"--httpproxy={bad}", plain_registry.ref)
    assert _one_error(done).startswith("error: config key 'http_proxy' in command line must be a proxy URL (")
    assert done.returncode == 1
    done = udocker("run", f"--httpproxy={bad}", plain_registry.ref, "true")
    assert _one_error(done).startswith("error: config key 'http_proxy' in command line must be a proxy URL (")
    assert done.returncode == 125
    done = udocker("search", plain_registry.ref, env={"UDOCKER_HTTP_PROXY": bad})
    assert _one_error(done).startswith("error: config key 'http_proxy' in environment variable UDOCKER_HTTP_PROXY")


def test_a_bad_proxy_variable_is_named(udocker, plain_registry):
    done = udocker("manifest", "inspect", plain_registry.ref, env={"http_proxy": "gopher://proxy:70"})
    assert _one_error(done).startswith("error: invalid proxy in environment variable http_proxy: ")
    assert done.returncode == 1


def test_run_pulls_through_the_proxy(udocker, registry):
    """udocker run IMAGE pulls through --httpproxy (a real image, run by a real engine)."""
    with RelayProxy() as relay:
        done = udocker("run", "--rm", f"--httpproxy={relay.url('socks5h')}", registry.ref("test/busybox:latest"),
                       "/bin/true", timeout=300)
        assert done.returncode == 0, done.stderr
        assert relay.count("socks5") >= 1 and set(relay.targets()) == {registry.host}


# -- plain-HTTP registries on a host that is not loopback --------------------------------------------------
def _own_address() -> str:
    """An IPv4 address of this host that is not loopback (the one a default route would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return address


@pytest.fixture(scope="module")
def lan_registry(request, tmp_path_factory):
    """The plain-HTTP registry on every address of this host, named by a non-loopback one: ADDRESS:PORT."""
    if not os.path.exists(local_registry.BINARY):
        pytest.skip("docker-registry is not installed")
    address = _own_address()
    registry = local_registry.LocalRegistry(str(tmp_path_factory.mktemp("lan")))
    registry.extra = {"http": {"addr": f"0.0.0.0:{registry.port}"}}
    registry.start()
    request.addfinalizer(registry.stop)
    local_registry.Pusher(registry.url).push_image(REPOSITORY, TAG)
    return f"{address}:{registry.port}"


def test_a_plain_http_registry_elsewhere_is_refused_with_a_hint(udocker, lan_registry):
    for extra in ([], ["--insecure"]):
        done = udocker(*extra, "pull", f"{lan_registry}/{REPOSITORY}:{TAG}",
                       env={"UDOCKER_INSECURE_REGISTRIES": "10.255.255.254:5000,127.0.0.1"})
        assert _one_error(done).startswith(f"error: tls handshake failed for registry {lan_registry}: "), done.stderr
        assert done.stderr.splitlines()[-1] == (f"hint: if {lan_registry} is a plain-HTTP registry, name it: "
                                                f"--registry=http://{lan_registry}, or list it in the config key "
                                                "insecure_registries")
        assert done.returncode == 1


def test_a_plain_http_registry_named_by_url(udocker, lan_registry):
    ref = f"{lan_registry}/{REPOSITORY}:{TAG}"
    done = udocker("pull", f"--registry=http://{lan_registry}", ref)
    assert done.returncode == 0, done.stderr
    done = udocker("pull", f"--registry=http://{lan_registry}", f"{REPOSITORY}:{TAG}")  # as udocker 1.3 does
    assert done.returncode == 0, done.stderr
    done = udocker("search", f"--registry=http://{lan_registry}", "tests/")
    assert done.returncode == 0 and f"{lan_registry}/{REPOSITORY}" in done.stdout, done.stderr
    done = udocker("login", "-u", "someone", "-p", "anything", f"--registry=http://{lan_registry}")
    assert done.returncode == 0, done.stderr  # the registry has no authentication: /v2/ answers 200
    assert udocker("manifest", "inspect", ref).returncode == 1  # naming it once is not a setting


@pytest.mark.parametrize("how", ["variable", "host", "cidr"])
def test_a_plain_http_registry_listed_in_insecure_registries(udocker, lan_registry, tmp_path, how):
    address = lan_registry.rsplit(":", 1)[0]
    entry = {"variable": lan_registry, "host": address, "cidr": f"{address}/32"}[how]
    env = {}
    if how == "variable":
        env["UDOCKER_INSECURE_REGISTRIES"] = f"other.invalid:1, {entry}"
    else:
        config = tmp_path / "udocker.conf"
        config.write_text(json.dumps({"insecure_registries": ["other.invalid", entry]}))
        env["UDOCKER_DIR"] = str(tmp_path / "ignored")
    args = [] if how == "variable" else ["--config", str(tmp_path / "udocker.conf")]
    done = udocker(*args, "pull", f"{lan_registry}/{REPOSITORY}:{TAG}", env=env)
    assert done.returncode == 0, done.stderr
    done = udocker(*args, "manifest", "inspect", f"{lan_registry}/{REPOSITORY}:{TAG}", env=env)
    assert done.returncode == 0, done.stderr
