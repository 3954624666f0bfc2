"""Effective configuration: built-in defaults < /etc/udocker.conf < <topdir>/udocker.conf < --config FILE
< UDOCKER_* environment < command-line options. Every value remembers where it came from."""

from __future__ import annotations

import os

from udocker.errors import ConfigError
from udocker.modetable import NAMES as MODE_NAMES

SYSTEM_FILE = "/etc/udocker.conf"
USER_FILE_NAME = "udocker.conf"


class Key:
    """One configuration key: its default, its kind ("str", "str?", "int", "bool", "switch", "url", "mirrors",
    "paths", "hosts", "proxy"), what it is for, and for "int" keys the largest value accepted (`limit`, named in
    `doc`), for "str" keys the values accepted (`choices`, case-insensitive) when the set is closed. A plain
    class, not a dataclass: this module is on the `run` path, where dataclasses' import alone costs more than
    10 ms."""

    __slots__ = ("default", "kind", "doc", "limit", "choices")

    def __init__(self, default: object, kind: str, doc: str, *, limit: int = 0, choices: tuple = ()):
        self.default = default
        self.kind = kind
        self.doc = doc
        self.limit = limit
        self.choices = choices


KEYS: dict[str, Key] = {
    "topdir": Key("~/.udocker", "str", "the repository: images, containers, engines (UDOCKER_DIR)"),
    "tmpdir": Key(None, "str?", "scratch space for temporary files that need not be on the repository's file"
                               " system (archives being loaded or imported); null means $TMPDIR when set (a batch"
                               " job's node-local scratch), else <topdir>/tmp (UDOCKER_TMP)"),
    "registry": Key("https://registry-1.docker.io", "url",
                    "where docker.io images are pulled from (UDOCKER_REGISTRY)"),
    "index": Key("https://hub.docker.com", "url", "Docker Hub's search API (UDOCKER_INDEX)"),
    "mirrors": Key({}, "mirrors", "per registry host, a list of mirror URLs tried in order before it"),
    "insecure": Key(False, "bool", "accept registries with invalid TLS certificates"),
    "ca_file": Key(None, "str?", "a CA bundle for registries; null means the system bundle"),
    "insecure_registries": Key([], "hosts", "registries reached over plain HTTP or unverified TLS, as in Docker's"
                               " daemon.json: host:port, host (any port) or a CIDR (UDOCKER_INSECURE_REGISTRIES:"
                               " comma-separated)"),
    "http_proxy": Key(None, "proxy", "the proxy of every registry request (--httpproxy): http, https, socks4,"
                                     " socks4a, socks5 or socks5h://[USER:PASSWORD@]HOST:PORT; null means the"
                                     " environment's https_proxy, http_proxy, all_proxy; no_proxy applies to both"
                                     " (UDOCKER_HTTP_PROXY)"),
    "platform": Key(None, "str?", "os/arch[/variant] to pull; null means this host's"),
    "pull_concurrency": Key(4, "int", "blobs downloaded at once by one pull (at most 64)", limit=64),
    "stall_timeout": Key(60, "int", "seconds without a byte before a transfer is retried (0: never, at most"
                                    " 86400)", limit=86400),
    "connect_timeout": Key(30, "int", "seconds to connect to a registry (0: no limit, at most 3600)", limit=3600),
    "retries": Key(5, "int", "attempts for a request that failed with a network error, 429 or 5xx, and for a blob"
                             " transfer that makes no progress (at most 100)", limit=100),
    "max_layer_size": Key(64 << 30, "int", "uncompressed bytes one image layer may expand to when unpacked (a"
                          " decompression bomb fails with an error naming the layer); 0 means no limit (at most"
                          " 1125899906842624, 1 PiB)", limit=1 << 50),
    "lock_timeout": Key(3600, "int", "seconds to wait for another process holding a repository lock (at most"
                                     " 2592000, 30 days)", limit=2592000),
    "stop_timeout": Key(10, "int", "seconds a container's program has to exit after SIGTERM, SIGINT or SIGHUP"
                                   " reached `udocker run` before everything left of it is killed (docker stop's"
                                   " grace period; UDOCKER_STOP_TIMEOUT; at most 86400)", limit=86400),
    "default_execution_mode": Key("auto", "str",
                                  "engine mode for new containers: auto, P1, P2, F1-F4, R1-R3"
                                  " (UDOCKER_DEFAULT_EXECUTION_MODE)",
                                  choices=("auto", *MODE_NAMES)),
    "nvidia": Key("auto", "switch", "inject the host's NVIDIA driver: auto (when the node has a driver and the job was"
                                 " given GPUs), on, off; run --nvidia / --no-nvidia win (UDOCKER_NVIDIA)"),
    "infiniband": Key("auto", "switch", "make Infiniband/RDMA devices and libraries visible: auto (when the node has"
                                     " them), on, off; run --ib / --no-ib win (UDOCKER_INFINIBAND)"),
    "host_mpi": Key("off", "switch", "use the node's MPI libraries in place of the image's (ABI-compatible images):"
                                     " on, off (auto means off); run --hostmpi / --no-hostmpi win (UDOCKER_HOST_MPI)"),
    "engine_paths": Key({}, "paths", "engine executables or libraries to use instead of searching them, by name"
                                     " (e.g. proot: /opt/bin/proot, libfakechroot.so: /opt/lib/libfakechroot.so)"),
    "engines_url": Key(None, "str?", "an http(s) URL of the engine bundle tarball (a site's web server) that"
                                     " `udocker install` downloads when no udocker-engines wheel is installed; its"
                                     " sha256 is read from URL.sha256 (UDOCKER_ENGINES_URL)"),
    "oci_runtime": Key("auto", "str", "runtime of modes R1-R3: auto (crun where it works, else runc), runc or"
                       " crun (UDOCKER_OCI_RUNTIME)", choices=("auto", "runc", "crun")),
}
DEFAULTS = {name: key.default for name, key in KEYS.items()}
ENV_ALIASES = {"UDOCKER_DIR": "topdir", "UDOCKER_TMP": "tmpdir"}
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def url_problem(text: str) -> str | None:
    """Why `text` is not an http(s) URL of a host (None when it is one): registries, mirrors, the index."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad IPv6 literal
        return "port out of range 1-65535" if "out of range" in str(exc) else str(exc).lower()
    if parts.scheme not in ("http", "https"):
        return "not http or https"
    if not parts.hostname or any(c.isspace() for c in text):
        return "no valid host"
    return "port out of range 1-65535" if port == 0 else None


def proxy_problem(text: str) -> str | None:
    """Why `text` is not a proxy URL (None when it is one): scheme://[user:password@]host:port."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        return "port out of range 1-65535" if "out of range" in str(exc) else str(exc).lower()
    if parts.scheme.lower() not in PROXY_SCHEMES:
        return "not an " + ", ".join(PROXY_SCHEMES[:-1]) + " or " + PROXY_SCHEMES[-1] + " URL"
    if not parts.hostname or any(c.isspace() for c in text) or parts.path not in ("", "/") or parts.query:
        return "no valid host" if not parts.hostname else "not just scheme://host:port"
    return "port out of range 1-65535" if port == 0 else None


