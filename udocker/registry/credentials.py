"""Registry credentials: udocker's own file (written by `udocker login`) and Docker's ~/.docker/config.json.

udocker's file is `Layout.credentials`, mode 0600, replaced atomically. Its content is JSON (a subset of YAML,
so the file name stays true) shaped like Docker's: {"auths": {HOST: {"auth": base64("user:password")}}}.
JSON keeps the yaml import in udocker.config alone. Hosts are normalised with `registry_host()`, so the
Docker Hub aliases share one entry. Docker's credential helpers are used as Docker uses them: credHelpers
names a helper per registry, credsStore one for all; `docker-credential-NAME get` reads the server URL on
stdin and prints {"Username", "Secret"} (docker-credential-helpers' protocol).

json and base64 are imported where they are used: an anonymous pull (a cached one: one manifest check) reads
no credentials.
"""

from __future__ import annotations

import os

from udocker import fs
from udocker.errors import ConfigError
from udocker.paths import Layout
from udocker.reference import DOCKER_HUB

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def registry_host(text: str) -> str:
    """The host[:port] key for a registry named as a host or URL: https://index.docker.io/v1/ -> docker.io."""
    host = text.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def _decode(entry: object) -> tuple | None:
    import base64
    import binascii

    if not isinstance(entry, dict):
        return None
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    try:
        user, sep, password = base64.b64decode(entry.get("auth") or "").decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        return None
    return (user, password) if sep and user else None


def _read_json(path: str, *, what: str) -> dict:
    import json

    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{what} {path} is not valid JSON", hint="remove it and run 'udocker login' again") from None
    return data if isinstance(data, dict) else {}


def _read_auths(path: str, *, what: str) -> dict:
    data = _read_json(path, what=what)
    auths = data.get("auths")
    return {registry_host(host): entry for host, entry in auths.items()} if isinstance(auths, dict) else {}


def docker_config_path() -> str:
    """Docker's client configuration: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


class CredentialStore:
    """Credentials by registry host. `get` prefers udocker's file over Docker's; only udocker's is written."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.path = layout.credentials

    def get(self, host: str) -> tuple | None:
        """(username, password) for `host`, or None when neither file has usable credentials for it."""
        host = registry_host(host)
        found = _decode(_read_auths(self.path, what="credentials file").get(host))
        if found is None:
            found = _decode(_read_auths(docker_config_path(), what="docker config").get(host))
        if found is None:
            found = _from_helper(host, _read_json(docker_config_path(), what="docker config"))
        return found

    def hosts(self) -> list:
        return sorted(_read_auths(self.path, what="credentials file"))

    def store(self, host: str, username: str, password: str) -> None:
        import base64

        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._update(lambda auths: auths.update({registry_host(host): {"auth": token}}))

    def remove(self, host: str) -> bool:
        """Forget `host`; False when udocker had no credentials for it."""
        removed = []
        self._update(lambda auths: removed.append(auths.pop(registry_host(host), None) is not None))
        return removed[0]

    def remove_all(self) -> list:
        """Forget every host; returns the hosts forgotten."""
        removed = []
        self._update(lambda auths: (removed.extend(sorted(auths)), auths.clear()))
        return removed

    def _update(self, change) -> None:
        """Read, change and atomically rewrite the file (mode 0600) under a lock."""
        import json

        for directory in (self.layout.topdir, self.layout.tmp, self.layout.locks):
            fs.ensure_dir(directory)
        with fs.locked(self.layout.lock("file", "credentials"), timeout=60, what="the credentials file"):
            auths = _read_auths(self.path, what="credentials file")
            change(auths)
            data = json.dumps({"auths": auths}, indent=2, sort_keys=True).encode() + b"\n"
            fs.atomic_write(self.path, data, tmpdir=self.layout.tmp, mode=0o600)


def _from_helper(host: str, docker_config: dict) -> tuple | None:
    """(username, secret) from the credential helper Docker would ask for `host`, or None (no helper, helper
    not installed, no credentials stored, or a malformed answer)."""
    import json
    import subprocess

    helpers = docker_config.get("credHelpers") if isinstance(docker_config.get("credHelpers"), dict) else {}
    name = next((v for k, v in helpers.items() if registry_host(k) == host), None) or docker_config.get("credsStore")
    if not isinstance(name, str) or not name:
        return None
    server = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
    try:
        done = subprocess.run([f"docker-credential-{name}", "get"], input=server.encode(), capture_output=True,
                              timeout=30, check=False)
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    if not isinstance(answer, dict) or not answer.get("Username") or not answer.get("Secret"):
        return None
    return str(answer["Username"]), str(answer["Secret"])
