import os

import pytest
import yaml

from udocker.config import DEFAULTS, Config, read_file
from udocker.errors import ConfigError

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_shipped_conf_equals_builtin_defaults():
    with open(os.path.join(TOP, "udocker.conf"), encoding="utf-8") as stream:
        assert yaml.safe_load(stream) == DEFAULTS


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_precedence_and_sources(tmp_path):
    system = _write(tmp_path / "system.conf", "retries: 1\nstall_timeout: 11\nconnect_timeout: 12\n"
                                              "lock_timeout: 13\npull_concurrency: 14\n")
    top = tmp_path / "repo"
    top.mkdir()
    _write(top / "udocker.conf", "stall_timeout: 21\nconnect_timeout: 22\nlock_timeout: 23\npull_concurrency: 24\n")
    explicit = _write(tmp_path / "x.conf", "connect_timeout: 32\nlock_timeout: 33\npull_concurrency: 34\n")
    env = {"UDOCKER_DIR": str(top), "UDOCKER_LOCK_TIMEOUT": "43", "UDOCKER_PULL_CONCURRENCY": "44",
           "UDOCKER_SOMETHING_ELSE": "ignored"}
    config = Config.load(config_file=explicit, cli={"pull_concurrency": 54}, environ=env, system_file=system)
    assert [config[k] for k in ("retries", "stall_timeout", "connect_timeout", "lock_timeout",
                                "pull_concurrency")] == [1, 21, 32, 43, 54]
    assert config.sources["retries"] == system
    assert config.sources["stall_timeout"] == str(top / "udocker.conf")
    assert config.sources["connect_timeout"] == explicit
    assert config.sources["lock_timeout"] == "environment"
    assert config.sources["pull_concurrency"] == "command line"
    assert config.sources["platform"] == "default"
    assert config["topdir"] == str(top)


def test_udocker_variables_keep_their_meaning(tmp_path):
    env = {"UDOCKER_DIR": str(tmp_path), "UDOCKER_TMP": "/scratch", "UDOCKER_REGISTRY": "http://127.0.0.1:1",
           "UDOCKER_INDEX": "http://127.0.0.1:2", "UDOCKER_DEFAULT_EXECUTION_MODE": "F3",
           "UDOCKER_INSECURE": "yes"}
    config = Config.load(environ=env, system_file="/nonexistent")
    assert (config["topdir"], config["tmpdir"], config["registry"], config["index"],
            config["default_execution_mode"], config["insecure"]) == (
        str(tmp_path), "/scratch", "http://127.0.0.1:1", "http://127.0.0.1:2", "F3", True)


@pytest.mark.parametrize(
    "environ, conf, expected, source",
    [({"TMPDIR": "/job/tmp"}, "", "/job/tmp", "environment variable TMPDIR"),
     ({"TMPDIR": "relative"}, "", None, "default"),
     ({}, "", None, "default"),
     ({"TMPDIR": "/job/tmp", "UDOCKER_TMP": "/scratch"}, "", "/scratch", "environment"),
     ({"TMPDIR": "/job/tmp"}, "tmpdir: /conf\n", "/conf", "FILE")])
def test_tmpdir_falls_back_to_a_batch_jobs_tmpdir(tmp_path, environ, conf, expected, source):
    explicit = _write(tmp_path / "x.conf", conf)
    config = Config.load(config_file=explicit, environ={"UDOCKER_DIR": str(tmp_path), **environ},
                         system_file="/nonexistent")
    assert config["tmpdir"] == expected
    assert config.sources["tmpdir"] == (explicit if source == "FILE" else source)


