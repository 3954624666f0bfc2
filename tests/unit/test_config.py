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
