#!/usr/bin/env python3
"""Start Debian's docker-registry (Docker Distribution) on a free loopback port, for tests and demos.

As a module: `with LocalRegistry(workdir) as reg: reg.url, reg.host`. As a script:
`python3 tests/support/local_registry.py DIR` starts one in the background and prints its host:port.
Not imported by udocker itself.
"""

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRegistry:
    """One registry process. `extra` is merged into its config (e.g. {"auth": {...}, "http": {"tls": ...}});
    `scheme` is "https" when the config enables TLS."""

    def __init__(self, workdir: str, *, extra: Optional[dict[str, Any]] = None, scheme: str = "http"):
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = scheme
        self.url = f"{scheme}://{self.host}"
        self.extra = extra or {}
        self.process: Optional[subprocess.Popen] = None

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.workdir, "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "udocker-tests"},
        }
        for key, value in self.extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def start(self, timeout: float = 20) -> "LocalRegistry":
        os.makedirs(self.workdir, exist_ok=True)
        path = os.path.join(self.workdir, "config.yml")
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(self.config(), stream)  # JSON is YAML
        log = open(os.path.join(self.workdir, "registry.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen([BINARY, "serve", path], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited; see {self.workdir}/registry.log")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _openssl(workdir: str, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_tls(workdir: str) -> dict[str, str]:
    """A test CA and a server certificate for 127.0.0.1 (IP SAN) and localhost signed by it.

    Returns the paths {"ca": ..., "cert": ..., "key": ...}."""
    os.makedirs(workdir, exist_ok=True)
    _openssl(workdir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "3", "-subj", "/CN=udocker test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(workdir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1")
    with open(os.path.join(workdir, "server.ext"), "w", encoding="utf-8") as stream:
        stream.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                     "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                     "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl(workdir, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "server.ext")
    return {name: os.path.join(workdir, file) for name, file in
            (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))}


def tls_registry(workdir: str, tls: dict[str, str]) -> LocalRegistry:
    """A registry serving HTTPS with the certificate from make_tls()."""
    return LocalRegistry(workdir, scheme="https",
                         extra={"http": {"tls": {"certificate": tls["cert"], "key": tls["key"]}}})


def htpasswd_registry(workdir: str, users: dict[str, str]) -> LocalRegistry:
    """A registry that asks for HTTP Basic credentials checked against a bcrypt htpasswd file."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "htpasswd")
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
                                         text=True).stdout.strip() + "\n" for user, password in users.items())
    return LocalRegistry(workdir, extra={"auth": {"htpasswd": {"realm": "udocker-tests", "path": path}}})


def token_registry(workdir: str, server: "TokenServer") -> LocalRegistry:
    """A registry that delegates authentication to `server` (Docker token authentication)."""
    return LocalRegistry(workdir, extra={"auth": {"token": server.registry_auth()}})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token server (distribution's token authentication spec) in a thread.

    Users in `users` get every action they ask for; anonymous clients get `pull` on the repositories in
    `public` and nothing else. Tokens are RS256 JWTs signed with the `openssl` CLI; the header carries the
    signing certificate as an `x5c` chain, which docker-registry 2.8 checks against its rootcertbundle.
    `requests` records (path, query, user) of every request, for tests that count token fetches.
    """

    def __init__(self, workdir: str, users: dict[str, str], *, public: tuple[str, ...] = (),
                 service: str = "udocker-tests", issuer: str = "udocker-test-issuer", expires_in: int = 300,
                 token_field: str = "token"):
        self.workdir, self.users, self.public = workdir, dict(users), set(public)
        self.service, self.issuer, self.expires_in, self.token_field = service, issuer, expires_in, token_field
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        os.makedirs(workdir, exist_ok=True)
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.pem")
        _openssl(workdir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out",
                 "token.pem", "-days", "3", "-subj", "/CN=udocker test token issuer")
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def registry_auth(self) -> dict[str, str]:
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": self.cert}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        return signing_input + "." + _b64url(signature)

    def grant(self, user: Optional[str], scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user else [a for a in wanted if a == "pull" and name in self.public]
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def handle(self, path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        user = None
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(user) != password:
                with self._lock:
                    self.requests.append({"path": path, "query": query, "user": user, "status": 401})
                return 401, {"details": "incorrect username or password"}
        with self._lock:
            self.requests.append({"path": path, "query": query, "user": user, "status": 200})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": query.get("service", [self.service])[0],
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                  "access": self.grant(user, query.get("scope", []))}
        return 200, {self.token_field: self.sign(claims), "expires_in": self.expires_in,
                     "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def start(self) -> "TokenServer":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = owner.handle(self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def token_requests(self) -> int:
        with self._lock:
            return len(self.requests)


def build_image(files: Optional[dict[str, bytes]] = None, *, architecture: str = "amd64") -> dict[str, Any]:
    """A tiny image: one gzip layer holding `files`, its config and a Docker schema 2 manifest.

    Returns {"config": bytes, "layer": bytes, "manifest": bytes, "digest": manifest digest, ...}."""
    files = files if files is not None else {"hello.txt": b"hello from udocker tests\n"}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps({"architecture": architecture, "os": "linux",
                         "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode()

    def sha(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": sha(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": sha(layer)}]}, indent=3).encode()
    return {"config": config, "config_digest": sha(config), "layer": layer, "layer_digest": sha(layer),
            "manifest": manifest, "digest": sha(manifest),
            "media_type": "application/vnd.docker.distribution.manifest.v2+json"}


class Pusher:
    """Pushes blobs and manifests with urllib (the Distribution API's monolithic upload), answering Basic
    and Bearer challenges with `credentials` (user, password)."""

    def __init__(self, url: str, *, credentials: Optional[tuple[str, str]] = None, cafile: Optional[str] = None):
        import ssl

        self.url = url.rstrip("/")
        self.credentials = credentials
        self.context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
        self.authorization: Optional[str] = None

    def _basic(self) -> str:
        return "Basic " + base64.b64encode((":".join(self.credentials)).encode()).decode()

    def _authorize(self, challenge: str, scope: str) -> None:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            self.authorization = self._basic()
            return
        params = {k: v.strip("\"") for k, _, v in (p.partition("=") for p in rest.split(","))}
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        request = urllib.request.Request(params["realm"] + "?" + query)
        if self.credentials:
            request.add_header("Authorization", self._basic())
        with urllib.request.urlopen(request) as answer:
            body = json.load(answer)
        self.authorization = "Bearer " + (body.get("token") or body["access_token"])

    def request(self, method: str, url: str, *, scope: str, data: Optional[bytes] = None,
                headers: Optional[dict[str, str]] = None) -> Any:
        for _ in range(2):
            request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
            if self.authorization:
                request.add_header("Authorization", self.authorization)
            try:
                return urllib.request.urlopen(request, context=self.context)
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or _ == 1:
                    raise
                self._authorize(exc.headers.get("WWW-Authenticate", ""), scope)
        raise RuntimeError(f"push to {url} was refused")

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repository}:pull,push"
        with self.request("POST", f"{self.url}/v2/{repository}/blobs/uploads/", scope=scope, data=b"") as answer:
            location = urllib.parse.urljoin(self.url, answer.headers["Location"])
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        self.request("PUT", location, scope=scope, data=data,
                     headers={"Content-Type": "application/octet-stream"}).close()
        return digest

    def push_manifest(self, repository: str, tag: str, data: bytes, media_type: str) -> None:
        self.request("PUT", f"{self.url}/v2/{repository}/manifests/{tag}", data=data,
                     scope=f"repository:{repository}:pull,push", headers={"Content-Type": media_type}).close()

    def push_image(self, repository: str, tag: str, image: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Push `image` (default: build_image()) as repository:tag; returns the image dict."""
        image = image or build_image()
        self.push_blob(repository, image["config"])
        self.push_blob(repository, image["layer"])
        self.push_manifest(repository, tag, image["manifest"], image["media_type"])
        return image



def main() -> None:
    registry = LocalRegistry(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "/tmp/udocker-registry"))
    registry.start()
    with urllib.request.urlopen(registry.url + "/v2/") as answer:
        assert answer.status == 200
    print(registry.host)


if __name__ == "__main__":
    main()