@pytest.mark.parametrize(
    "text, message",
    [("bogus: 1\n", "unknown config key 'bogus'"),
     ("retries: many\n", "config key 'retries'"),
     ("insecure: 3\n", "config key 'insecure'"),
     ("mirrors: [a]\n", "config key 'mirrors'"),
     ("- a\n", "must be a mapping"),
     ("a: [\n", "not valid YAML")],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        read_file(_write(tmp_path / "bad.conf", text))


@pytest.mark.parametrize("var, value", [("UDOCKER_RETRIES", "x"), ("UDOCKER_INSECURE", "maybe")])
def test_bad_environment_names_the_variable(var, value):
    with pytest.raises(ConfigError, match=var):
        Config.load(environ={var: value}, system_file="/nonexistent")


def test_shipped_conf_comments_are_the_keys_docs():
    """udocker.conf documents each key with KEYS' text (limits included), so the two cannot drift apart."""
    from udocker.config import KEYS

    with open(os.path.join(TOP, "udocker.conf"), encoding="utf-8") as stream:
        blocks = stream.read().strip().split("\n\n")[1:]
    docs = {}
    for block in blocks:
        lines = block.splitlines()
        docs[lines[-1].split(":")[0]] = " ".join(line[2:] for line in lines[:-1])
    assert docs == {name: key.doc for name, key in KEYS.items()}
    for name, key in KEYS.items():
        if key.kind == "int":
            assert key.limit and f"at most {key.limit}" in key.doc, name


@pytest.mark.parametrize(
    "text, message",
    [("connect_timeout: 10000000000000000000000000000000000000000\n", "'connect_timeout' .* at most 3600"),
     ("retries: 101\n", "'retries' .* at most 100"),
     ("stall_timeout: 86401\n", "'stall_timeout' .* at most 86400"),
     ("lock_timeout: 99999999999\n", "'lock_timeout' .* at most"),
     ("pull_concurrency: 1000\n", "'pull_concurrency' .* at most 64"),
     ("retries: -1\n", "'retries' .* non-negative"),
     ('topdir: ""\n', "'topdir' .* non-empty"),
     ("default_execution_mode: Z9\n", "'default_execution_mode' .* one of auto, P1"),
     ("oci_runtime: podman\n", "'oci_runtime' .* one of auto, runc, crun"),
     ("registry: not a url\n", "'registry' .* http"),
     ("registry: ftp://127.0.0.1/\n", "'registry' .*not http or https"),
     ("index: http://127.0.0.1:99999\n", "'index' .*port out of range"),
     ("mirrors: {docker.io: ['http://[::1']}\n", "'mirrors'"),
     ("mirrors: {docker.io: ['file:///tmp']}\n", "'mirrors' .*not http or https")],
)
def test_absurd_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_file(_write(tmp_path / "bad.conf", text))


@pytest.mark.parametrize("var, value, message", [
    ("UDOCKER_RETRIES", "10" * 13, "UDOCKER_RETRIES must be at most 100"),
    ("UDOCKER_RETRIES", "10**25", "UDOCKER_RETRIES must be an integer"),
    ("UDOCKER_CONNECT_TIMEOUT", "9" * 5000, "UDOCKER_CONNECT_TIMEOUT must be an integer"),
    ("UDOCKER_DIR", "", "'topdir' in environment variable UDOCKER_DIR must be a non-empty"),
    ("UDOCKER_DEFAULT_EXECUTION_MODE", "Z9", "UDOCKER_DEFAULT_EXECUTION_MODE must be one of"),
    ("UDOCKER_REGISTRY", "not a url", "UDOCKER_REGISTRY must be an http"),
    ("UDOCKER_INDEX", "ftp://x", "UDOCKER_INDEX must be an http")])
def test_absurd_environment_values_name_the_variable(var, value, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(environ={var: value}, system_file="/nonexistent")


def test_choices_are_stored_in_their_canonical_spelling(tmp_path):
    config = Config.load(environ={"UDOCKER_DIR": str(tmp_path), "UDOCKER_DEFAULT_EXECUTION_MODE": "r1",
                                  "UDOCKER_OCI_RUNTIME": "CRUN"}, system_file="/nonexistent")
    assert (config["default_execution_mode"], config["oci_runtime"]) == ("R1", "crun")


def test_config_file_that_is_not_text_is_one_error(tmp_path):
    path = tmp_path / "binary.conf"
    path.write_bytes(b"\x7fELF\x02\x01\x01\xf0\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_file(str(path))