def _problem(key: Key, value: object) -> str | None:
    """What is wrong with `value` for `key` beyond its type (None when nothing)."""
    if key.kind == "int" and key.limit and value > key.limit:
        return f"at most {key.limit}"
    if key.kind == "str" and not value:
        return "a non-empty string"
    if key.kind == "str" and key.choices and value.lower() not in (c.lower() for c in key.choices):
        return "one of " + ", ".join(key.choices)
    if key.kind == "url" and url_problem(value):
        return f"an http(s) URL ({url_problem(value)})"
    if key.kind == "proxy" and value:  # "" is no proxy, as in udocker 1.3's configuration
        problem = proxy_problem(value if "://" in value else "http://" + value)  # host:port means http://
        if problem:
            return f"a proxy URL ({problem})"
    if key.kind == "mirrors":
        for url in (u for urls in value.values() for u in urls):
            if url_problem(url):
                return f"a mapping of registry host to http(s) URLs ({url!r}: {url_problem(url)})"
    return None


def _check(name: str, value: object, where: str) -> object:
    key = KEYS[name]
    kind = key.kind
    ok = {
        "str": isinstance(value, str),
        "str?": value is None or isinstance(value, str),
        "url": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        # YAML 1.1 reads a bare on/off as a boolean: accept both spellings
        "switch": isinstance(value, bool) or value in ("auto", "on", "off"),
        "bool": isinstance(value, bool),
        "mirrors": isinstance(value, dict)
        and all(isinstance(v, list) and all(isinstance(u, str) for u in v) for v in value.values()),
        "hosts": isinstance(value, list) and all(isinstance(h, str) and h and not any(c.isspace() for c in h)
                                                  and "://" not in h for h in value),
        "proxy": value is None or isinstance(value, str),
        "paths": isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) and os.path.isabs(os.path.expanduser(v))
                for k, v in value.items()),
    }[kind]
    want = None if ok else {"str": "a string", "str?": "a string or null", "int": "a non-negative integer",
                            "bool": "true or false", "switch": "auto, on or off", "url": "an http(s) URL",
                            "mirrors": "a mapping of registry host to a list of URLs",
                            "paths": "a mapping of names to absolute paths",
                            "hosts": "a list of host[:port] or CIDR strings", "proxy": "a proxy URL or null"}[kind]
    want = want or _problem(key, value)
    if want:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"config key '{name}' in {where} must be {want}, not {shown}")
    # a closed set's value in its canonical spelling (F3 for f3): later code compares exactly
    return next((c for c in key.choices if c.lower() == value.lower()), value) if key.choices else value


