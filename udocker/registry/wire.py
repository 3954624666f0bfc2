"""How the registry client's requests go on the wire: the standard library's http.client for direct connections,
requests (with urllib3, and PySocks for SOCKS) for anything else.

requests, urllib3, idna, charset_normalizer and certifi cost ~150 ms of imports on every start here, more than
the whole of a cached `pull` (one manifest check against the registry) should take. A direct request (no proxy
for its URL, as the transport decides) needs none of them: `Wire.request` sends it with http.client, with what
requests would have done for the client: the same TLS verification (certifi's bundle, or REQUESTS_CA_BUNDLE /
CURL_CA_BUNDLE, or the config's ca_file; none with --insecure), a connect timeout then a stall timeout, gzip and
deflate bodies decoded for reading (never for `raw.stream`, which blobs use), kept-alive connections reused
(thread-safe, for parallel blob downloads). A request through a proxy (HTTP or SOCKS), or when a ~/.netrc would
have given requests credentials, goes through requests as before.

Both ways answer with an object that has requests.Response's part the client uses (status_code, headers,
iter_content, raw.stream, content, json, links, close, a context manager) and raise one set of errors: ValueError
(InvalidURL) for an address that cannot be used, TLSError for a failed handshake or verification, NetError for a
network failure (`transient()` lists what a body read raises, for either way). Redirects are not followed here.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import sys
import threading
import urllib.parse
import zlib

from udocker import fastjson

_DEFAULT_PORTS = {"http": 80, "https": 443}
_IDLE_MAX = 8  # kept-alive connections per (scheme, host, port, TLS settings)


class NetError(Exception):
    """A network failure (refused, reset, timed out, closed early); `timeout` when it timed out."""

    def __init__(self, message: str, *, timeout: bool = False):
        super().__init__(message)
        self.timeout = timeout


class TLSError(Exception):
    """A TLS handshake or verification failure; the message has OpenSSL's [SSL: ...] reason."""


class InvalidURL(ValueError):
    pass


def transient() -> tuple:
    """The exceptions a response body read may raise on a network failure, whichever way it was sent."""
    if "requests" not in sys.modules:
        return (NetError,)
    import requests
    import urllib3

    return (NetError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError)


def _net_error(exc: BaseException) -> NetError:
    return NetError(f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, TimeoutError))


def _ascii_connection(address: tuple, *args):
    """socket.create_connection with the host name as bytes, which getaddrinfo takes as it is."""
    return socket.create_connection((address[0].encode("ascii"), address[1]), *args)


def _netrc_present(environ) -> bool:
    """Whether requests would read a netrc file (NETRC, ~/.netrc, ~/_netrc) for credentials."""
    if environ.get("NETRC"):
        return True
    home = os.path.expanduser("~")
    return any(os.path.exists(os.path.join(home, name)) for name in (".netrc", "_netrc"))


class _Raw:
    """response.raw: `stream(n, decode_content=False)` yields the body as sent."""

    def __init__(self, owner: LightResponse):
        self._owner = owner

    def stream(self, amount: int, decode_content: bool = False):
        return self._owner.chunks(amount, decode=decode_content)


