"""Download an engine bundle tarball from a site's web server (`udocker install --from URL`, `engines_url`),
pinned by sha256: the digest comes from --sha256 or from URL.sha256 beside the tarball (sha256sum's format)
and is checked before anything is unpacked. A cut transfer resumes with a Range request; `retries` bounds the
attempts that make no progress, so a server that keeps cutting the transfer ends the command."""

import os
import re
import time
from typing import Callable, Optional

from udocker.errors import DigestMismatch, EngineError, UsageError
from udocker.oci.digest import sha256_file
from udocker.transfer import NetProgress

_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16
MAX_BUNDLE = 2 << 30  # bytes: a bundle is ~10 MB; anything near this is not one


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _check_url(url: str) -> None:
    from udocker.config import url_problem

    problem = url_problem(url)  # scheme, host, port: what registries and mirrors are checked for
    if problem or not is_url(url):
        raise UsageError(f"not an http(s) URL: {url}" + (f" ({problem})" if problem and is_url(url) else ""),
                         hint="engines_url and --from take http:// or https:// URLs")


def check_sha256(text: str) -> str:
    value = text.strip().lower()
    if not _HEX.match(value):
        raise UsageError(f"not a sha256 digest: {text!r}", hint="give the 64 hexadecimal digits of sha256sum")
    return value


class _Retry(EngineError):
    """A failure worth another attempt (network error, cut transfer, 408/429/5xx)."""


class Fetcher:
    """One requests session with udocker's TLS, timeout and retry settings."""

    def __init__(self, config):
        import requests

        self.requests = requests
        self.session = requests.Session()
        self.verify = False if config["insecure"] else (config["ca_file"] or True)
        self.timeout = (config["connect_timeout"], config["stall_timeout"])
        self.retries = config["retries"]

    def close(self) -> None:
        self.session.close()

    def _get(self, url: str, headers: Optional[dict] = None):
        try:
            response = self.session.get(url, headers=headers or {}, stream=True, timeout=self.timeout,
                                        verify=self.verify)
        except self.requests.exceptions.InvalidSchema:  # url is http(s): a redirect to file://, ftp://, ...
            raise EngineError(f"{url} redirected to a non-http(s) location") from None
        except self.requests.RequestException as exc:
            raise _Retry(f"cannot download {url}: {_reason(exc)}") from None
        if not response.url.startswith(("http://", "https://")):
            response.close()
            raise EngineError(f"{url} redirected to a non-http(s) location")
        return response

    def pinned_digest(self, url: str) -> str:
        """The sha256 in URL.sha256 (first word of its first line)."""
        response = self._get(url + ".sha256")
        with response:
            if response.status_code != 200:
                raise EngineError(f"no sha256 for {url}: {url}.sha256 answered HTTP {response.status_code}",
                                  hint="publish the .sha256 that build-bundle.sh writes beside it, or pass --sha256")
            text = response.raw.read(4096, decode_content=True).decode("latin-1")
        words = text.split()
        if not words or not _HEX.match(words[0].lower()):
            raise EngineError(f"{url}.sha256 holds no sha256 digest",
                              hint="publish the .sha256 that build-bundle.sh writes beside it, or pass --sha256")
        return words[0].lower()

    def download(self, url: str, path: str, digest: str,
                 progress: Optional[Callable[[int, Optional[int]], None]] = None) -> None:
        """Fetch `url` into `path` (resuming a cut transfer), then check its sha256; a mismatch removes it."""
        net = NetProgress()
        while True:
            try:
                if self._attempt(url, path, progress):
                    break
                error = EngineError(f"cannot download {url}: the transfer stopped making progress")
            except _Retry as exc:
                error = EngineError(exc.message)
            idle = net.record(os.path.getsize(path) if os.path.exists(path) else 0)  # net progress, not restarts
            if idle > self.retries:
                raise error
            time.sleep(min(0.1 * 2 ** idle, 2.0))
        actual = sha256_file(path)
        if actual != digest:
            os.unlink(path)
            raise DigestMismatch(f"checksum mismatch for {url}: sha256 {actual}, expected {digest}",
                                 hint="the server sent something else than the bundle (an error page?)")

    def _attempt(self, url, path, progress) -> bool:
        """One GET (a Range request when part of the file is here); True when the body arrived whole."""
        have = os.path.getsize(path) if os.path.exists(path) else 0
        headers = {"Accept-Encoding": "identity"}  # the bytes as published: the sha256 is of those
        if have:
            headers["Range"] = f"bytes={have}-"
        response = self._get(url, headers)
        with response:
            if response.status_code == 416 and have:
                return True  # nothing left to send: the file is whole (the digest decides)
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise _Retry(f"cannot download {url}: HTTP {response.status_code}")
            if response.status_code not in (200, 206):
                raise EngineError(f"cannot download {url}: HTTP {response.status_code}")
            if response.status_code == 200:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_BUNDLE:
                raise EngineError(f"{url} is {total} bytes: too big for an engine bundle")
            return self._copy(response, path, have, total, progress)

    def _copy(self, response, path, have, total, progress) -> bool:
        with open(path, "r+b" if have else "wb") as out:
            out.seek(have)
            out.truncate()
            try:
                for chunk in response.iter_content(_CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    if have > MAX_BUNDLE:
                        raise EngineError(f"{response.url} sends more than {MAX_BUNDLE} bytes")
                    if progress:
                        progress(have, total)
            except self.requests.RequestException as exc:
                raise _Retry(f"cannot download {response.url}: {_reason(exc)}") from None
        return total is None or have >= total


def _reason(exc: BaseException) -> str:
    text = str(exc.__context__ or exc) if not str(exc) else str(exc)
    for pattern in (r"Connection refused", r"timed out", r"Name or service not known", r"certificate verify failed"):
        if re.search(pattern, text):
            return pattern.lower()
    if type(exc).__name__ in ("ChunkedEncodingError", "ProtocolError", "IncompleteRead"):
        return "the connection was cut"
    return type(exc).__name__


def fetch(config, url: str, directory: str, *, sha256: Optional[str] = None,
          progress: Optional[Callable[[int, Optional[int]], None]] = None) -> tuple:
    """Download the bundle at `url` into `directory`; returns (path, sha256). The caller removes the file."""
    _check_url(url)
    fetcher = Fetcher(config)
    try:
        digest = check_sha256(sha256) if sha256 else fetcher.pinned_digest(url)
        path = os.path.join(directory, "download-" + digest[:16] + ".tar.gz")
        fetcher.download(url, path, digest, progress)
    finally:
        fetcher.close()
    return path, digest
