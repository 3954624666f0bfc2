"""udocker install --from URL and engines_url against a web server on 127.0.0.1 that serves the real engine
bundle (engines/build-bundle.sh), well or badly, chosen by the first part of the path:

  /ok/T/NAME          the tarball (Range honoured) and NAME.sha256 beside it
  /nosha/T/NAME       the tarball; NAME.sha256 is 404
  /html/T/NAME        an HTML page with 200 for the tarball and for NAME.sha256
  /htmlbody/T/NAME    an HTML page with 200 for the tarball; NAME.sha256 is the real tarball's
  /cutonce/T/NAME     the first GET of the tarball sends CUT bytes of it and closes; then Range is honoured
  /cutalways/T/NAME   every GET of the tarball sends CUT bytes and closes; Range is ignored
  /busy/T/NAME        503 for the first two GETs of the tarball, then as /ok
  /missing/T/NAME     404 for everything
  /redirect/T/NAME    302 to file:///etc/passwd for everything

T is any tag: each test uses its own, so that per-path counters start at zero and its requests are its own.
"""

import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple

import pytest

from tests.fixtures import engine_bundle
from tests.fixtures.engine_bundle import one_error, tmp_leftovers, trust_flags
from udocker.engines import locate

CUT = 1 << 20  # bytes sent before a cut
HTML = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body>It works!</body></html>\n"
NO_PROXY = {"http_proxy": None, "https_proxy": None, "HTTP_PROXY": None, "HTTPS_PROXY": None,
            "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
POLL = 0.25  # seconds the serving loop waits for a request before it looks at its stop flag again
LIFETIME = 2400  # serving-loop turns at most (requests or POLL-long waits): the server then stops by itself


class BundleServer:
    """ThreadingHTTPServer on 127.0.0.1 serving one tarball; `log` holds (path, Range header) per GET."""

    def __init__(self, body: bytes, digest: str, name: str):
        self.body, self.digest, self.name = body, digest, name
        self.log: List[Tuple[str, Optional[str]]] = []
        self.counts: dict = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.timeout = POLL
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        for _ in range(LIFETIME):
            if self.stop.is_set():
                break
            self.server.handle_request()
        self.server.server_close()

    def __enter__(self) -> "BundleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10 * POLL)

    def url(self, behaviour: str, tag: str) -> str:
        return f"{self.base}/{behaviour}/{tag}/{self.name}"

    def requests(self, behaviour: str, tag: str) -> List[Tuple[str, Optional[str]]]:
        """(file name, Range) of the GETs for this behaviour and tag, in order."""
        prefix = f"/{behaviour}/{tag}/"
        with self.lock:
            return [(path[len(prefix):], rng) for path, rng in self.log if path.startswith(prefix)]

    def _count(self, path: str) -> int:
        """How many GETs of `path` came before this one."""
        with self.lock:
            seen = self.counts.get(path, 0)
            self.counts[path] = seen + 1
            return seen

    def _handler(self):
        served = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                with served.lock:
                    served.log.append((self.path, rng))
                try:
                    self._answer(rng)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _answer(self, rng):
                parts = self.path.split("/")
                behaviour, name = (parts[1], parts[-1]) if len(parts) == 4 else ("", "")
                tarball, checksum = name == served.name, name == served.name + ".sha256"
                if behaviour == "missing" or not (tarball or checksum):
                    return self._send(404, b"not found\n", "text/plain")
                if behaviour == "redirect":
                    return self._send(302, b"", "text/plain", {"Location": "file:///etc/passwd"})
                if behaviour == "html" or (behaviour == "htmlbody" and tarball):
                    return self._send(200, HTML, "text/html")
                if checksum:
                    if behaviour == "nosha":
                        return self._send(404, b"not found\n", "text/plain")
                    return self._send(200, f"{served.digest}  {served.name}\n".encode(), "text/plain")
                seen = served._count(self.path)
                if behaviour == "busy" and seen < 2:
                    return self._send(503, b"busy\n", "text/plain")
                if behaviour == "cutalways" or (behaviour == "cutonce" and seen == 0):
                    return self._cut()
                start = int(rng[len("bytes="):].split("-")[0]) if rng and rng.startswith("bytes=") else 0
                if start:
                    total = len(served.body)
                    return self._send(206, served.body[start:], "application/gzip",
                                      {"Content-Range": f"bytes {start}-{total - 1}/{total}"})
                return self._send(200, served.body, "application/gzip")

            def _send(self, status, body, kind, headers=None):
                self.send_response(status)
                for key, value in dict(headers or {}, **{"Content-Type": kind}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _cut(self):
                """Promise the whole tarball, send CUT bytes, close."""
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                self.wfile.write(served.body[:CUT])
                self.wfile.flush()
                self.close_connection = True

        return Handler


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> engine_bundle.Bundle:
    return engine_bundle.built(tmp_path_factory)


@pytest.fixture(scope="module")
def server(bundle):
    with open(bundle.tarball, "rb") as stream:
        body = stream.read()
    with BundleServer(body, bundle.sha256, bundle.name) as running:
        yield running


@pytest.fixture
def trust(bundle) -> List[str]:
    return trust_flags(bundle.directory)


def _install(udocker, *args, env=None):
    return udocker("install", *args, env=dict(NO_PROXY, **(env or {})))


def _assert_installed(udocker, url: str, digest: str) -> None:
    """The engines came from `url`, pinned by `digest`: installed.json says so, and so does info --json."""
    with open(os.path.join(udocker.repo, "engines", "installed.json"), encoding="utf-8") as stream:
        record = json.load(stream)
    assert (record["origin"], record["from"], record["sha256"]) == ("bundle", url, digest)
    engine_bundle.check_complete(os.path.join(udocker.repo, "engines"))
    info = udocker("info", "--json", env=NO_PROXY)
    assert info.returncode == 0, info.stderr
    engines = {row["name"]: row for row in json.loads(info.stdout)["engines"]}
    for name in ("proot", "runc", "crun", "patchelf"):
        assert engines[name]["origin"] == "bundle", engines[name]
        assert engines[name]["path"] == os.path.join(udocker.repo, "engines", "bin", name)
    assert engines["fakechroot"]["origin"] == "bundle", engines["fakechroot"]
    assert tmp_leftovers(udocker.repo) == []


def _assert_nothing_installed(udocker) -> None:
    assert not os.path.exists(os.path.join(udocker.repo, "engines"))
    assert tmp_leftovers(udocker.repo) == []


def test_url_with_sha256_beside(udocker, server, bundle, trust):
    url = server.url("ok", "plain")
    result = _install(udocker, f"--from={url}", *trust)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("installed ") and f" files into {udocker.repo}/engines: proot " in result.stdout
    _assert_installed(udocker, url, bundle.sha256)
    assert server.requests("ok", "plain") == [(bundle.name + ".sha256", None), (bundle.name, None)]
    again = _install(udocker, f"--from={url}", *trust)  # the same bundle again: nothing to change
    assert again.returncode == 0 and again.stdout.startswith(f"engines already installed in {udocker.repo}/engines")


def test_no_sha256_beside_needs_the_option(udocker, server, bundle, trust):
    url = server.url("nosha", "t")
    result = _install(udocker, f"--from={url}", *trust)
    assert one_error(result) == f"error: no sha256 for {url}: {url}.sha256 answered HTTP 404"
    assert result.stderr.splitlines()[1].startswith("hint: ") and "--sha256" in result.stderr, result.stderr
    assert server.requests("nosha", "t") == [(bundle.name + ".sha256", None)]  # never the tarball
    _assert_nothing_installed(udocker)
    result = _install(udocker, f"--from={url}", f"--sha256={bundle.sha256.upper()}", *trust)
    assert result.returncode == 0, result.stderr
    _assert_installed(udocker, url, bundle.sha256)
    assert server.requests("nosha", "t")[1:] == [(bundle.name, None)]  # --sha256: URL.sha256 not asked


def test_wrong_sha256_option(udocker, server, bundle, trust):
    url, wrong = server.url("ok", "wrong"), "0" * 64
    line = one_error(_install(udocker, f"--from={url}", f"--sha256={wrong}", *trust))
    assert line == f"error: checksum mismatch for {url}: sha256 {bundle.sha256}, expected {wrong}"
    _assert_nothing_installed(udocker)
    line = one_error(udocker("install", f"--from={url}", "--sha256=abc"), status=2)  # asks no server
    assert line == "error: not a sha256 digest: 'abc'"
    assert server.requests("ok", "wrong") == [(bundle.name, None)]


def test_html_page_for_both_is_refused(udocker, server, bundle, trust):
    url = server.url("html", "t")
    line = one_error(_install(udocker, f"--from={url}", *trust))
    assert line == f"error: {url}.sha256 holds no sha256 digest"
    assert server.requests("html", "t") == [(bundle.name + ".sha256", None)]
    _assert_nothing_installed(udocker)


def test_html_page_for_the_tarball_is_a_checksum_mismatch(udocker, server, bundle, trust):
    url = server.url("htmlbody", "t")
    line = one_error(_install(udocker, f"--from={url}", *trust))
    html_digest = hashlib.sha256(HTML).hexdigest()
    assert line == f"error: checksum mismatch for {url}: sha256 {html_digest}, expected {bundle.sha256}"
    _assert_nothing_installed(udocker)


def test_cut_transfer_resumes_with_range(udocker, server, bundle, trust):
    url = server.url("cutonce", "t")
    result = _install(udocker, f"--from={url}", *trust)
    assert result.returncode == 0, result.stderr
    _assert_installed(udocker, url, bundle.sha256)
    seen = server.requests("cutonce", "t")
    assert seen[:2] == [(bundle.name + ".sha256", None), (bundle.name, None)]
    assert len(seen) == 3 and seen[2][0] == bundle.name, seen
    start = int(seen[2][1][len("bytes="):-1])  # the second GET of the tarball asks for the rest only
    assert seen[2][1] == f"bytes={start}-" and 0 < start <= CUT, seen


def test_server_that_always_cuts_ends_the_command(udocker, server, bundle, trust):
    url, retries = server.url("cutalways", "t"), 2
    result = _install(udocker, f"--from={url}", *trust, env={"UDOCKER_RETRIES": str(retries)})
    assert one_error(result).startswith(f"error: cannot download {url}: ")
    tarball = [rng for name, rng in server.requests("cutalways", "t") if name == bundle.name]
    assert 2 <= len(tarball) <= retries + 2, tarball  # the first makes progress; then `retries` more at most
    assert tarball[0] is None and all(rng == f"bytes={CUT}-" for rng in tarball[1:]), tarball
    _assert_nothing_installed(udocker)


def test_503_is_retried(udocker, server, bundle, trust):
    url = server.url("busy", "t")
    result = _install(udocker, f"--from={url}", *trust, env={"UDOCKER_RETRIES": "2"})
    assert result.returncode == 0, result.stderr
    _assert_installed(udocker, url, bundle.sha256)
    assert [name for name, _ in server.requests("busy", "t")] == [bundle.name + ".sha256"] + [bundle.name] * 3


def test_404_fails_at_once(udocker, server, bundle, trust):
    url = server.url("missing", "t")
    env = {"UDOCKER_RETRIES": "3"}
    assert one_error(_install(udocker, f"--from={url}", *trust, env=env)) == \
        f"error: no sha256 for {url}: {url}.sha256 answered HTTP 404"
    assert one_error(_install(udocker, f"--from={url}", f"--sha256={bundle.sha256}", *trust, env=env)) == \
        f"error: cannot download {url}: HTTP 404"
    assert server.requests("missing", "t") == [(bundle.name + ".sha256", None), (bundle.name, None)]
    _assert_nothing_installed(udocker)


def test_redirect_to_a_file_url_is_refused(udocker, server, bundle, trust):
    url = server.url("redirect", "t")
    env = {"UDOCKER_RETRIES": "3"}
    assert one_error(_install(udocker, f"--from={url}", *trust, env=env)) == \
        f"error: {url}.sha256 redirected to a non-http(s) location"
    assert one_error(_install(udocker, f"--from={url}", f"--sha256={bundle.sha256}", *trust, env=env)) == \
        f"error: {url} redirected to a non-http(s) location"
    assert server.requests("redirect", "t") == [(bundle.name + ".sha256", None), (bundle.name, None)]
    _assert_nothing_installed(udocker)


@pytest.mark.parametrize("where", ["--config", "repository"])
def test_engines_url_from_a_config_file(udocker, server, bundle, trust, tmp_path, where):
    url = server.url("ok", f"config-{where}")
    config = tmp_path / "site.conf" if where == "--config" else tmp_path / "repo" / "udocker.conf"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f"engines_url: {url}\n", encoding="utf-8")
    options = ["--config", str(config)] if where == "--config" else []
    result = udocker(*options, "install", *trust, env=NO_PROXY)
    assert result.returncode == 0, result.stderr
    _assert_installed(udocker, url, bundle.sha256)


def test_engines_url_from_the_environment(udocker, server, bundle, trust):
    url = server.url("ok", "environment")
    result = _install(udocker, *trust, env={"UDOCKER_ENGINES_URL": url})
    assert result.returncode == 0, result.stderr
    _assert_installed(udocker, url, bundle.sha256)
    again = _install(udocker, "--json", *trust, env={"UDOCKER_ENGINES_URL": url})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["installed"]["changed"] is False


def test_nothing_to_install_from(udocker):
    if locate.wheel_bundle() is not None:
        pytest.skip(f"a udocker_engines wheel is installed ({locate.wheel_bundle()})")
    result = _install(udocker, env={"UDOCKER_ENGINES_URL": None})
    # as udocker 1.3 (which skips the install), it goes on to report the host's engines; it fails only
    # where no mode can run (tests/functional/test_v13_options.py)
    assert result.stderr.startswith("note: nothing to install "), result.stderr
    assert result.returncode == (0 if " usable" in result.stdout else 1), result.stderr
    _assert_nothing_installed(udocker)


def test_download_progress_line_on_a_terminal_and_none_in_logs(udocker, server, bundle, trust):
    from tests.integration.test_pull_progress import ANSI, _pull_on_a_terminal

    url = server.url("ok", "pty")
    status, stdout, drawn = _pull_on_a_terminal(udocker, "install", f"--from={url}", *trust)
    assert status == 0 and stdout.startswith("installed "), drawn
    text = ANSI.sub("", drawn).replace("\r\n", "\n")
    redraws = [part for part in text.split("\r") if part.startswith(f"downloading {bundle.name}: ")]
    assert len(redraws) >= 2, text  # redrawn in place while it downloads
    done, total = re.match(r"downloading \S+: (\S+)/(\S+)$", redraws[-1].split("\n")[0]).groups()
    assert done == total, redraws[-1]  # the last redraw shows the whole size, and ends the line
    quiet = _install(udocker, f"--from={url}", "--force", *trust)  # stderr is a pipe here: no progress
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
