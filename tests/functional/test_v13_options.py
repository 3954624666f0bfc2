"""Options and forms of udocker 1.3's manual that udocker 2 used to reject (issue 12, item 3; the proxy options
and plain-HTTP registries are tested elsewhere): manifest --platform in both orders, search --no-trunc and
--index, images --no-trunc and --all, load - (stdin), a bare run --pull, run -P, --dri, --kernel, --dns,
--dns-search, --volumes-from, setup's report and its refusal of S1."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from tests.fixtures.cli import container as _container
from tests.fixtures.cli import ok
from tests.support.procs import tun_usable as _tun_usable
from udocker.modetable import NAMES as MODES


def one_error(result, status, *, hint=False):
    """The one `error:` line of a failure (and, with `hint`, maybe a `hint:` line after it)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert lines[1:] == [] or (hint and len(lines) == 2 and lines[1].startswith("hint: ")), result.stderr
    return lines[0]


@pytest.fixture
def busybox(registry):
    return registry.ref("test/busybox:latest")


def _record(udocker, name):
    rootfs = ok(udocker("inspect", "-p", name)).strip()
    return os.path.join(os.path.dirname(rootfs), "container.json")


# -- setup -------------------------------------------------------------------------------------------------
def test_setup_without_options_prints_execmode_as_13(udocker, busybox):
    name = _container(udocker, busybox, "P2")
    lines = ok(udocker("setup", name)).splitlines()
    assert lines == ["execmode: P2", "nvidiamode: False"]


def test_setup_refuses_singularity_in_one_line_naming_the_modes(udocker, busybox):
    name = _container(udocker, busybox)
    line = one_error(udocker("setup", "--execmode=S1", name), 2)
    assert "S1" in line and "Singularity" in line and all(mode in line for mode in MODES)
    assert ok(udocker("setup", name)).startswith("execmode: P1\n")
    assert ok(udocker("setup", "--execmode=p2", name)) == ""  # lower case still accepted


# -- images, search, manifest, load --------------------------------------------------------------------
def test_images_no_trunc_shows_full_ids_and_all_is_accepted(udocker, busybox):
    ok(udocker("-q", "pull", busybox))
    image_id = json.loads(ok(udocker("images", "--json")))[0]["id"]
    assert image_id.startswith("sha256:") and image_id not in ok(udocker("images"))
    assert image_id in ok(udocker("images", "--no-trunc"))
    assert busybox in ok(udocker("images", "--all")) and busybox in ok(udocker("images", "-a", "-l"))


class _Index(http.server.BaseHTTPRequestHandler):
    DESCRIPTION = "A very long description " + "x" * 80 + " END"

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"results": [{"repo_name": "someone/thing", "short_description": self.DESCRIPTION,
                                        "star_count": 7, "is_official": False}], "next": None}).encode()
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def index():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_search_index_and_no_trunc(udocker, index):
    url = f"http://127.0.0.1:{index.server_address[1]}"
    short = ok(udocker("search", f"--index={url}", "thing"))
    assert "someone/thing" in short and "END" not in short
    assert index.paths and index.paths[0].startswith("/v2/search/repositories?query=thing")
    whole = ok(udocker("search", "--no-trunc", "--index", url, "thing"))
    assert _Index.DESCRIPTION in whole


@pytest.mark.parametrize("order", ["subcommand", "group"])
def test_manifest_inspect_platform_in_both_orders(udocker, registry, order):
    ref = registry.ref("test/multiarch:latest")
    index = json.loads(ok(udocker("manifest", "inspect", ref)))
    assert "manifests" in index
    by_platform = {}
    for platform in ("linux/amd64", "linux/arm64/v8"):
        args = (["manifest", "inspect", f"--platform={platform}", ref] if order == "subcommand"
                else ["manifest", f"--platform={platform}", "inspect", ref])
        manifest = json.loads(ok(udocker(*args)))
        assert "manifests" not in manifest and manifest["layers"], manifest
        by_platform[platform] = manifest["config"]["digest"]
    assert len(set(by_platform.values())) == 2
    missing = udocker("manifest", "inspect", "--platform=linux/s390x", ref)
    assert missing.returncode != 0 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def _load(udocker, archive, *args):
    with open(archive, "rb") as stream:
        return subprocess.run([sys.executable, "-m", "udocker", "--repo", udocker.repo, "load", *args],
                              stdin=stream, env=udocker.env, capture_output=True, text=True, timeout=120)


