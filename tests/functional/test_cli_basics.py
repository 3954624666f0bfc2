"""The command line itself: version, help, usage errors (exit 2), general options in both spellings,
configuration sources and errors, repositories (mkrepo, other formats), --debug and --quiet. Every message is
checked verbatim; no command may print a traceback without -D."""

import json
import os
import re

import pytest

from udocker import __version__
from udocker.paths import FORMAT_VERSION

COMMANDS = ["pull", "images", "inspect", "tag", "rmi", "verify", "protect", "unprotect", "run", "create", "ps", "rm",
            "name", "rmname", "rename", "clone", "export", "setup", "migrate", "logs", "stop", "kill", "wait", "load",
            "save", "import", "login", "logout", "search", "manifest", "install", "info", "showconf", "mkrepo",
            "version", "help"]


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _failed(done, status: int, *stderr: str) -> None:
    assert (done.returncode, done.stderr.splitlines()) == (status, list(stderr))
    assert done.stdout == ""


def _conf(tmp_path, text: str, name: str = "udocker.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_version(udocker):
    assert _ok(udocker("version")) == f"udocker {__version__}\n"
    assert _ok(udocker("-V")) == f"udocker {__version__}\n"
    assert _ok(udocker("--version", repo=False)) == f"udocker {__version__}\n"


def test_root_help(udocker):
    text = _ok(udocker("--help"))
    # click 8.5 brackets COMMAND for a group that runs without one
    assert re.match(r"Usage: udocker \[OPTIONS\] (COMMAND|\[COMMAND\]) \[ARGS\]\.\.\.\n", text), text
    for option in ("-V, --version", "-D, --debug", "-q, --quiet", "--insecure", "--repo DIR", "--config FILE",
                   "--allow-root", "-h, --help"):
        assert f"  {option}" in text, option
    listed = [line.split()[0] for line in text.split("Commands:\n")[1].splitlines() if line.startswith("  ")]
    assert listed == COMMANDS
    assert _ok(udocker("-h")) == text
    assert _ok(udocker("help")) == text
    assert _ok(udocker()) == text


@pytest.mark.parametrize("command", ["pull", "images", "rmi", "login", "search", "import"])
def test_command_help(udocker, command):
    text = _ok(udocker("help", command))
    assert text.startswith(f"Usage: udocker {command} [OPTIONS]")
    assert _ok(udocker(command, "--help")) == text
    assert _ok(udocker(command, "-h")) == text


def test_pull_help_lists_its_options(udocker):
    text = _ok(udocker("help", "pull"))
    for option in ("--platform OS/ARCH[/VARIANT]", "--registry URL", "--index URL"):
        assert option in text


def test_subcommand_help(udocker):
    text = _ok(udocker("manifest", "inspect", "--help"))
    assert text.startswith("Usage: udocker manifest inspect [OPTIONS] IMAGE")


@pytest.mark.parametrize("args, stderr", [
    (["xyzzy"], ["error: no such command 'xyzzy'", "hint: see 'udocker --help'"]),
    (["pul"], ["error: no such command 'pul'", "hint: did you mean 'pull'? see 'udocker --help'"]),
    (["help", "xyzzy"], ["error: no such command 'xyzzy'", "hint: see 'udocker --help'"]),
    (["help", "imagse"], ["error: no such command 'imagse'", "hint: did you mean 'images'? see 'udocker --help'"]),
    (["manifest", "inspekt"], ["error: no such command 'inspekt'",
                               "hint: did you mean 'inspect'? see 'udocker manifest --help'"]),
    (["--bogus", "images"], ["error: no such option '--bogus'", "hint: see 'udocker --help'"]),
    (["images", "--bogus"], ["error: no such option '--bogus'", "hint: see 'udocker images --help'"]),
    (["images", "--jsn"], ["error: no such option '--jsn'",
                           "hint: did you mean '--json'? see 'udocker images --help'"]),
    (["images", "-x"], ["error: no such option '-x'", "hint: see 'udocker images --help'"]),
    (["pull"], ["error: missing argument 'IMAGE'", "hint: see 'udocker pull --help'"]),
    (["tag", "a"], ["error: missing argument 'TARGET'", "hint: see 'udocker tag --help'"]),
    (["rmi"], ["error: missing argument 'IMAGE...'", "hint: see 'udocker rmi --help'"]),
    (["manifest", "inspect"], ["error: missing argument 'IMAGE'", "hint: see 'udocker manifest inspect --help'"]),
    (["--repo"], ["error: option '--repo' requires an argument", "hint: see 'udocker --help'"]),
    (["search", "x", "y"], ["error: got unexpected extra argument (y)", "hint: see 'udocker search --help'"]),
])
def test_usage_errors(udocker, args, stderr):
    _failed(udocker(*args, repo=False), 2, *stderr)


@pytest.mark.parametrize("args, stderr", [
    (["pull", "Busybox"], ["error: invalid reference format: Busybox",
                           "hint: repository names must be lower-case"]),
    (["inspect", "UPPER:1"], ["error: image not found: UPPER:1", "hint: see 'udocker images' or pull it"]),
    (["rmi", "nothere"], ["error: image not found: nothere", "hint: see 'udocker images' or pull it"]),
    (["inspect", "nothere:1"], ["error: image not found: nothere:1", "hint: see 'udocker images' or pull it"]),
    (["verify", "nothere"], ["error: image not found: nothere", "hint: see 'udocker images' or pull it"]),
    (["protect", "nothere"], ["error: image not found: nothere", "hint: see 'udocker images' or pull it"]),
    (["tag", "nothere", "other"], ["error: image not found: nothere", "hint: see 'udocker images' or pull it"]),
    (["save", "-o", "x.tar", "nothere"], ["error: image not found: nothere",
                                          "hint: see 'udocker images' or pull it"]),
])
def test_udocker_errors(udocker, args, stderr):
    _failed(udocker(*args), 1, *stderr)


def test_tag_to_an_invalid_reference(udocker, tmp_path):
    tarball = str(tmp_path / "empty.tar")
    import tarfile

    with tarfile.open(tarball, "w"):
        pass
    _ok(udocker("import", tarball, "flat:1"))
    _failed(udocker("tag", "flat:1", "Bad:Name"), 1, "error: invalid reference format: Bad:Name",
            "hint: repository names must be lower-case")


def test_option_value_spellings_are_equivalent(udocker, tmp_path):
    joined, separate = str(tmp_path / "joined"), str(tmp_path / "separate")
    assert _ok(udocker(f"--repo={joined}", "showconf", "--json", repo=False)) == \
        _ok(udocker("--repo", joined, "showconf", "--json", repo=False))
    _ok(udocker(f"--repo={joined}", "images", repo=False))
    _ok(udocker("--repo", separate, "images", repo=False))
    assert sorted(os.listdir(joined)) == sorted(os.listdir(separate))
    conf = _conf(tmp_path, "retries: 4\n")
    assert _ok(udocker(f"--config={conf}", "showconf", "--json")) == _ok(udocker("--config", conf, "showconf",
                                                                                 "--json"))
    assert _ok(udocker("pull", "--platform=linux/arm64", "--help")) == _ok(udocker("pull", "--help"))


def test_showconf_sources(udocker, tmp_path):
    conf = _conf(tmp_path, "pull_concurrency: 7\nretries: 9\n")
    done = udocker("--config", conf, "showconf", env={"UDOCKER_RETRIES": "3", "UDOCKER_PLATFORM": "linux/arm64"})
    rows = {line.split()[0]: line.split()[1:] for line in _ok(done).splitlines()[1:]}
    assert _ok(done).splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]
    assert rows["topdir"] == [udocker.repo, "command", "line"]
    assert rows["pull_concurrency"] == ["7", conf]
    assert rows["retries"] == ["3", "environment"]
    assert rows["platform"] == ["linux/arm64", "environment"]
    assert rows["stall_timeout"] == ["60", "default"]
    assert rows["ca_file"] == ["null", "default"]
    data = json.loads(_ok(udocker("--config", conf, "showconf", "--json", env={"UDOCKER_RETRIES": "3"})))
    assert data["topdir"] == {"value": udocker.repo, "source": "command line"}
    assert data["pull_concurrency"] == {"value": 7, "source": conf}
    assert data["retries"] == {"value": 3, "source": "environment"}
    assert data["insecure"] == {"value": False, "source": "default"}
    data = json.loads(_ok(udocker("--insecure", "showconf", "--json")))
    assert data["insecure"] == {"value": True, "source": "command line"}


