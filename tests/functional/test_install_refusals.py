"""udocker install --force --from a tampered copy of the real bundle tarball is refused and leaves the engines
installed before byte for byte as they were, and tmp/ clean; an install killed with SIGKILL at any moment
leaves the old engines or the new ones, whole."""

import copy
import io
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from tests.fixtures import engine_bundle
from tests.fixtures.engine_bundle import check_complete, one_error, tmp_leftovers, tree_state, trust_flags

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
POLL = 0.0005  # seconds between looks at tmp/ while an install runs
POLLS = 40000  # looks at most: a try that sees none of its moments ends anyway, then is killed


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> engine_bundle.Bundle:
    return engine_bundle.built(tmp_path_factory)


@pytest.fixture
def trust(bundle):
    return trust_flags(bundle.directory)


@pytest.fixture(scope="module")
def members(bundle):
    """[(TarInfo, bytes or None)] of the bundle tarball, in order; copy a TarInfo before changing it."""
    with tarfile.open(bundle.tarball, "r:gz") as archive:
        return [(m, archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()]


def _write(path, members):
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for info, data in members:
            if data is not None and info.size != len(data):
                info = copy.copy(info)
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"tampered\n", **fields):
    info = tarfile.TarInfo(name)
    info.mode = 0o755
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (data if info.isfile() else None)


def _flip_byte(members, top, escape):
    out = []
    for info, data in members:
        if info.name == f"{top}/bin/proot":
            data = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
        out.append((info, data))
    return out