def test_load_dash_reads_stdin(udocker, busybox, tmp_path):
    ok(udocker("-q", "pull", busybox))
    archive = str(tmp_path / "saved.tar")
    ok(udocker("save", "-o", archive, busybox))
    ok(udocker("rmi", busybox))
    loaded = _load(udocker, archive, "-")
    assert loaded.returncode == 0 and "Loaded image: " in loaded.stdout, loaded.stderr
    renamed = _load(udocker, archive, "-", "copy:1")
    assert renamed.returncode == 0 and "copy:1" in renamed.stdout, renamed.stderr
    again = _load(udocker, archive, "-i", "-", "copy:2")
    assert again.returncode == 0 and "copy:2" in again.stdout, again.stderr
    both = _load(udocker, archive, "-i", archive, "-")
    assert both.returncode == 2 and both.stderr.startswith("error: ")


# -- run -----------------------------------------------------------------------------------------------------
def test_bare_pull_means_missing_and_keeps_the_image(udocker, busybox):
    result = udocker("run", "--pull", "--rm", busybox, "echo", "pulled")
    assert (result.returncode, result.stdout) == (0, "pulled\n"), result.stderr
    result = udocker("run", "--rm", "--pull", busybox, "echo", "again")  # as 1.3 and docker: the word is the policy
    assert result.returncode == 125 and "invalid --pull policy" in result.stderr, result.stderr
    result = udocker("run", "--rm", "--pull", "never", busybox, "echo", "never")
    assert (result.returncode, result.stdout) == (0, "never\n"), result.stderr


