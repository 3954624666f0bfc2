"""The registry transport's decisions: which proxy a URL goes through (option, environment, no_proxy), which
registries are reached over plain HTTP, and where TLS is verified; and the configuration keys behind them."""

import pytest

from udocker.config import Config
from udocker.errors import ConfigError
from udocker.registry.transport import Transport, no_proxy_matches, shown, split_host


def _config(tmp_path, **cli):
    return Config.load(cli={"topdir": str(tmp_path), **cli}, environ={}, system_file="/nonexistent")


def _transport(tmp_path, environ=None, *, plain_http=(), **cli):
    return Transport(_config(tmp_path, **cli), environ or {}, plain_http=plain_http)


@pytest.mark.parametrize("entries, netloc, expected", [
    ("*", "anything:1", True),
    ("example.org", "example.org:443", True),
    ("example.org", "reg.example.org", True),
    (".example.org", "reg.example.org:5000", True),
    (".example.org", "example.org", True),
    ("example.org", "badexample.org", False),
    ("example.org:5000", "example.org:5000", True),
    ("example.org:5000", "example.org:443", False),
    ("10.0.0.0/8, 192.168.1.1", "10.1.2.3:5000", True),
    ("10.0.0.0/8 192.168.1.1", "192.168.1.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("127.0.0.1", "127.0.0.1:5000", True),
    (".0.0.1", "127.0.0.1:5000", False),
    ("::1", "[::1]:5000", True),
    ("fd00::/8", "[fd00::2]:5000", True),
    ("localhost,,", "LOCALHOST:5000", True),
    ("", "example.org", False),
])
def test_no_proxy_entries(entries, netloc, expected):
    assert no_proxy_matches(entries, netloc) is expected


def test_split_host_and_shown():
    assert split_host("user:pw@Example.ORG:3128") == ("example.org", 3128)
    assert split_host("[fd00::2]:5000") == ("fd00::2", 5000)
    assert split_host("fd00::2") == ("fd00::2", None)
    assert shown("socks5h://user:secret@proxy:1080") == "socks5h://proxy:1080"


def test_the_scheme_of_the_url_chooses_the_variable_lower_case_first(tmp_path):
    environ = {"https_proxy": "http://s:1", "HTTPS_PROXY": "http://S:2", "HTTP_PROXY": "socks5://h:3",
               "ALL_PROXY": "socks5h://a:4"}
    transport = _transport(tmp_path, environ)
    assert transport.proxy_for("https://reg.example.org/v2/") == "http://s:1"
    assert transport.proxy_for("http://reg.example.org/v2/") == "socks5://h:3"
    del environ["https_proxy"], environ["HTTPS_PROXY"]
    assert transport.proxy_for("https://reg.example.org/v2/") == "socks5h://a:4"
    assert transport.proxies("https://x/")["https"] == "socks5h://a:4"


def test_the_option_wins_but_no_proxy_still_applies(tmp_path):
    environ = {"https_proxy": "http://env:1", "no_proxy": "internal.example.org"}
    transport = _transport(tmp_path, environ, http_proxy="socks5h://opt:1080")
    assert transport.proxy_for("https://registry-1.docker.io/v2/") == "socks5h://opt:1080"
    assert transport.proxy_for("http://127.0.0.1:5000/v2/") == "socks5h://opt:1080"  # loopback too
    assert transport.proxy_for("https://reg.internal.example.org/v2/") is None
    # None for every scheme: requests must not fill in the environment's proxy itself
    assert transport.proxies("https://reg.internal.example.org/") == {"http": None, "https": None, "all": None}


def test_host_port_without_a_scheme_is_an_http_proxy(tmp_path):
    assert _transport(tmp_path, {"https_proxy": "proxy.example.org:3128"}).proxy_for("https://r/") == \
        "http://proxy.example.org:3128"
    assert _transport(tmp_path, http_proxy="proxy:3128").proxy_for("https://r/") == "http://proxy:3128"


def test_a_bad_variable_is_named(tmp_path):
    transport = _transport(tmp_path, {"http_proxy": "ftp://proxy:21"})
    with pytest.raises(ConfigError, match="invalid proxy in environment variable http_proxy: not an http"):
        transport.proxy_for("http://127.0.0.1:5000/v2/")
    assert _transport(tmp_path, {"http_proxy": ""}).proxy_for("http://r/") is None  # empty: unset


@pytest.mark.parametrize("value", ["ftp://p:1", "socks5://", "http://p:0", "http://p:70000", "http://p:1/x",
                                   "http://p:1?q", "http ://p:1"])
def test_bad_proxy_settings(tmp_path, value):
    with pytest.raises(ConfigError, match="config key 'http_proxy' in command line must be a proxy URL"):
        _config(tmp_path, http_proxy=value)
    with pytest.raises(ConfigError, match="in environment variable UDOCKER_HTTP_PROXY must be a proxy URL"):
        Config.load(cli={"topdir": str(tmp_path)}, environ={"UDOCKER_HTTP_PROXY": value},
                    system_file="/nonexistent")


@pytest.mark.parametrize("value", ["http://p:3128", "https://u:p@p:443", "socks4://p:1080", "socks4a://p:1080",
                                   "socks5://p:1080", "SOCKS5H://p:1080", "p:3128", ""])
def test_good_proxy_settings(tmp_path, value):
    assert _config(tmp_path, http_proxy=value)["http_proxy"] == value


def test_insecure_registries_from_file_and_environment(tmp_path):
    (tmp_path / "udocker.conf").write_text("insecure_registries: [reg.lan:5000, 10.0.0.0/8]\n")
    config = Config.load(cli={"topdir": str(tmp_path)}, environ={}, system_file="/nonexistent")
    assert config["insecure_registries"] == ["reg.lan:5000", "10.0.0.0/8"]
    config = Config.load(cli={"topdir": str(tmp_path)}, system_file="/nonexistent",
                         environ={"UDOCKER_INSECURE_REGISTRIES": "a:1, b ,c"})
    assert config["insecure_registries"] == ["a:1", "b", "c"]
    for bad in ("insecure_registries: reg.lan\n", "insecure_registries: [http://reg.lan]\n"):
        (tmp_path / "udocker.conf").write_text(bad)
        with pytest.raises(ConfigError, match="'insecure_registries' .* must be a list of host"):
            Config.load(cli={"topdir": str(tmp_path)}, environ={}, system_file="/nonexistent")


def test_which_registries_are_reached_over_plain_http(tmp_path):
    (tmp_path / "udocker.conf").write_text("insecure_registries: [reg.lan:5000, bare.lan, 10.0.0.0/8]\n")
    transport = Transport(Config.load(cli={"topdir": str(tmp_path)}, environ={}, system_file="/nonexistent"), {},
                          plain_http=("named.lan:80",))
    assert transport.base("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert transport.base("localhost") == "http://localhost"
    assert transport.base("reg.lan:5000") == "http://reg.lan:5000"
    assert transport.base("reg.lan:5001") == "https://reg.lan:5001"
    assert transport.base("bare.lan:1234") == "http://bare.lan:1234"
    assert transport.base("10.1.2.3:5000") == "http://10.1.2.3:5000"
    assert transport.base("11.1.2.3:5000") == "https://11.1.2.3:5000"
    assert transport.base("named.lan:80") == "http://named.lan:80"
    assert transport.base("ghcr.io") == "https://ghcr.io"
    # TLS verification: off only for insecure registries (and --insecure), on for a named http:// registry
    assert transport.verify("https://reg.lan:5000/v2/") is False
    assert transport.verify("https://named.lan:80/v2/") is True
    assert transport.verify("https://ghcr.io/v2/") is True


def test_a_plain_first_registry_found_to_serve_tls_is_upgraded(tmp_path):
    transport = _transport(tmp_path, registry="http://reg.lan:5000")
    assert transport.base("reg.lan:5000") == "http://reg.lan:5000"
    assert not transport.serves_tls("http://reg.lan:5000/v2/", 404, b"https")
    assert not transport.serves_tls("http://other.lan:5000/v2/", 400, b"Client sent an HTTP request to an HTTPS")
    assert transport.serves_tls("http://reg.lan:5000/v2/", 400, b"Client sent an HTTP request to an HTTPS server.")
    assert transport.base("reg.lan:5000") == "https://reg.lan:5000"
    assert transport.upgrade("http://reg.lan:5000/v2/x?y") == "https://reg.lan:5000/v2/x?y"