def _from_text(name: str, text: str, where: str) -> object:
    kind = KEYS[name].kind
    if kind == "int":
        try:
            return _check(name, int(text), where)
        except ValueError:
            shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
            raise ConfigError(f"config key '{name}' in {where} must be an integer, not {shown}") from None
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"config key '{name}' in {where} must be true or false, not {text!r}")
    if kind == "switch":
        return _check(name, text.lower(), where)
    if kind == "hosts":
        return _check(name, [h for h in text.replace(",", " ").split() if h], where)
    if kind == "proxy":
        return _check(name, text or None, where)
    if kind in ("mirrors", "paths"):
        raise ConfigError(f"config key '{name}' cannot be set from {where}", hint="set it in udocker.conf")
    return _check(name, text, where)


def read_file(path: str) -> dict[str, object]:
    """Read one YAML config file; unknown keys and wrong types raise ConfigError naming the key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    for name, value in data.items():
        if name not in KEYS:
            raise ConfigError(f"unknown config key '{name}' in {path}", hint="see 'udocker showconf'")
        data[name] = _check(name, value, path)
    return data


def read_yaml(path: str, what: str) -> object:
    """Parse a YAML data file other than a config file (e.g. an engine manifest); this module is the only
    one importing yaml. Raises ConfigError naming `what` and the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


class Config:
    """The effective values (`values`) and, for each key, where its value came from (`sources`)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = dict(DEFAULTS)
        self.sources: dict[str, str] = {name: "default" for name in KEYS}

    def __getitem__(self, name: str) -> object:
        return self.values[name]

    def _apply(self, data: dict[str, object], source: str) -> None:
        for name, value in data.items():
            self.values[name] = value
            self.sources[name] = source

    @classmethod
    def load(cls, *, config_file: str | None = None, cli: dict[str, object] | None = None,
             environ: dict[str, str] | None = None, system_file: str = SYSTEM_FILE) -> Config:
        """Build the effective configuration; raises ConfigError for bad files, variables or values."""
        environ = os.environ if environ is None else environ
        cli = {k: _check(k, v, "command line") for k, v in (cli or {}).items() if v is not None}
        env = _from_environ(environ)
        layers = []
        if os.path.isfile(system_file):
            layers.append((read_file(system_file), system_file))
        explicit = (read_file(config_file), config_file) if config_file else None
        topdir = cli.get("topdir") or env.get("topdir") or (explicit[0].get("topdir") if explicit else None)
        for data, _ in layers:
            topdir = topdir or data.get("topdir")
        user_file = os.path.join(os.path.expanduser(topdir or DEFAULTS["topdir"]), USER_FILE_NAME)
        if os.path.isfile(user_file):
            layers.append((read_file(user_file), user_file))
        if explicit:
            layers.append(explicit)
        layers += [(env, "environment"), (cli, "command line")]
        config = cls()
        for data, source in layers:
            config._apply(data, source)
        config.values["topdir"] = os.path.abspath(os.path.expanduser(config.values["topdir"]))
        if config.values["tmpdir"] is None and os.path.isabs(environ.get("TMPDIR") or ""):
            # Below every explicit setting: batch systems set TMPDIR to node-local, per-job scratch. Partial
            # downloads and unpacks still go to <topdir>/tmp (Layout.tmp), where os.replace is atomic.
            config.values["tmpdir"] = environ["TMPDIR"]
            config.sources["tmpdir"] = "environment variable TMPDIR"
        return config


def _from_environ(environ: dict[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for var, text in environ.items():
        if not var.startswith("UDOCKER_"):
            continue
        name = ENV_ALIASES.get(var, var[len("UDOCKER_"):].lower())
        if name in KEYS:  # mirrors and engine_paths cannot be: an error, not a silently ignored variable
            values[name] = _from_text(name, text, f"environment variable {var}")
    return values