def test_dri_is_accepted_and_binds_what_exists(udocker, busybox):
    name = _container(udocker, busybox)
    script = "test -d /dev/dri && echo dev; test -d /usr/lib/dri && echo lib; echo done"
    result = udocker("run", "--dri", "--nosysdirs", name, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    expected = (["dev"] if os.path.isdir("/dev/dri") else []) + (["lib"] if os.path.isdir("/usr/lib/dri") else [])
    assert result.stdout.split() == expected + ["done"]


def test_kernel_in_p1_emulates_or_says_in_one_line_why_not(udocker, busybox):
    name = _container(udocker, busybox)
    result = udocker("run", "--kernel=6.0.0", name, "uname", "-r")
    if result.returncode == 0:
        assert result.stdout == "6.0.0\n"
    else:
        line = one_error(result, 125)
        assert "--kernel" in line and "cannot emulate" in line
    refused = one_error(udocker("run", "--kernel=not a release", name, "true"), 125, hint=True)
    assert refused.startswith("error: invalid --kernel")


def _image(request, mode, busybox):
    """busybox (static) for P and R modes; fakechroot needs dynamic programs: the Debian image for F modes."""
    return request.getfixturevalue("debian_image").ref if mode.startswith("F") else busybox


@pytest.mark.parametrize("mode", ["F1", "R1"])
def test_kernel_elsewhere_is_refused_naming_the_p_modes(udocker, busybox, mode, request):
    name = _container(udocker, _image(request, mode, busybox), mode)
    line = one_error(udocker("run", "--kernel=6.0.0", name, "uname", "-r"), 125)
    assert "P1" in line and "P2" in line and mode in line


@pytest.mark.parametrize("mode", ["P1", "F1", "R1"])
def test_dns_and_dns_search_give_the_container_its_resolv_conf(udocker, busybox, mode, request):
    with open("/etc/resolv.conf", "rb") as stream:
        host_before = stream.read()
    name = _container(udocker, _image(request, mode, busybox), mode)
    result = udocker("run", "--dns=192.0.2.53", "--dns", "2001:db8::53", "--dns-search=example.org", name,
                     "cat", "/etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("nameserver")] == ["nameserver 192.0.2.53",
                                                                         "nameserver 2001:db8::53"]
    assert [line for line in lines if line.startswith(("search", "domain"))] == ["search example.org"]
    only_search = ok(udocker("run", "--dns-search=a.example", name, "cat", "/etc/resolv.conf")).splitlines()
    assert "search a.example" in only_search
    with open("/etc/resolv.conf", "rb") as stream:
        assert stream.read() == host_before
    assert one_error(udocker("run", "--dns=not-an-ip", name, "true"), 125, hint=True).startswith("error: invalid --dns")


def test_volumes_from_binds_the_other_containers_volumes(udocker, busybox, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("shared\n")
    first = _container(udocker, busybox, name="first")
    ok(udocker("run", "-v", f"{data}:/data", first, "true"))
    ok(udocker("create", "--name=second", busybox))
    ok(udocker("setup", "--execmode=P1", "second"))
    assert ok(udocker("run", "--volumes-from=first", "second", "cat", "/data/file")) == "shared\n"
    # the second container's run records the inherited volume too: a third inherits it through the second
    ok(udocker("create", "--name=third", busybox))
    ok(udocker("setup", "--execmode=P1", "third"))
    assert ok(udocker("run", "--volumes-from", "second", "third", "cat", "/data/file")) == "shared\n"
    missing = udocker("run", "--volumes-from=nosuch", "second", "true")
    assert missing.returncode == 125 and missing.stderr.startswith("error: container not found: nosuch")


def _expose(udocker, name, *ports):
    path = _record(udocker, name)
    with open(path, encoding="utf-8") as stream:
        record = json.load(stream)
    record.setdefault("config", {})["ExposedPorts"] = {port: {} for port in ports}
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(record, stream)


def test_publish_all_on_the_hosts_network_needs_nothing(udocker, busybox):
    name = _container(udocker, busybox)
    _expose(udocker, name, "5000/tcp")
    result = udocker("run", "-P", name, "echo", "ok")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    assert ok(udocker("run", "--publish-all", name, "true")) == ""


def test_publish_all_in_r1_with_a_private_network_uses_free_host_ports(udocker, busybox):
    if not shutil.which("slirp4netns") or not _tun_usable():
        if os.environ.get("CI"):
            pytest.fail("slirp4netns or /dev/net/tun is not usable (.ci/run sets them up)")
        pytest.skip("slirp4netns or /dev/net/tun is not usable")
    name = _container(udocker, busybox, "R1")
    _expose(udocker, name, "5000/tcp", "53/udp")
    result = udocker("run", "-P", "--network=private", name, "echo", "ok")
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
    lines = result.stderr.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["published: 5000/tcp on host port",
                                                          "published: 53/udp on host port"], lines
    assert all(line.rsplit(" ", 1)[1].isdigit() for line in lines)


# -- install -------------------------------------------------------------------------------------------------
def test_install_with_nothing_to_install_reports_the_hosts_engines(udocker):
    from udocker.engines import locate

    if locate.wheel_bundle() is not None:
        pytest.skip(f"a udocker_engines wheel is installed ({locate.wheel_bundle()})")
    result = udocker("install", env={"UDOCKER_ENGINES_URL": None})
    assert result.stderr.startswith("note: nothing to install "), result.stderr
    assert not os.path.exists(os.path.join(udocker.repo, "engines"))
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ENGINE", "VERSION", "FROM", "PATH"]
    proot = next(line.split() for line in lines if line.startswith("proot "))
    if shutil.which("proot"):
        assert proot[-1] == os.path.realpath(shutil.which("proot")) or proot[-1] == shutil.which("proot")
    modes = [line.split()[0] for line in lines if line[:2] in {m[:2] for m in MODES} and line[2:3] == " "]
    assert modes == list(MODES)
    assert result.returncode == (0 if " usable" in result.stdout else 1)
