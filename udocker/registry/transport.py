"""How the registry client reaches a URL: plain HTTP or TLS, whether TLS is verified, and through which proxy.

Schemes: HTTPS everywhere, except that plain HTTP is tried first (and TLS taken up when the server answers it
is a TLS server, see `serves_tls`) for loopback registries (as Docker does), for registries the user named with
an http:// URL (`--registry=http://HOST:PORT`, as udocker 1.3 allows) and for those in `insecure_registries`
(Docker's daemon.json list: host[:port] or a CIDR), whose TLS is not verified either. Any other host is reached
over verified TLS only; a plain-HTTP one is refused with a hint naming both ways to allow it.

Proxies: config `http_proxy` (`--httpproxy=URL`, udocker 1.3's option) wins; else the environment as curl and
requests read it: `https_proxy` for https URLs, `http_proxy` for http ones, then `all_proxy` (lower case
before upper case). `no_proxy` (`*`, host suffixes, host:port, IP addresses and CIDRs) names the hosts reached
directly, whichever way the proxy was set. Schemes: http, https, socks4, socks4a, socks5, socks5h (the
"a"/"h" forms resolve names on the proxy); SOCKS needs PySocks, a dependency of udocker. Every request of the
client (manifests, blobs, tokens, redirects to other hosts) asks `proxy_for` its URL.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping

from udocker import log
from udocker.config import PROXY_SCHEMES, proxy_problem
from udocker.errors import ConfigError
from udocker.reference import is_loopback

LOG = log.get("registry")
_ENV = {"https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
        "http": ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")}


def split_host(netloc: str) -> tuple:
    """(host in lower case without brackets, port or None) of host[:port], [v6][:port] or user@host."""
    netloc = netloc.rpartition("@")[2].lower()
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    host, sep, port = netloc.rpartition(":") if netloc.count(":") == 1 else (netloc, "", "")
    return host, int(port) if sep and port.isdigit() else None


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _in_network(address, entry: str) -> bool:
    """Whether IP `address` (None: a name) is in the CIDR `entry`; False for a CIDR that is not one."""
    if address is None:
        return False
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def no_proxy_matches(entries: str, netloc: str) -> bool:
    """Whether `netloc` is one of the `no_proxy` entries (comma or space separated): `*`, a domain (with or
    without a leading dot: itself and its subdomains), host:port, an IP address or a CIDR."""
    host, port = split_host(netloc)
    address = _address(host)
    for entry in re.split(r"[,\s]+", entries.strip().lower()):
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry and address is not None:
            if _in_network(address, entry):
                return True
            continue
        name, want_port = split_host(entry)
        if want_port is not None and want_port != port:
            continue
        name = name.lstrip(".")
        if host == name or (address is None and host.endswith("." + name)):
            return True
    return False


def shown(proxy: str) -> str:
    """A proxy URL without its credentials, for messages."""
    parts = urllib.parse.urlsplit(proxy)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _normalised(proxy: str) -> str:
    return proxy if "://" in proxy else "http://" + proxy  # curl and requests read host:port as http


class Transport:
    """The decisions above for one client. `config` is udocker's configuration; `plain_http` more hosts named
    with an http:// URL (login's or search's --registry); `environ` the environment proxies are read from."""

    def __init__(self, config, environ: Mapping, *, plain_http: tuple = ()):
        self.config = config
        self.environ = environ
        self.explicit = _normalised(config["http_proxy"]) if config["http_proxy"] else None
        self.insecure = [entry.lower() for entry in config["insecure_registries"] or []]
        named = urllib.parse.urlsplit(config["registry"])
        self.plain_named = {host.lower() for host in plain_http}
        if named.scheme == "http":
            self.plain_named.add(named.netloc.lower())
        self.tls_found: set = set()  # plain-first hosts found to serve TLS (see serves_tls)

    # -- schemes and TLS -------------------------------------------------------------------------------
    def is_insecure(self, netloc: str) -> bool:
        """Whether `netloc` is in insecure_registries: an exact host:port, a host (any port) or a CIDR."""
        host, _ = split_host(netloc)
        address = _address(host)
        for entry in self.insecure:
            if entry == netloc.lower() or ("/" not in entry and ":" not in entry.strip("[]") and entry == host):
                return True
            if "/" in entry and _in_network(address, entry):
                return True
        return False

    def plain_first(self, netloc: str) -> bool:
        netloc = netloc.lower()
        return is_loopback(netloc) or netloc in self.plain_named or self.is_insecure(netloc)

    def base(self, domain: str) -> str:
        """The base URL of a registry named by host[:port] (not Docker Hub's: the client knows that one)."""
        return ("http://" if self.plain_first(domain) and domain.lower() not in self.tls_found else "https://") + domain

    def upgrade(self, url: str) -> str:
        """http:// -> https:// for a plain-first host found to serve TLS."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "http" and parts.netloc.lower() in self.tls_found:
            return urllib.parse.urlunsplit(("https",) + tuple(parts[1:]))
        return url

    def serves_tls(self, url: str, status: int, body: bytes) -> bool:
        """A TLS server answers a plain request with 400 'Client sent an HTTP request to an HTTPS server' (Go's
        wording; nginx says 'plain HTTP request was sent to HTTPS port'): remember a plain-first host that does."""
        parts = urllib.parse.urlsplit(url)
        if status != 400 or parts.scheme != "http" or not self.plain_first(parts.netloc):
            return False
        if "https" not in body[:1024].decode("latin-1").lower():
            return False
        LOG.debug("registry %s answered a plain HTTP request with 400: using https", parts.netloc)
        self.tls_found.add(parts.netloc.lower())
        return True

    def verify(self, url: str):
        """requests' `verify` for `url`: False with --insecure and for insecure_registries, else the CA bundle."""
        if self.config["insecure"] or self.is_insecure(urllib.parse.urlsplit(url).netloc):
            return False
        return self.config["ca_file"] or True

    @staticmethod
    def plain_http_hint(netloc: str) -> str:
        return (f"if {netloc} is a plain-HTTP registry, name it: --registry=http://{netloc}, or list it in the "
                "config key insecure_registries")

    # -- proxies ---------------------------------------------------------------------------------------
    def proxy_for(self, url: str) -> str | None:
        """The proxy URL `url` goes through, or None for a direct connection. Raises ConfigError for a proxy
        variable that is not a proxy URL."""
        parts = urllib.parse.urlsplit(url)
        no_proxy = self.environ.get("no_proxy") or self.environ.get("NO_PROXY") or ""
        if no_proxy and no_proxy_matches(no_proxy, parts.netloc):
            return None
        if self.explicit:
            return self.explicit
        for name in _ENV.get(parts.scheme, ()):
            value = (self.environ.get(name) or "").strip()
            if value:
                problem = proxy_problem(_normalised(value))
                if problem:
                    raise ConfigError(f"invalid proxy in environment variable {name}: {problem}",
                                      hint="use " + ", ".join(f"{s}://" for s in PROXY_SCHEMES) + "HOST:PORT")
                return _normalised(value)
        return None

    def proxies(self, url: str) -> dict:
        """requests' `proxies` for `url`: this module's choice, never requests' own reading of the environment
        (a request's None keeps it from filling in a variable this module decided against)."""
        proxy = self.proxy_for(url)
        return {"http": proxy, "https": proxy, "all": proxy}
