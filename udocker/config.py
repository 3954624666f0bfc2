"""Effective configuration: built-in defaults < /etc/udocker.conf < <topdir>/udocker.conf < --config FILE
< UDOCKER_* environment < command-line options. Every value remembers where it came from."""

import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from udocker.errors import ConfigError

SYSTEM_FILE = "/etc/udocker.conf"
USER_FILE_NAME = "udocker.conf"


@dataclass(frozen=True)
class Key:
    default: Any
    kind: str  # "str", "str?", "int", "bool", "mirrors"
    doc: str


KEYS: Dict[str, Key] = {
    "topdir": Key("~/.udocker", "str", "the repository: images, containers, engines (UDOCKER_DIR)"),
    "tmpdir": Key(None, "str?", "scratch space for temporary files; null means <topdir>/tmp (UDOCKER_TMP)"),
    "registry": Key("https://registry-1.docker.io", "str",
                    "where docker.io images are pulled from (UDOCKER_REGISTRY)"),
    "index": Key("https://hub.docker.com", "str", "Docker Hub's search API (UDOCKER_INDEX)"),
    "mirrors": Key({}, "mirrors", "per registry host, a list of mirror URLs tried in order before it"),
    "insecure": Key(False, "bool", "accept registries with invalid TLS certificates"),
    "ca_file": Key(None, "str?", "a CA bundle for registries; null means the system bundle"),
    "platform": Key(None, "str?", "os/arch[/variant] to pull; null means this host's"),
    "pull_concurrency": Key(4, "int", "blobs downloaded at once by one pull"),
    "stall_timeout": Key(60, "int", "seconds without a byte before a transfer is retried"),
    "connect_timeout": Key(30, "int", "seconds to connect to a registry"),
    "retries": Key(5, "int", "attempts for a request that failed with a network error, 429 or 5xx"),
    "lock_timeout": Key(3600, "int", "seconds to wait for another process holding a repository lock"),
    "default_execution_mode": Key("auto", "str",
                                  "engine mode for new containers: auto, P1, P2, F1-F4, R1-R3"
                                  " (UDOCKER_DEFAULT_EXECUTION_MODE)"),
    "oci_runtime": Key("auto", "str", "runtime of modes R1-R3: auto (crun where it works, else runc), runc or"
                       " crun (UDOCKER_OCI_RUNTIME)"),
}
DEFAULTS = {name: key.default for name, key in KEYS.items()}
ENV_ALIASES = {"UDOCKER_DIR": "topdir", "UDOCKER_TMP": "tmpdir"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _check(name: str, value: Any, where: str) -> Any:
    kind = KEYS[name].kind
    ok = {
        "str": isinstance(value, str),
        "str?": value is None or isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "bool": isinstance(value, bool),
        "mirrors": isinstance(value, dict)
        and all(isinstance(v, list) and all(isinstance(u, str) for u in v) for v in value.values()),
    }[kind]
    if not ok:
        want = {"str": "a string", "str?": "a string or null", "int": "a non-negative integer",
                "bool": "true or false", "mirrors": "a mapping of registry host to a list of URLs"}[kind]
        raise ConfigError(f"config key '{name}' in {where} must be {want}, not {value!r}")
    return value


def _from_text(name: str, text: str, where: str) -> Any:
    kind = KEYS[name].kind
    if kind == "int":
        try:
            return _check(name, int(text), where)
        except ValueError:
            raise ConfigError(f"config key '{name}' in {where} must be an integer, not {text!r}") from None
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"config key '{name}' in {where} must be true or false, not {text!r}")
    if kind == "mirrors":
        raise ConfigError(f"config key '{name}' cannot be set from {where}")
    return text


def read_file(path: str) -> Dict[str, Any]:
    """Read one YAML config file; unknown keys and wrong types raise ConfigError naming the key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    for name, value in data.items():
        if name not in KEYS:
            raise ConfigError(f"unknown config key '{name}' in {path}", hint="see 'udocker showconf'")
        _check(name, value, path)
    return data


class Config:
    """The effective values (`values`) and, for each key, where its value came from (`sources`)."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = dict(DEFAULTS)
        self.sources: Dict[str, str] = {name: "default" for name in KEYS}

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _apply(self, data: Mapping[str, Any], source: str) -> None:
        for name, value in data.items():
            self.values[name] = value
            self.sources[name] = source

    @classmethod
    def load(cls, *, config_file: Optional[str] = None, cli: Optional[Mapping[str, Any]] = None,
             environ: Optional[Mapping[str, str]] = None, system_file: str = SYSTEM_FILE) -> "Config":
        """Build the effective configuration; raises ConfigError for bad files, variables or values."""
        environ = os.environ if environ is None else environ
        cli = {k: v for k, v in (cli or {}).items() if v is not None}
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
        return config


def _from_environ(environ: Mapping[str, str]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for var, text in environ.items():
        if not var.startswith("UDOCKER_"):
            continue
        name = ENV_ALIASES.get(var, var[len("UDOCKER_"):].lower())
        if name in KEYS and KEYS[name].kind != "mirrors":
            values[name] = _from_text(name, text, f"environment variable {var}")
    return values
