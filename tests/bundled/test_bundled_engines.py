"""udocker runs with only its own engines: from the wheel installed next to it, after `install --from` the
tarball, and after `install --from http://...` (issue 7). The host's proot, runc, crun, patchelf and
libfakechroot are hidden (conftest.py checks). Each way proves that the bundle is what runs: the origin in
`udocker info --json`, and /proc/PID/maps of the running engine naming only files of the engines folder."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import UdockerRunner

pytestmark = pytest.mark.slow

WAYS = ("wheel", "file", "url")
ORIGIN = {"wheel": "wheel", "file": "bundle", "url": "bundle"}


class VenvRunner(UdockerRunner):
    """udocker run by the python of another virtual environment."""

    def __init__(self, tmp_path, python):
        super().__init__(tmp_path)
        self.python = python

    def __call__(self, *args, **kwargs):
        real = sys.executable
        sys.executable = self.python  # UdockerRunner starts `sys.executable -m udocker`
        try:
            return super().__call__(*args, **kwargs)
        finally:
            sys.executable = real


def _fresh_venv(tmp_path, wheel):
    """A new venv from Debian's python with the wheel installed by pip (offline); udocker and its
    dependencies come from this test's environment through a .pth file, udocker itself from PYTHONPATH."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    with open(os.path.join(site, "udocker-test-deps.pth"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(ours) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q",
                    wheel], check=True, timeout=300)
    return python


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(bundle_dir):
    """http://127.0.0.1:PORT/ serving the bundle directory (tarball and .sha256)."""
    handler = functools.partial(_Quiet, directory=bundle_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _provision(way, tmp_path, wheel, tarball, served_url):
    if way == "wheel":
        return VenvRunner(tmp_path, _fresh_venv(tmp_path, wheel))
    udocker = UdockerRunner(tmp_path)
    source = tarball if way == "file" else served_url + os.path.basename(tarball)
    result = udocker("install", f"--from={source}", "--trust-bundle-manifest", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"installed {_file_count(tarball)} files into {udocker.repo}/engines: proot ")
    return udocker


def _file_count(tarball):
    with open(os.path.join(tarball[:-len(".tar.gz")], "manifest.yaml"), encoding="utf-8") as stream:
        return stream.read().split("\nfiles:\n")[1].count("sha256:")


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def _check_origins(udocker, way):
    engines = {e["name"]: e for e in json.loads(_ok(udocker("info", "--json")))["engines"]}
    folder = os.path.join(udocker.repo, "engines")
    for name in ("proot", "runc", "crun", "patchelf", "fakechroot", "slirp4netns"):
        assert engines[name]["origin"] == ORIGIN[way], engines[name]
        assert engines[name]["path"].startswith(folder + "/"), engines[name]
    return folder


def _mapped_files(pid):
    with open(f"/proc/{pid}/maps", encoding="utf-8") as stream:
        names = {line.split(None, 5)[5].strip() for line in stream if len(line.split(None, 5)) == 6}
    return {n for n in names if n.startswith("/") and not n.startswith(("/dev/", "/memfd:"))}


def _snapshot(udocker, container):
    """[(exe, mapped files)] of `udocker run CONTAINER sleep 30` and all its descendants, taken once the
    program runs (a process whose command line ends in the argument 30, other than udocker's python)."""
    command = [udocker.python if isinstance(udocker, VenvRunner) else sys.executable, "-m", "udocker",
               "--repo", udocker.repo, "run", container, "sleep", "30"]
    process = subprocess.Popen(command, env=udocker.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    top = psutil.Process(process.pid)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if any(_is_program(proc) for proc in [top] + top.children(recursive=True)):
                time.sleep(0.5)  # let the engine settle (runc init has exec'd the program)
                return [(exe, _mapped_files(proc.pid)) for proc in [top] + top.children(recursive=True)
                        for exe in [_exe(proc)] if exe]
            time.sleep(0.1)
        raise AssertionError(f"the program did not start: {process.poll()} {process.stderr.read(4096)!r}")
    finally:
        for proc in [top] + top.children(recursive=True):
            try:
                proc.kill()
            except psutil.Error:
                pass
        process.wait(timeout=30)


def _exe(proc):
    try:
        return proc.exe()
    except psutil.Error:
        return None


def _is_program(proc):
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and cmdline[-1] == "30" and "udocker" not in cmdline


def _engine(snapshot, folder, name):
    found = [(exe, files) for exe, files in snapshot if exe == f"{folder}/bin/{name}"]
    assert found, f"no {name} of {folder} among {[exe for exe, _ in snapshot]}"
    return found[0]


def _assert_only_bundle(engine, folder):
    exe, files = engine
    outside = sorted(f for f in files if not f.startswith(folder + "/"))
    assert not outside, f"{exe} maps files outside the bundle: {outside}"
    assert f"{folder}/lib/libc.so.6" in files and f"{folder}/lib/ld-linux-x86-64.so.2" in files, files


@pytest.mark.parametrize("way", WAYS)
def test_test_images_run_in_auto_p1_p2_r1(way, tmp_path, registry, wheel, tarball, served):
    udocker = _provision(way, tmp_path, wheel, tarball, served)
    image = registry.ref("test/busybox:latest")
    assert _ok(udocker("run", "--rm", image, "echo", "auto ok", timeout=300)) == "auto ok\n"
    folder = _check_origins(udocker, way)  # the wheel was installed into the repository on first use
    for mode in ("P1", "P2", "R1"):
        _ok(udocker("create", f"--name=c{mode}", image))
        _ok(udocker("setup", f"--execmode={mode}", f"c{mode}"))
        assert _ok(udocker("run", f"c{mode}", "sh", "-c", f"echo {mode} ok")) == f"{mode} ok\n"
        debug = udocker("-D", "run", f"c{mode}", "true")
        assert debug.returncode == 0 and f"debug: mode {mode}: " in debug.stderr, debug.stderr
        assert f" {folder}/bin/{'runc' if mode == 'R1' else 'proot'} " in debug.stderr, debug.stderr
    for mode in ("P1", "R1"):
        _assert_only_bundle(_engine(_snapshot(udocker, f"c{mode}"), folder, "proot" if mode == "P1" else "runc"),
                            folder)
    # R1's private network: the bundle's slirp4netns (the host's is hidden) gives the container its tap0
    routes = _ok(udocker("run", "--network=private", "cR1", "cat", "/proc/net/route"))
    assert "tap0" in routes, routes


@pytest.mark.parametrize("way", WAYS)
def test_debian_image_runs_in_f1_and_f3(way, tmp_path, debian_image, wheel, tarball, served):
    udocker = _provision(way, tmp_path, wheel, tarball, served)
    _ok(udocker("pull", debian_image.ref, timeout=300))
    folder = _check_origins(udocker, way)
    for mode in ("F1", "F3"):
        _ok(udocker("create", f"--name=d{mode}", debian_image.ref, timeout=300))
        _ok(udocker("setup", f"--execmode={mode}", f"d{mode}", timeout=300))
        assert _ok(udocker("run", f"d{mode}", "sh", "-c", "echo $0 ok; cat /etc/debian_version")).startswith(
            "sh ok\n12.")
    snapshot = _snapshot(udocker, "dF1")  # the container's sleep, run by its own loader with the bundle's library
    program = [files for _, files in snapshot if f"{folder}/lib/fakechroot/libfakechroot.so" in files]
    assert len(program) == 1, snapshot
    assert {f for f in program[0] if f.startswith(folder + "/")} == {f"{folder}/lib/fakechroot/libfakechroot.so"}


def test_bundled_proot_runs_in_a_chroot_without_any_c_library(tmp_path, tarball):
    """busybox-static, the installed engines at their own path and a busybox rootfs, nothing else: proot
    still starts (through the bundle's loader) and runs the image's shell."""
    udocker = UdockerRunner(tmp_path)
    _ok(udocker("install", f"--from={tarball}", "--trust-bundle-manifest", timeout=300))
    engines = os.path.join(udocker.repo, "engines")
    root = tmp_path / "chroot"
    for directory in ("bin", "proc", "dev", "tmp", "rootfs/bin", "rootfs/tmp", engines.lstrip("/")):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    shutil.copy2("/bin/busybox", root / "rootfs" / "bin" / "busybox")
    os.symlink("busybox", root / "rootfs" / "bin" / "sh")
    (root / "tmp").chmod(0o1777)
    libraries = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith(("libc.", "ld-"))]
    assert not libraries, libraries  # the engines folder is still empty here: it is bound below
    script = ('set -e; mount --bind "$1" "$2$1"; mount --rbind /proc "$2/proc"; mount --rbind /dev "$2/dev"; '
              'exec chroot "$2" "$1/bin/proot" -r /rootfs /bin/sh -c "echo hello from \\$(busybox uname -s)"')
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
                             "/bin/busybox", "sh", "-c", script, "sh", engines, str(root)],
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from Linux\n"
