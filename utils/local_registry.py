#!/usr/bin/env python3
"""Start Debian's docker-registry (Docker Distribution) on a free loopback port, for tests and demos.

As a module: `with LocalRegistry(workdir) as reg: reg.url, reg.host`. As a script:
`python3 utils/local_registry.py DIR` starts one in the background and prints its host:port.
Not imported by udocker itself.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, Optional

BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRegistry:
    """One registry process. `extra` is merged into its config (e.g. {"auth": {...}, "http": {"tls": ...}});
    `scheme` is "https" when the config enables TLS."""

    def __init__(self, workdir: str, *, extra: Optional[Dict[str, Any]] = None, scheme: str = "http"):
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = scheme
        self.url = f"{scheme}://{self.host}"
        self.extra = extra or {}
        self.process: Optional[subprocess.Popen] = None

    def config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {
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


def main() -> None:
    registry = LocalRegistry(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "/tmp/udocker-registry"))
    registry.start()
    with urllib.request.urlopen(registry.url + "/v2/") as answer:
        assert answer.status == 200
    print(registry.host)


if __name__ == "__main__":
    main()