def test_environment_names_the_repository(udocker, tmp_path):
    repo = str(tmp_path / "from-env")
    data = json.loads(_ok(udocker("showconf", "--json", repo=False, env={"UDOCKER_DIR": repo})))
    assert data["topdir"] == {"value": repo, "source": "environment"}
    _ok(udocker("images", repo=False, env={"UDOCKER_DIR": repo}))
    assert os.path.isfile(os.path.join(repo, "VERSION"))


def test_repository_config_file_is_read(udocker, tmp_path):
    _ok(udocker("mkrepo", udocker.repo))
    conf = _conf(tmp_path / "repo", "connect_timeout: 5\n", "udocker.conf")
    data = json.loads(_ok(udocker("showconf", "--json")))
    assert data["connect_timeout"] == {"value": 5, "source": conf}


@pytest.mark.parametrize("text, message", [
    ("bogus: 1\n", "error: unknown config key 'bogus' in {file}"),
    ("pull_concurrency: many\n", "error: config key 'pull_concurrency' in {file} must be a non-negative integer, "
                                 "not 'many'"),
    ("insecure: 3\n", "error: config key 'insecure' in {file} must be true or false, not 3"),
    ("- a list\n", "error: config file {file} must be a mapping of keys to values"),
    ("retries: [\n", "error: config file {file} is not valid YAML: while parsing a flow node"),
])
def test_bad_config_file(udocker, tmp_path, text, message):
    conf = _conf(tmp_path, text)
    done = udocker("--config", conf, "images")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == message.format(file=conf)
    assert len(done.stderr.splitlines()) <= 2 and "Traceback" not in done.stderr
    if text.startswith("bogus"):
        assert done.stderr.splitlines()[1:] == ["hint: see 'udocker showconf'"]


