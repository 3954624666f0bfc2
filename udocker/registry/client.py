"""The registry client: one Wire (registry/wire.py: http.client, or requests through a proxy) speaking the OCI
distribution spec's pull side.

Every request goes through `_send`, which adds the cached Authorization header, answers one 401 with the
auth module, follows redirects itself (the registry's Authorization header is never sent to another host,
e.g. a blob storage CDN), retries network errors, 429 and 5xx with exponential backoff, and turns the
final answer into an UdockerError. Which scheme, TLS verification and proxy each URL gets is the
transport's decision (registry/transport.py). Timeouts are a connect timeout and a stall timeout (no byte for
`stall_timeout` seconds); there is no total timeout, so large blobs are never cut for being large.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from collections.abc import Callable

from udocker import __version__, fastjson, log
from udocker.errors import AuthError, DigestMismatch, NotFound, RegistryError
from udocker.oci import digest as digests
from udocker.oci import mediatypes
from udocker.oci.descriptor import Descriptor
from udocker.paths import Layout
from udocker.record import Record
from udocker.reference import DOCKER_HUB, Reference
from udocker.registry.auth import Authenticator
from udocker.registry.credentials import CredentialStore, registry_host
from udocker.registry.transport import Transport, shown
from udocker.registry.wire import InvalidURL, NetError, TLSError, Wire, transient
from udocker.transfer import NetProgress

LOG = log.get("registry")
CHUNK = 1 << 16  # bytes read but not yet a whole chunk are lost when a transfer is cut; keep it small
MANIFEST_MAX = 4 << 20  # the distribution spec lets registries refuse manifests over 4 MiB; so do we
REDIRECTS_MAX = 10
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
_REDIRECTS = (301, 302, 303, 307, 308)


class ManifestResponse(Record):
    """A manifest or index as the registry sent it (data, media_type, digest); `digest` is sha256 of `data`
    (checked against the Docker-Content-Digest header when the registry sends one)."""

    __slots__ = FIELDS = ("data", "media_type", "digest")


class _Target(Record):
    """Where to send a request: `base` URL, the host whose credentials apply (cred_host), and whether it is a
    mirror (default False)."""

    __slots__ = FIELDS = ("base", "cred_host", "mirror")
    DEFAULTS = (False,)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base).netloc


def _reason(exc: BaseException) -> str:
    """One lower-case line out of a requests/urllib3 exception chain: 'connection refused'."""
    text = str(exc)
    found = (re.search(r"\[SSL: [A-Z_]+\] ([^(\]]+?)\s*\(_ssl", text) or re.search(r"\[Errno -?\d+\] ([^)'\"]+)", text)
             or re.search(r"(Tunnel connection failed: [^'\"]+)", text))
    if found:
        return found.group(1).strip().lower()
    found = re.search(r"connection: (0x[0-9a-fA-F]{2}: [^'\")]+)", text)  # a SOCKS proxy's refusal
    if found:
        return f"the proxy refused the connection ({found.group(1).strip().lower()})"
    if getattr(exc, "timeout", False) or "Timeout" in type(exc).__name__ or "timed out" in text:
        return "timed out"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed by the server"
    return text.splitlines()[0][:200].lower() if text else type(exc).__name__


def _oci_error(response) -> tuple:
    """(code, message) from an OCI error body ({"errors": [{"code", "message"}]}), else (None, None)."""
    try:
        errors = response.json().get("errors")
        first = errors[0]
        return first.get("code"), first.get("message")
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return None, None


def _retry_after(response, attempt: int) -> float:
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt)
    header = response.headers.get("Retry-After", "") if response is not None else ""
    return min(BACKOFF_MAX, float(header)) if header.isdigit() else delay


class RegistryClient:
    """Pulls manifests and blobs, lists tags and repositories, checks logins. Thread-safe for concurrent
    fetch_blob calls. Raises AuthError (401/403), NotFound (404), RegistryError (anything else)."""

    def __init__(self, config, layout: Layout, *, credentials: CredentialStore | None = None,
                 plain_http: tuple = (), environ=None):
        self.config = config
        # plain_http: hosts the user named with an http:// URL; environ: where proxy variables are read
        self.transport = Transport(config, os.environ if environ is None else environ, plain_http=plain_http)
        self.credentials = credentials or CredentialStore(layout)
        self.wire = Wire(f"udocker/{__version__}", quiet_insecure=bool(config["insecure"]))
        self.timeout = (config["connect_timeout"] or None, config["stall_timeout"] or None)
        self._login: dict = {}  # host -> credentials being checked by check_login
        self.auth = Authenticator(self._credentials_for, self._fetch_token)

    def close(self) -> None:
        self.wire.close()

    # -- endpoints -------------------------------------------------------------------------------------
    def endpoint(self, ref: Reference) -> str:
        """Base URL of the registry of `ref` (no mirrors): docker.io -> config 'registry', loopback -> http."""
        return self._base(ref.domain)

    def _base(self, domain: str) -> str:
        named = self.config["registry"].rstrip("/")
        if domain == DOCKER_HUB or domain.lower() == urllib.parse.urlsplit(named).netloc.lower():
            return named  # --registry=http://HOST:PORT also serves images named HOST:PORT/...
        return self.transport.base(domain)

    def _targets(self, domain: str, *, mirrors: bool) -> list:
        found = [_Target(url.rstrip("/"), registry_host(url), True)
                 for url in (self.config["mirrors"] or {}).get(domain, [])] if mirrors else []
        return found + [_Target(self._base(domain), domain)]

    def _credentials_for(self, host: str) -> tuple | None:
        return self._login.get(host) or self.credentials.get(host)

    # -- public API ------------------------------------------------------------------------------------
    def get_manifest(self, ref: Reference, *, accept: str = mediatypes.ACCEPT) -> ManifestResponse:
        """Fetch the manifest or index `ref` names (its digest when pinned, else its tag); when pinned, the
        content must hash to the digest (DigestMismatch)."""
        path = f"/v2/{ref.path}/manifests/{ref.manifest_ref}"
        response = self._on_targets(ref, "GET", path, what=("manifest", str(ref)), headers={"Accept": accept},
                                    stream=True)
        with response:
            data = self._read_limited(response, str(ref))
        digest = digests.of(data)
        sent = response.headers.get("Docker-Content-Digest", "")
        if sent.startswith("sha256:") and sent != digest:
            raise DigestMismatch(f"digest mismatch for manifest {ref}: registry says {sent}, content is {digest}")
        if ref.digest and ref.digest != digest:
            raise DigestMismatch(f"digest mismatch for manifest {ref}: got {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
            media_type = self._embedded_media_type(data) or media_type
        return ManifestResponse(data, media_type, digest)

    def get_manifest_by_digest(self, ref: Reference, digest: str, *,
                               accept: str = mediatypes.ACCEPT) -> ManifestResponse:
        """Fetch the manifest `digest` from the repository of `ref` (e.g. a platform's, chosen from an index)."""
        return self.get_manifest(ref.with_tag(None, digest), accept=accept)

    def fetch_blob(self, ref: Reference, descriptor: Descriptor, sink,
                   *, progress: Callable[[int], None] | None = None) -> None:
        """Stream the blob into `sink.write()`, resuming from `sink.offset` with a Range request after a cut
        or stall (restarting with `sink.reset()` when the registry answers a range with the whole blob).
        Does not check the digest (the sink does). Raises RegistryError after `retries`."""
        path = f"/v2/{ref.path}/blobs/{descriptor.digest}"
        what = ("blob", f"{descriptor.digest} in {ref.name}")
        targets = self._targets(ref.domain, mirrors=True)
        for target in targets:
            try:
                return self._fetch_blob_from(target, ref, path, what, sink, progress)
            except (RegistryError, NotFound) as exc:
                if not target.mirror:
                    raise
                LOG.warning("mirror %s failed for blob %s: %s", target.host, descriptor.short_id, exc.message)
        return None

    def tags(self, ref: Reference) -> list:
        """Every tag of the repository of `ref` (following Link pagination)."""
        target = self._targets(ref.domain, mirrors=False)[0]
        return [t for page in self._pages(target, f"/v2/{ref.path}/tags/list", scope=self._scope(ref),
                                          what=("repository", ref.name)) for t in (page.get("tags") or [])]

    def catalog(self, domain: str) -> list:
        """Every repository name the registry at `domain` lists in /v2/_catalog (following pagination)."""
        target = self._targets(domain, mirrors=False)[0]
        return [r for page in self._pages(target, "/v2/_catalog?n=1000", scope="registry:catalog:*",
                                          what=("catalog", domain)) for r in (page.get("repositories") or [])]

    def search_hub(self, term: str, *, page: int = 1, page_size: int = 25) -> tuple:
        """One page of Docker Hub's repository search at config 'index': ([{name, description, stars,
        official}], more pages follow). Uses /v2/search/repositories, or /v1/search where that is missing."""
        index = self.config["index"].rstrip("/")
        target = _Target(index, registry_host(index))
        query = urllib.parse.urlencode({"query": term, "page": page, "page_size": page_size})
        try:
            with self._send(target, "GET", f"/v2/search/repositories?{query}", scope=None,
                            what=("search", index)) as response:
                body = response.json()
            rows = [{"name": r.get("repo_name"), "description": r.get("short_description"),
                     "stars": r.get("star_count", 0), "official": bool(r.get("is_official"))}
                    for r in body.get("results") or []]
            return rows, bool(body.get("next"))
        except NotFound:
            pass
        except (ValueError, AttributeError):
            raise RegistryError(f"malformed search results from {target.host}") from None
        query = urllib.parse.urlencode({"q": term, "page": page, "n": page_size})
        with self._send(target, "GET", f"/v1/search?{query}", scope=None, what=("search", index)) as response:
            try:
                body = response.json()
                rows = [{"name": r.get("name"), "description": r.get("description"),
                         "stars": r.get("star_count", 0), "official": bool(r.get("is_official"))}
                        for r in body.get("results") or []]
            except (ValueError, AttributeError):
                raise RegistryError(f"malformed search results from {target.host}") from None
        return rows, int(body.get("page") or page) < int(body.get("num_pages") or 0)

    def check_login(self, domain: str, *, username: str | None = None, password: str | None = None) -> None:
        """GET /v2/ at `domain` with the given (else the stored) credentials; raises AuthError
        'login failed for HOST: ...' when they are refused."""
        target = self._targets(domain, mirrors=False)[0]
        if username is not None:
            self._login[domain] = (username, password or "")
        self.auth.forget(target.host)  # headers cached for other credentials must not answer for these
        try:
            self._send(target, "GET", "/v2/", scope=None, what=("registry", domain), login=True).close()
        except AuthError as exc:
            raise AuthError(f"login failed for {domain}: {exc.message}", hint="check the username and password",
                            status=exc.status, code=exc.code) from None
        finally:
            self._login.pop(domain, None)
            self.auth.forget(target.host)

    # -- manifests -------------------------------------------------------------------------------------
    @staticmethod
    def _read_limited(response, what: str) -> bytes:
        data = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                data += chunk
                if len(data) > MANIFEST_MAX:
                    raise RegistryError(f"manifest {what} is larger than {MANIFEST_MAX} bytes")
        except transient() as exc:
            raise RegistryError(f"download of manifest {what} failed: {_reason(exc)}") from None
        return bytes(data)

    @staticmethod
    def _embedded_media_type(data: bytes) -> str | None:
        try:
            value = fastjson.loads(data).get("mediaType")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    @staticmethod
    def _scope(ref: Reference) -> str:
        return f"repository:{ref.path}:pull"

    def _on_targets(self, ref: Reference, method: str, path: str, *, what: tuple, **kwargs):
        """_send to the mirrors of ref.domain in order, then to the registry itself."""
        targets = self._targets(ref.domain, mirrors=True)
        for target in targets[:-1]:
            try:
                return self._send(target, method, path, scope=self._scope(ref), what=what, **kwargs)
            except (RegistryError, NotFound) as exc:
                LOG.warning("mirror %s failed for %s: %s", target.host, what[1], exc.message)
        return self._send(targets[-1], method, path, scope=self._scope(ref), what=what, **kwargs)

    # -- blobs -----------------------------------------------------------------------------------------
    def _fetch_blob_from(self, target: _Target, ref: Reference, path: str, what: tuple, sink,
                         progress: Callable[[int], None] | None) -> None:
        net = NetProgress(sink.offset)
        while True:
            start = sink.offset
            # identity: a blob is stored as sent, never decoded on the way (its digest covers the bytes).
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={start}-"} if start else {})}
            with self._send(target, "GET", path, scope=self._scope(ref), what=what, headers=headers,
                            stream=True, ok=(200, 206)) as response:
                if start and response.status_code != 206:
                    # RFC 9110 14.2: a server may ignore Range and send the whole content: start over.
                    LOG.info("registry %s ignored the range request for blob %s; restarting it", target.host,
                             what[1])
                    sink.reset()
                    start = 0
                try:
                    for chunk in response.raw.stream(CHUNK, decode_content=False):
                        sink.write(chunk)
                        if progress:
                            progress(len(chunk))
                    cut = None
                except transient() as exc:
                    cut = _reason(exc)
            if cut is None and sink.offset >= sink.descriptor.size:
                return
            failures = net.record(sink.offset)  # only attempts without net progress count
            if failures > self.config["retries"]:
                raise RegistryError(f"download of blob {what[1]} from {target.host} failed: "
                                    f"{cut or 'the connection closed early'}"
                                    + (f" ({failures} attempts without progress past byte {net.reached})"
                                       if failures > 1 else ""))
            LOG.info("download of blob %s cut at %d bytes (%s); resuming", what[1], sink.offset,
                     cut or "closed early")
            time.sleep(_retry_after(None, failures))

    # -- pages -----------------------------------------------------------------------------------------
    def _pages(self, target: _Target, path: str, *, scope: str, what: tuple):
        """Yield each JSON page of a paginated list, following `Link: <url>; rel="next"`."""
        url = target.base + path
        for _ in range(10000):
            with self._send(target, "GET", "", url=url, scope=scope, what=what) as response:
                try:
                    page = response.json()
                except ValueError:
                    raise RegistryError(f"registry {target.host} sent a malformed {what[0]} list") from None
                yield page if isinstance(page, dict) else {}
                following = response.links.get("next", {}).get("url")
            if not following:
                return
            url = urllib.parse.urljoin(url, following)

    # -- the one request path --------------------------------------------------------------------------
    def _send(self, target: _Target, method: str, path: str, *, scope: str | None, what: tuple,
              headers: dict | None = None, stream: bool = False, ok: tuple = (200,), url: str | None = None,
              login: bool = False):
        """One logical request: auth escalation, redirects, retries. Returns a response whose status is in
        `ok` (the caller closes it); raises the mapped error otherwise. `what` is (noun, name) for messages."""
        url = url or target.base + path
        answered = False
        attempt = 0
        while True:
            sent_auth = self.auth.header(target.host, scope)
            response = self._follow(target, method, url, headers or {}, sent_auth, stream=stream)
            status = response.status_code
            if status == 401 and not answered:
                answered = True
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if self.auth.answer(target.host, scope, challenge, cred_host=target.cred_host):
                    continue
                raise self._auth_required(target, what, login=login)
            if (status == 429 or status >= 500) and attempt < self.config["retries"]:
                delay = _retry_after(response, attempt)
                response.close()
                attempt += 1
                LOG.info("registry %s answered HTTP %d; retrying in %.1f s", target.host, status, delay)
                time.sleep(delay)
                continue
            if status in ok:
                return response
            response.close()
            raise self._error(target, response, what, login=login)

    def _follow(self, target: _Target, method: str, url: str, headers: dict, authorization: str | None,
                *, stream: bool):
        """Send, following redirects by hand: Authorization goes only to the registry's own origin. Each URL
        (a redirect's too) gets its own proxy and TLS verification from the transport."""
        origin = urllib.parse.urlsplit(self.transport.upgrade(target.base))[:2]
        url = self.transport.upgrade(url)
        attempt = 0
        for _ in range(REDIRECTS_MAX + 1):
            sent = dict(headers)
            if authorization and urllib.parse.urlsplit(url)[:2] == origin:
                sent["Authorization"] = authorization
            proxy = self.transport.proxy_for(url)
            try:
                response = self.wire.request(method, url, headers=sent, stream=stream, timeout=self.timeout,
                                             verify=self.transport.verify(url), proxy=proxy)
            except InvalidURL as exc:
                raise self._invalid(url, proxy, exc) from None
            except TLSError as exc:
                raise self._tls_failed(urllib.parse.urlsplit(url).netloc, exc, proxy) from None
            except NetError as exc:
                reason = _reason(exc)
                if attempt >= self.config["retries"] or "name or service not known" in reason:
                    raise self._unreachable("registry", url, proxy, reason) from None
                LOG.info("cannot reach %s (%s); retrying", urllib.parse.urlsplit(url).netloc, reason)
                time.sleep(_retry_after(None, attempt))
                attempt += 1
                continue
            LOG.debug("%s %s -> %d", method, urllib.parse.urlunsplit(urllib.parse.urlsplit(url)[:3] + ("", "")),
                      response.status_code)  # without the query: a CDN's signed URL carries credentials
            if response.status_code == 400 and self.transport.serves_tls(url, 400, response.content):
                response.close()
                origin = urllib.parse.urlsplit(self.transport.upgrade(target.base))[:2]
                url = self.transport.upgrade(url)
                continue
            if response.status_code not in _REDIRECTS or "Location" not in response.headers:
                return response
            url = urllib.parse.urljoin(url, response.headers["Location"])
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                response.close()
                raise RegistryError(f"registry {target.host} redirected to a URL that is not http(s): "
                                    f"{urllib.parse.urlunsplit(urllib.parse.urlsplit(url)[:3] + ('', ''))[:200]}")
            if response.status_code == 303:
                method = "GET"
            response.close()
        raise RegistryError(f"too many redirects from registry {target.host}")

    # -- errors ----------------------------------------------------------------------------------------
    @staticmethod
    def _unreachable(server: str, url: str, proxy: str | None, reason: str) -> RegistryError:
        return RegistryError(f"cannot reach {server} {urllib.parse.urlsplit(url).netloc}"
                             + (f" through proxy {shown(proxy)}" if proxy else "") + f": {reason}")

    @staticmethod
    def _invalid(url: str, proxy: str | None, exc: Exception) -> RegistryError:
        if proxy and "socks" in str(exc).lower():  # requests' "Missing dependencies for SOCKS support."
            return RegistryError(f"cannot use proxy {shown(proxy)}: SOCKS proxies need PySocks",
                                 hint="pip install PySocks (a dependency of udocker)")
        from udocker.config import url_problem

        return RegistryError(f"invalid registry address {url[:120]}: {url_problem(url) or 'it cannot be parsed'}")

    def _tls_failed(self, netloc: str, exc: Exception, proxy: str | None, server: str = "registry"):
        reason = _reason(exc)
        plain = any(word in reason for word in ("wrong version number", "record layer failure", "packet length",
                                                "unknown protocol", "http request"))
        return RegistryError(f"tls {'handshake' if plain else 'verification'} failed for {server} {netloc}"
                             + (f" through proxy {shown(proxy)}" if proxy else "") + f": {reason}",
                             hint=self.transport.plain_http_hint(netloc) if plain else
                             "set ca_file to the registry's CA bundle, or use --insecure")

    def _auth_required(self, target: _Target, what: tuple, *, login: bool) -> AuthError:
        if self.auth.has_credentials(target.cred_host):
            message = "username or password refused" if login else f"access denied to {what[0]} {what[1]}"
            return AuthError(message, hint=None if login else f"check that your account on {target.cred_host} "
                             "may pull it", status=401)
        return AuthError(f"authentication required for {what[0]} {what[1]}",
                         hint=f"run 'udocker login --registry={target.cred_host}'", status=401)

    def _error(self, target: _Target, response, what: tuple, *, login: bool) -> Exception:
        status = response.status_code
        code, message = _oci_error(response)
        detail = message or code or f"HTTP {status}"
        noun, name = what
        if status == 401:
            return self._auth_required(target, what, login=login)
        if status == 403:
            return AuthError(f"access denied to {noun} {name}: {detail}", status=status, code=code)
        if status == 404:
            hint = "check the name or tag" if noun in ("manifest", "repository") else None
            return NotFound(f"{noun} unknown: {name}", hint=hint)
        if status == 429:
            limits = [f"{header.lower()} {response.headers[header]}" for header in
                      ("RateLimit-Limit", "RateLimit-Remaining") if header in response.headers]
            return RegistryError(f"too many requests to registry {target.host}"
                                 + (f" ({', '.join(limits)})" if limits else ""),
                                 hint="wait and try again, or log in for a higher limit", status=status, code=code)
        if status >= 500:
            return RegistryError(f"registry {target.host} failed with HTTP {status} for {noun} {name}"
                                 + (f": {message}" if message else ""), status=status, code=code)
        suffix = "" if detail == f"HTTP {status}" else f" (HTTP {status})"
        return RegistryError(f"registry {target.host} refused {noun} {name}: {detail}{suffix}",
                             status=status, code=code)

    def _fetch_token(self, realm: str, params: dict, headers: dict) -> tuple:
        """GET the token realm, following redirects (Authorization only to the realm's host); returns (status,
        JSON body or None). Used by the Authenticator."""
        url = realm + ("&" if urllib.parse.urlsplit(realm).query else "?") + urllib.parse.urlencode(params)
        host = urllib.parse.urlsplit(realm).hostname
        for _ in range(REDIRECTS_MAX + 1):
            proxy = self.transport.proxy_for(url)
            sent = headers if urllib.parse.urlsplit(url).hostname == host else {}
            try:
                response = self.wire.request("GET", url, headers=sent, stream=False, timeout=self.timeout,
                                             verify=self.transport.verify(url), proxy=proxy)
            except InvalidURL as exc:
                raise self._invalid(url, proxy, exc) from None
            except TLSError as exc:
                raise self._tls_failed(urllib.parse.urlsplit(url).netloc, exc, proxy, "auth server") from None
            except NetError as exc:
                raise self._unreachable("auth server", url, proxy, _reason(exc)) from None
            with response:
                if response.status_code in _REDIRECTS and "Location" in response.headers:
                    url = urllib.parse.urljoin(url, response.headers["Location"])
                    continue
                try:
                    return response.status_code, response.json()
                except ValueError:
                    return response.status_code, None
        raise RegistryError(f"too many redirects from auth server {urllib.parse.urlsplit(realm).netloc}")
