"""Behaviour no real registry shows on demand: redirects to another host, cut or stalled blob transfers,
ranges answered with 200, rate limits. Tiny local HTTP servers stand in for the registry and its CDN."""

import base64
import hashlib
import http.server
import threading
import time

import pytest

from tests.integration.test_registry_client import make_client
from udocker.errors import RegistryError
from udocker.oci.descriptor import Descriptor
from udocker.paths import Layout
from udocker.reference import parse
from udocker.registry.credentials import CredentialStore

BLOB = bytes(range(256)) * 1024
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BASIC = "Basic " + base64.b64encode(b"alice:wonderland").decode()


class Server:
    """An HTTP server on 127.0.0.1 whose `behave(handler)` answers each GET; `seen` holds (path, headers)."""

    def __init__(self, behave):
        self.seen = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.seen.append((self.path, dict(self.headers)))
                behave(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started = []

    def start(behave):
        started.append(Server(behave))
        return started[-1]

    yield start
    for server in started:
        server.close()


def reply(handler, status, body=b"", headers=()):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Sink:
    """Stands in for store.blobs.Sink: collects bytes, counts the offset."""

    def __init__(self):
        self.data = b""
        self.descriptor = Descriptor("application/octet-stream", DIGEST, len(BLOB))

    @property
    def offset(self):
        return len(self.data)

    def write(self, chunk):
        self.data += chunk

    def reset(self):
        self.data = b""


def fetch(tmp_path, port, **config):
    client = make_client(tmp_path, **config)
    sink = Sink()
    client.fetch_blob(parse(f"127.0.0.1:{port}/tests/blob:1"), sink.descriptor, sink)
    return sink


def test_redirect_does_not_leak_authorization(tmp_path, servers):
    cdn = servers(lambda h: reply(h, 200, BLOB))

    def registry(handler):
        if handler.headers.get("Authorization") != BASIC:
            reply(handler, 401, headers=[("WWW-Authenticate", 'Basic realm="test"')])
        else:
            reply(handler, 307, headers=[("Location", f"http://localhost:{cdn.port}/cdn/blob")])

    origin = servers(registry)
    CredentialStore(Layout(str(tmp_path / "repo"))).store(f"127.0.0.1:{origin.port}", "alice", "wonderland")
    assert fetch(tmp_path, origin.port).data == BLOB
    assert origin.seen[-1][1].get("Authorization") == BASIC
    assert [path for path, _ in cdn.seen] == ["/cdn/blob"]
    assert "Authorization" not in cdn.seen[0][1]


def test_cut_transfer_resumes_with_range(tmp_path, servers):
    def cut_then_range(handler):
        wanted = handler.headers.get("Range")
        if wanted is None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(BLOB)))
            handler.end_headers()
            handler.wfile.write(BLOB[:100000])
            handler.close_connection = True
            return
        start = int(wanted.split("=")[1].rstrip("-"))
        reply(handler, 206, BLOB[start:], [("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")])

    server = servers(cut_then_range)
    assert fetch(tmp_path, server.port).data == BLOB
    assert server.seen[1][1]["Range"] in ("bytes=65536-", "bytes=100000-")  # at least whole chunks are kept


def test_stall_resumes_with_range(tmp_path, servers):
    def stall_then_range(handler):
        wanted = handler.headers.get("Range")
        if wanted is None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(BLOB)))
            handler.end_headers()
            handler.wfile.write(BLOB[:100000])
            handler.wfile.flush()
            time.sleep(3)
            handler.close_connection = True
            return
        start = int(wanted.split("=")[1].rstrip("-"))
        reply(handler, 206, BLOB[start:])

    server = servers(stall_then_range)
    began = time.monotonic()
    assert fetch(tmp_path, server.port, stall_timeout=1).data == BLOB
    assert time.monotonic() - began < 3
    assert server.seen[1][1]["Range"] in ("bytes=65536-", "bytes=100000-")


def test_range_answered_with_200_restarts_the_blob(tmp_path, servers):
    def whole_again(handler):
        if handler.headers.get("Range") is None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(BLOB)))
            handler.end_headers()
            handler.wfile.write(BLOB[:100000])
            handler.close_connection = True
        else:
            reply(handler, 200, BLOB)

    server = servers(whole_again)
    assert fetch(tmp_path, server.port).data == BLOB
    assert [seen[1].get("Range") for seen in server.seen] == [None, "bytes=100000-"]


def test_rate_limit_and_server_errors_are_retried(tmp_path, servers):
    answers = [503, 429]

    def flaky(handler):
        if answers:
            reply(handler, answers.pop(0), headers=[("Retry-After", "0")])
        else:
            reply(handler, 200, BLOB)

    server = servers(flaky)
    assert fetch(tmp_path, server.port, retries=2).data == BLOB
    assert len(server.seen) == 3


def test_rate_limit_message(tmp_path, servers):
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"you have reached your pull rate limit"}]}'
    server = servers(lambda h: reply(h, 429, body, [("RateLimit-Limit", "100;w=21600"),
                                                    ("RateLimit-Remaining", "0;w=21600")]))
    with pytest.raises(RegistryError) as caught:
        fetch(tmp_path, server.port, retries=0)
    assert caught.value.message == (f"too many requests to registry 127.0.0.1:{server.port} "
                                    "(ratelimit-limit 100;w=21600, ratelimit-remaining 0;w=21600)")
    assert caught.value.status == 429


def test_hub_search(udocker, servers):
    import json as json_

    body = json_.dumps({"count": 1, "next": None, "results": [
        {"repo_name": "ubuntu", "short_description": "Ubuntu is a Debian-based Linux", "star_count": 17000,
         "is_official": True}]}).encode()
    index = servers(lambda h: reply(h, 200, body, [("Content-Type", "application/json")]))
    done = udocker("search", "ubuntu", env={"UDOCKER_INDEX": f"http://127.0.0.1:{index.port}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NAME    DESCRIPTION                     STARS  OFFICIAL",
                                        "ubuntu  Ubuntu is a Debian-based Linux  17000  [OK]"]
    assert index.seen[0][0] == "/v2/search/repositories?query=ubuntu&page=1&page_size=25"


@pytest.mark.parametrize("body, detail", [(b"", "HTTP 400"),
                                          (b'{"errors": [{"code": "UNSUPPORTED", "message": "no"}]}',
                                           "no (HTTP 400)")])
def test_client_error_names_the_status_once(tmp_path, servers, body, detail):
    server = servers(lambda h: reply(h, 400, body))
    ref = f"127.0.0.1:{server.port}/tests/blob:1"
    with pytest.raises(RegistryError) as caught:
        make_client(tmp_path).get_manifest(parse(ref))
    assert caught.value.message == f"registry 127.0.0.1:{server.port} refused manifest {ref}: {detail}"
    assert len(server.seen) == 1  # a 400 that does not mention https is not taken for a TLS server