def test_missing_config_file(udocker, tmp_path):
    missing = str(tmp_path / "nothere.yaml")
    _failed(udocker("--config", missing, "showconf"), 1,
            f"error: cannot read config file {missing}: No such file or directory")


@pytest.mark.parametrize("variable, value, message", [
    ("UDOCKER_RETRIES", "often", "error: config key 'retries' in environment variable UDOCKER_RETRIES must be "
                                 "an integer, not 'often'"),
    ("UDOCKER_INSECURE", "maybe", "error: config key 'insecure' in environment variable UDOCKER_INSECURE must "
                                  "be true or false, not 'maybe'"),
])
def test_bad_environment_value(udocker, variable, value, message):
    _failed(udocker("images", env={variable: value}), 1, message)


def test_mkrepo_then_use_it(udocker, tmp_path):
    repo = str(tmp_path / "elsewhere" / "udocker")
    assert _ok(udocker("mkrepo", repo, repo=False)) == repo + "\n"
    with open(os.path.join(repo, "VERSION"), encoding="utf-8") as stream:
        assert stream.read() == FORMAT_VERSION + "\n"
    with open(os.path.join(repo, "store", "oci-layout"), encoding="utf-8") as stream:
        assert json.load(stream) == {"imageLayoutVersion": "1.0.0"}
    assert _ok(udocker("--repo", repo, "images", repo=False)).splitlines() == ["REPOSITORY  IMAGE ID  CREATED  SIZE"]
    assert _ok(udocker("--repo", repo, "images", "--json", repo=False)) == "[]\n"
    assert _ok(udocker("mkrepo", repo, repo=False)) == repo + "\n"  # again: nothing changes


def test_repository_of_another_format_is_refused(udocker, tmp_path):
    _ok(udocker("mkrepo", udocker.repo))
    with open(os.path.join(udocker.repo, "VERSION"), "w", encoding="utf-8") as stream:
        stream.write("1\n")
    _failed(udocker("images"), 1, f"error: repository {udocker.repo} has format '1', expected '{FORMAT_VERSION}'",
            "hint: use another --repo or remove the old repository")


def test_udocker_1_repository_is_opened_beside_its_files(udocker, tmp_path):
    """udocker 1.3 kept its repository in ~/.udocker too (repos/, layers/, containers/, bin/, lib/): udocker 2
    adds its own files beside them and changes none of 1.x's (tests/functional/test_v1_repository_images.py)."""
    old = tmp_path / "old"
    for name in ("repos", "layers", "containers", "bin", "lib"):
        (old / name).mkdir(parents=True)
    assert _ok(udocker("images", repo=str(old))).splitlines() == ["REPOSITORY  IMAGE ID  CREATED  SIZE"]
    assert {"bin", "containers", "layers", "lib", "repos", "VERSION", "store"} <= set(os.listdir(old))
    assert all(os.listdir(old / name) == [] for name in ("repos", "layers", "bin", "lib"))


def test_debug_shows_a_traceback_and_debug_lines(udocker, registry):
    done = udocker("-D", "inspect", "nothere")
    assert done.returncode == 1
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.splitlines()[-2:] == ["error: image not found: nothere",
                                             "hint: see 'udocker images' or pull it"]
    ref = f"{registry.host}/test/busybox:latest"
    done = udocker("--debug", "pull", ref)
    assert done.returncode == 0, done.stderr
    assert f"GET http://{registry.host}/v2/test/busybox/manifests/latest -> 200" in done.stderr.splitlines()
    quiet = udocker("pull", ref)
    assert " -> 200" not in quiet.stderr


def test_quiet_silences_progress(udocker, registry):
    ref = f"{registry.host}/test/layers:latest"
    done = udocker("-q", "pull", ref)
    assert (done.returncode, done.stdout, done.stderr) == (0, ref + "\n", "")
    done = udocker("--quiet", "rmi", ref)
    assert (done.returncode, done.stderr) == (0, "")


def test_allow_root_is_accepted(udocker):
    assert _ok(udocker("--allow-root", "images", "--json")) == "[]\n"
    assert _ok(udocker("--allow-root", "version")) == f"udocker {__version__}\n"


@pytest.mark.parametrize("args", [["images"], ["inspect", "x"], ["rmi", "x"], ["verify", "x"], ["pull", "Bad"],
                                  ["load", "-i", "/nonexistent.tar"], ["import", "/nonexistent.tar", "x:1"],
                                  ["save", "-o", "/nonexistent/dir/x.tar", "x"], ["logout", "-a"],
                                  ["tag", "x", "y"], ["unprotect", "x"], ["search", "--list-tags", "Bad"]])
def test_no_traceback_without_debug(udocker, args):
    done = udocker(*args)
    assert "Traceback" not in done.stderr
    assert done.returncode in (0, 1, 2)
    if done.returncode:
        assert done.stderr.splitlines()[0].startswith("error: ")