TAMPERS = {  # name: (change of the member list, the error line's pattern)
    "one-byte-changed": (_flip_byte, r"checksum mismatch for bin/proot: sha256 [0-9a-f]{64}, the bundle's "
                                     r"manifest says [0-9a-f]{64}"),
    "extra-file": (lambda m, top, escape: m + [_file(f"{top}/bin/extra")],
                   r"file not in the bundle's manifest: bin/extra"),
    "extra-file-outside-bin-lib": (lambda m, top, escape: m + [_file(f"{top}/etc/extra")],
                                   r"unsafe or unexpected file name 'etc/extra' in .*"),
    "dot-dot-member": (lambda m, top, escape: m + [_file(f"{top}/../../../../{os.path.basename(escape)}")],
                       r"unsafe or unexpected file name '\.\./\.\./\.\./\.\./escaped' in .*"),
    "absolute-member": (lambda m, top, escape: m + [_file(escape)], r"unsafe or unexpected file name '.*' in .*"),
    "symlink-out": (lambda m, top, escape: m + [_file(f"{top}/lib/libpasswd.so", type=tarfile.SYMTYPE,
                                                      linkname="/etc/passwd")],
                    r"bundle member udocker-engines-[a-z0-9]+/lib/libpasswd\.so is not a regular file or directory"),
    "symlink-replaces-a-file": (lambda m, top, escape: [
        (i, d) if i.name != f"{top}/lib/libtalloc.so.2" else _file(i.name, type=tarfile.SYMTYPE,
                                                                   linkname="/etc/passwd") for i, d in m],
        r"bundle member udocker-engines-[a-z0-9]+/lib/libtalloc\.so\.2 is not a regular file or directory"),
    "hard-link": (lambda m, top, escape: m + [_file(f"{top}/lib/libproot.so", type=tarfile.LNKTYPE,
                                                    linkname=f"{top}/bin/proot")],
                  r"bundle member udocker-engines-[a-z0-9]+/lib/libproot\.so is not a regular file or directory"),
    "hard-link-out": (lambda m, top, escape: m + [_file(f"{top}/lib/libpasswd.so", type=tarfile.LNKTYPE,
                                                        linkname="/etc/passwd")],
                      r"bundle member udocker-engines-[a-z0-9]+/lib/libpasswd\.so is not a regular file or "
                      r"directory"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_tarball_leaves_the_engines_as_they_were(udocker, bundle, members, trust, tmp_path, tamper):
    change, pattern = TAMPERS[tamper]
    installed = udocker("install", f"--from={bundle.tarball}", *trust, env=NO_NETWORK)
    assert installed.returncode == 0, installed.stderr
    engines = os.path.join(udocker.repo, "engines")
    before = tree_state(engines)
    escape = str(tmp_path / "escaped")  # ../../../../ from REPO/tmp/engines-*/new is tmp_path
    top = os.path.basename(bundle.directory)
    tampered = _write(str(tmp_path / bundle.name), change(list(members), top, escape))
    result = udocker("install", "--force", "--trust-bundle-manifest", f"--from={tampered}", env=NO_NETWORK)
    assert re.fullmatch(f"error: {pattern}", one_error(result)), result.stderr
    assert tree_state(engines) == before
    assert tmp_leftovers(udocker.repo) == []
    assert not os.path.lexists(escape)
    check_complete(engines)


def _repacked(members, path):
    """The bundle with a comment added to its manifest: the same engines, but not the same bundle."""
    return _write(path, [(i, d + b"# repacked for a test\n" if i.name.endswith("/manifest.yaml") else d)
                         for i, d in members])


def _scratch(repo):
    tmp = os.path.join(repo, "tmp")
    names = os.listdir(tmp) if os.path.isdir(tmp) else []
    return next((os.path.join(tmp, n) for n in names if n.startswith("engines-")), None)


MOMENTS = [  # (what, a test of the install's scratch directory, seconds to wait after it holds)
    ("scratch directory made", lambda s: True, 0),
    ("unpacking", lambda s: os.path.isdir(os.path.join(s, "new", "lib")), 0),
    ("unpacked", lambda s: os.path.isfile(os.path.join(s, "new", "manifest.yaml")), 0),
    ("relocating", lambda s: os.path.isfile(os.path.join(s, "patchelf-tool")), 0),
    ("recorded", lambda s: os.path.isfile(os.path.join(s, "new", "installed.json")), 0),
    ("swapping", lambda s: os.path.exists(os.path.join(s, "old")), 0),
    ("random", lambda s: True, None),
    ("random", lambda s: True, None),
]


def test_kill_at_any_moment_leaves_old_or_new_engines(udocker, bundle, members, trust, tmp_path):
    tarballs = [bundle.tarball, _repacked(members, str(tmp_path / bundle.name))]
    with open(os.path.join(bundle.directory, "manifest.yaml"), "rb") as stream:
        manifests = [stream.read()]
    manifests.append(manifests[0] + b"# repacked for a test\n")
    first = udocker("install", f"--from={tarballs[0]}", *trust, env=NO_NETWORK)
    assert first.returncode == 0, first.stderr
    engines, current, killed = os.path.join(udocker.repo, "engines"), 0, []
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"random delays from seed {seed}")  # shown when the test fails
    for what, holds, delay in MOMENTS:
        new = 1 - current
        command = [sys.executable, "-m", "udocker", "--repo", udocker.repo, "install", "--force",
                   f"--from={tarballs[new]}", *trust]
        process = subprocess.Popen(command, env=dict(udocker.env, **NO_NETWORK), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            for _ in range(POLLS):
                scratch = _scratch(udocker.repo)
                if process.poll() is not None or (scratch and holds(scratch)):
                    break
                time.sleep(POLL)
            if process.poll() is None:
                time.sleep(rng.uniform(0, 0.5) if delay is None else delay)
                process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            status = process.wait(timeout=60)
        if status == -signal.SIGKILL:
            killed.append(what)
        else:
            assert status == 0, (what, status)
        now = manifests.index(check_complete(engines))  # old or new, whole
        assert now == new or status == -signal.SIGKILL, (what, seed)
        again = udocker("install", f"--from={tarballs[now]}", *trust, env=NO_NETWORK)
        assert again.returncode == 0, (what, seed, again.stderr)
        assert again.stdout.startswith(f"engines already installed in {engines}: "), (what, seed, again.stdout)
        assert tmp_leftovers(udocker.repo) == [], (what, seed)  # the killed install's scratch is gone
        current = now
    print(f"killed while {', '.join(killed)}")
    assert len(killed) >= 4, killed  # most tries were killed half way: the test tested something



KILL_AFTER_RENAME = """
import os, signal, sys
engines, rename = sys.argv[1], os.rename
def rename_then_die(source, destination, *args, **kwargs):
    rename(source, destination, *args, **kwargs)
    if os.path.abspath(source) == engines:  # the engines folder has just been moved away: die now
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename_then_die
from udocker.cli import main
sys.argv[1:2] = []
main()
"""


def test_kill_right_after_the_old_engines_are_moved(udocker, bundle, members, trust, tmp_path):
    """The instant that polling cannot catch: a process that dies right after renaming the engines folder
    (to put the new one in its place) must not leave the repository without engines."""
    first = udocker("install", f"--from={bundle.tarball}", *trust, env=NO_NETWORK)
    assert first.returncode == 0, first.stderr
    engines = os.path.join(udocker.repo, "engines")
    with open(os.path.join(engines, "manifest.yaml"), "rb") as stream:
        old = stream.read()
    new = _repacked(members, str(tmp_path / bundle.name))
    command = [sys.executable, "-c", KILL_AFTER_RENAME, engines, "--repo", udocker.repo, "install", "--force",
               f"--from={new}", *trust]
    result = subprocess.run(command, env=dict(udocker.env, **NO_NETWORK), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode in (0, -signal.SIGKILL), result.stderr
    assert check_complete(engines) in (old, old + b"# repacked for a test\n")
    again = udocker("install", env=NO_NETWORK)  # no wheel, no engines_url: reports the engines there
    assert again.returncode == 0, again.stderr
    assert tmp_leftovers(udocker.repo) == []
