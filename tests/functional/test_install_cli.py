"""udocker install with a real bundle built by engines/build-bundle.sh from this machine's Debian packages
(proot, runc, crun, patchelf, libfakechroot; .ci/run installs them)."""

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import TOP, require
from udocker.engines import install

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
CLEAN = {"PATH": "/usr/bin:/bin"}  # the whole environment of the engines run below: no LD_LIBRARY_PATH


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(tarball, directory) of the bundle built into a temporary directory."""
    path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"  # runc is in /usr/sbin
    for tool in ("proot", "runc", "crun", "patchelf", "dpkg-query", "fakechroot"):  # fakechroot needs libfakechroot
        require(shutil.which(tool, path=path) or tool)
    out = tmp_path_factory.mktemp("bundle")
    env = {"PATH": path, "LANG": "C"}
    result = subprocess.run(["sh", os.path.join(TOP, "engines", "build-bundle.sh"), "-o", str(out)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    tarball = result.stdout.strip()
    assert re.fullmatch(r".*/udocker-engines-[a-z0-9]+\.tar\.gz", tarball) and os.path.isfile(tarball)
    return tarball, tarball[:-len(".tar.gz")]


def _matches_shipped(directory):
    ours = install.read_manifest(os.path.join(directory, "manifest.yaml"))
    shipped = install.load_shipped()
    return ours.architecture == shipped.architecture and all(
        shipped.files.get(name) == digest for name, digest in ours.files.items())


def _install(udocker, source):
    """Install the bundle: on a machine whose packages are those of the shipped list, without any option;
    elsewhere the plain install must refuse, naming a file, and --trust-bundle-manifest must accept it."""
    result = udocker("install", f"--from={source}", env=NO_NETWORK)
    if _matches_shipped(source if os.path.isdir(source) else source[:-len(".tar.gz")]):
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1] == f"verified: all {result.stdout.split()[1]} files against the " \
                                                "shipped engines list"
        return result
    assert result.returncode == 1 and re.match(r"error: (checksum mismatch for|.* is not in the shipped)",
                                               result.stderr), result.stderr
    result = udocker("install", f"--from={source}", "--trust-bundle-manifest", env=NO_NETWORK)
    assert result.returncode == 0, result.stderr
    assert "against the bundle's manifest only" in result.stdout
    return result


def _run_clean(path, *args):
    return subprocess.run([path, *args], env=CLEAN, capture_output=True, text=True, timeout=30, check=False)


def test_install_bundle_and_run_its_engines(udocker, bundle, tmp_path):
    tarball, directory = bundle
    result = _install(udocker, tarball)
    assert result.stdout.startswith(f"installed {len(install.read_manifest(directory + '/manifest.yaml').files)}"
                                    f" files into {udocker.repo}/engines: proot ")
    engines = os.path.join(udocker.repo, "engines")
    for name in ("bin/proot", "bin/runc", "bin/crun", "bin/patchelf", "bin/slirp4netns", "lib/libtalloc.so.2",
                 "lib/fakechroot/libfakechroot.so", "manifest.yaml"):
        assert os.path.isfile(os.path.join(engines, name)), name
    with open(os.path.join(engines, "installed.json"), encoding="utf-8") as stream:
        record = json.load(stream)  # every executable starts through the bundled loader, with the bundled lib/
    assert (record["origin"], record["from"]) == ("bundle", tarball)
    assert sorted(record["patched"]) == ["bin/crun", "bin/patchelf", "bin/proot", "bin/runc", "bin/slirp4netns"]
    for name, patched in record["patched"].items():
        assert patched["interpreter"] == f"{engines}/lib/ld-linux-x86-64.so.2" and patched["rpath"] == f"{engines}/lib"
        assert install.sha256_file(os.path.join(engines, name)) == patched["sha256"] != patched["bundle_sha256"]
    run = _run_clean(os.path.join(engines, "bin", "proot"), "--version")
    assert run.returncode == 0 and "5.1" in run.stdout + run.stderr, run.stderr
    hostile = tmp_path / "module-libs"  # what an HPC module's LD_LIBRARY_PATH may hold: other builds of them
    hostile.mkdir()
    for name in os.listdir(os.path.join(engines, "lib")):
        (hostile / name).write_bytes(b"not a library")
    for engine in ("proot", "runc", "crun", "patchelf"):  # DT_RPATH is searched before LD_LIBRARY_PATH
        run = subprocess.run([os.path.join(engines, "bin", engine), "--version"], capture_output=True, text=True,
                             env=dict(CLEAN, LD_LIBRARY_PATH=str(hostile)), timeout=30, check=False)
        assert run.returncode == 0, (engine, run.stderr)
    trust = [] if _matches_shipped(directory) else ["--trust-bundle-manifest"]
    again = udocker("install", f"--from={directory}", *trust, env=NO_NETWORK)
    assert again.returncode == 0 and again.stdout.startswith(f"engines already installed in {engines}: ")


def test_report_format(udocker, bundle):
    _install(udocker, bundle[0])
    result = udocker("install", env=dict(NO_NETWORK, PATH="/nonexistent"))  # current: reports, changes nothing
    assert result.returncode == 0, result.stderr
    engines, modes = result.stdout.split("\n\n")
    lines = engines.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["ENGINE", "VERSION", "FROM", "PATH"]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line) for line in lines[1:]}
    assert rows["proot"] == ["proot", "5.1.0", "bundle", f"{udocker.repo}/engines/bin/proot"]
    assert rows["fakechroot"][2:] == ["bundle", f"{udocker.repo}/engines/lib/fakechroot/libfakechroot.so"]
    assert rows["slirp4netns"][2:] == ["bundle", f"{udocker.repo}/engines/bin/slirp4netns"], rows
    lines = modes.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["MODE", "ENGINES", "STATUS", "DETAIL"]
    assert [line.split()[0] for line in lines[1:]] == ["P1", "P2", "F1", "F2", "F3", "F4", "R1", "R2", "R3"]
    assert all(line.split()[2] in ("usable", "unusable", "found", "missing") for line in lines[1:])
    purged = udocker("install", "--purge")
    assert purged.returncode == 0 and purged.stdout.startswith("removed ")
    assert not os.path.exists(os.path.join(udocker.repo, "engines"))


def test_tampered_bundle_installs_nothing(udocker, bundle, tmp_path):
    copy = shutil.copytree(bundle[1], str(tmp_path / "tampered"))
    path = os.path.join(copy, "bin", "proot")
    with open(path, "r+b") as stream:
        stream.seek(1000)
        byte = stream.read(1)
        stream.seek(1000)
        stream.write(bytes([byte[0] ^ 0xFF]))
    result = udocker("install", f"--from={copy}", "--trust-bundle-manifest", env=NO_NETWORK)
    assert result.returncode == 1
    assert result.stderr.startswith("error: checksum mismatch for bin/proot: sha256 "), result.stderr
    assert not os.path.exists(os.path.join(udocker.repo, "engines"))
    assert os.listdir(os.path.join(udocker.repo, "tmp")) in ([], [".lock"])