class LightResponse:
    """An http.client response with requests.Response's surface the client uses."""

    def __init__(self, wire: Wire, key: tuple, conn, response: http.client.HTTPResponse, url: str):
        self._wire, self._key, self._conn, self._response = wire, key, conn, response
        self.url = url
        self.status_code = response.status
        self.headers = response.msg  # case-insensitive get / in / []
        self.raw = _Raw(self)
        self._content: bytes | None = None

    def chunks(self, amount: int, *, decode: bool):
        encoding = self.headers.get("Content-Encoding", "").strip().lower() if decode else ""
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate") else None
        while self._conn is not None:  # a closed response reads as empty
            try:
                data = self._response.read1(amount)
            except (OSError, http.client.HTTPException) as exc:
                self._discard()
                raise _net_error(exc) from None
            if not data:
                if self._response.length:  # Content-Length not reached: the server closed early
                    self._discard()
                    raise NetError("IncompleteRead: the connection closed early")
                break
            if inflate is not None:
                try:
                    data = inflate.decompress(data)
                except zlib.error as exc:
                    raise NetError(f"ContentDecodingError: {exc}") from None
            if data:
                yield data
        tail = inflate.flush() if inflate is not None else b""
        if tail:
            yield tail
        self.close()

    def iter_content(self, amount: int = 1):
        if self._content is not None:
            return iter([self._content] if self._content else [])
        return self.chunks(amount, decode=True)

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.chunks(1 << 16, decode=True))
        return self._content

    def json(self):
        return fastjson.loads(self.content)

    @property
    def links(self) -> dict:
        """The Link header as requests parses it: {rel: {"url": URL, ...}}."""
        found = {}
        for url, params in re.findall(r"<([^>]*)>([^,]*(?:,(?!\s*<)[^,]*)*)", self.headers.get("Link", "")):
            entry = {"url": url}
            for name, value in re.findall(r";\s*([^=;\s]+)\s*=\s*\"?([^\";]*)\"?", params):
                entry[name.lower()] = value
            found[entry.get("rel") or url] = entry
        return found

    def close(self) -> None:
        if self._conn is None:
            return
        done = self._response.isclosed() or self._response.length == 0  # read1 leaves a finished one open
        if done and not self._response.will_close:
            self._response.close()  # its file only (http.client keeps the socket): the connection may send again
            self._wire.release(self._key, self._conn)
            self._conn = None
        else:
            self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LightResponse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Wire:
    """Sends single requests (no redirects followed) for one client. `user_agent` goes on every request."""

    def __init__(self, user_agent: str, environ=None, *, quiet_insecure: bool = False):
        self.user_agent = user_agent
        self.quiet_insecure = quiet_insecure  # --insecure: no urllib3 warning for each unverified request
        self.environ = os.environ if environ is None else environ
        self._netrc = _netrc_present(self.environ)
        self._session = None
        self._idle: dict = {}
        self._contexts: dict = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        if self._session is not None:
            self._session.close()

    def uses_requests(self, proxy: str | None) -> bool:
        return bool(proxy) or self._netrc

    def request(self, method: str, url: str, *, headers: dict, stream: bool, timeout: tuple, verify,
                proxy: str | None):
        """One request to `url`; `verify` as requests takes it (False, True or a CA bundle path); `proxy` the
        transport's choice for `url` (None: direct)."""
        if self.uses_requests(proxy):
            return self._via_requests(method, url, headers, stream, timeout, verify, proxy)
        return self._direct(method, url, headers, stream, timeout, verify)

    # -- http.client ---------------------------------------------------------------------------------
    def _direct(self, method, url, headers, stream, timeout, verify) -> LightResponse:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError as exc:
            raise InvalidURL(f"Failed to parse: {url[:120]} ({exc})") from None
        if scheme not in _DEFAULT_PORTS:
            raise InvalidURL(f"No connection adapters were found for {url[:120]!r}")
        if not parts.hostname:
            raise InvalidURL(f"Invalid URL {url[:120]!r}: No host supplied")
        key = (scheme, parts.hostname, port, verify if scheme == "https" else None)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
                "Connection": "keep-alive", **headers}
        for fresh in (False, True):
            conn = None if fresh else self._take(key)
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect(key, timeout)
                conn.request(method, target, headers=sent)
                response = conn.getresponse()
            except (ssl.SSLError, ssl.CertificateError) as exc:
                if conn is not None:
                    conn.close()
                raise TLSError(f"{type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                if reused:  # a kept-alive connection the server had closed: once more on a new one
                    continue
                raise _net_error(exc) from None
            result = LightResponse(self, key, conn, response, url)
            if method == "HEAD" or not stream:
                _ = result.content  # read now, as requests does without stream=True; frees the connection
            return result
        raise NetError("the connection closed early")  # not reached: the fresh attempt returns or raises

    def _connect(self, key: tuple, timeout: tuple):
        scheme, host, port, verify = key
        connect, stall = timeout
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=connect, context=self._context(verify))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect)
        if host.isascii():  # getaddrinfo encodes a str host with the idna codec (stringprep, unicodedata: ~2 ms)
            conn._create_connection = _ascii_connection
        conn.connect()
        conn.sock.settimeout(stall)
        return conn

    def _take(self, key: tuple):
        with self._lock:
            conns = self._idle.get(key)
            return conns.pop() if conns else None

    def release(self, key: tuple, conn) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < _IDLE_MAX:
                conns.append(conn)
                return
        conn.close()

    def _context(self, verify) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(verify)
        if context is not None:
            return context
        if verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            where = verify if isinstance(verify, str) else self._default_bundle()
            if where and os.path.isdir(where):
                context = ssl.create_default_context(capath=where)
            else:
                context = ssl.create_default_context(cafile=where)
        context.set_alpn_protocols(["http/1.1"])
        with self._lock:
            self._contexts[verify] = context
        return context

    def _default_bundle(self) -> str | None:
        """What requests verifies with by default: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's bundle
        (found without importing certifi), else None: the system's store."""
        named = self.environ.get("REQUESTS_CA_BUNDLE") or self.environ.get("CURL_CA_BUNDLE")
        if named:
            return named
        import importlib.util  # only for TLS

        spec = importlib.util.find_spec("certifi")
        if spec and spec.origin:
            bundle = os.path.join(os.path.dirname(spec.origin), "cacert.pem")
            if os.path.exists(bundle):
                return bundle
        return None

    # -- requests ------------------------------------------------------------------------------------
    def _via_requests(self, method, url, headers, stream, timeout, verify, proxy):
        import requests
        import urllib3

        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = self.user_agent
            if self.quiet_insecure:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        try:
            return self._session.request(method, url, headers=headers, stream=stream, timeout=timeout,
                                         verify=verify, allow_redirects=False,
                                         proxies={"http": proxy, "https": proxy, "all": proxy})
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema, urllib3.exceptions.LocationParseError, ValueError) as exc:
            raise InvalidURL(str(exc)) from None
        except requests.exceptions.SSLError as exc:
            raise TLSError(str(exc)) from None
        except transient() as exc:
            raise NetError(str(exc), timeout=isinstance(exc, requests.exceptions.Timeout)) from None
