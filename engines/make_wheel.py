"""Write the engine bundle directory made by build-bundle.sh as a wheel, `udocker_engines`, that pip installs on
any Linux of the bundle's architecture (the bundle carries its own C library, so the wheel claims every
glibc and musl Linux: manylinux1 / manylinux_2_5 and musllinux_1_1 tags, plus the generic linux tag).

usage: python3 engines/make_wheel.py BUNDLE_DIR OUT_DIR      (prints the wheel's path)

The wheel holds the package udocker_engines (its BUNDLE is the bundle directory, manifest.yaml included) and
its dist-info. udocker finds it on sys.path and installs the engines from it into the repository on first use
(`udocker install`, or automatically when the repository has no engines). Standard library only; the output
is reproducible (sorted members, fixed times).
"""

import base64
import hashlib
import os
import re
import stat
import sys
import zipfile

NAME = "udocker_engines"
TAGS = {"x86_64": ("manylinux1_x86_64", "manylinux_2_5_x86_64", "musllinux_1_1_x86_64", "linux_x86_64"),
        "aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "musllinux_1_1_aarch64", "linux_aarch64")}
EPOCH = (1980, 1, 1, 0, 0, 0)
INIT = '''"""The udocker engine bundle (proot, runc, crun, patchelf, libfakechroot with their C library), as data.
udocker installs it into its repository; nothing here is meant to be imported by other programs."""

import os

BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundle")
'''


def _version(top):
    with open(os.path.join(top, "udocker", "__init__.py"), encoding="utf-8") as stream:
        return re.search(r'__version__ = "([^"]+)"', stream.read()).group(1)


def _machine(bundle):
    with open(os.path.join(bundle, "manifest.yaml"), encoding="utf-8") as stream:
        match = re.search(r"^machine: (\S+)$", stream.read(), re.M)
    if not match or match.group(1) not in TAGS:
        sys.exit(f"make_wheel: no wheel tags for the bundle's machine ({match and match.group(1)})")
    return match.group(1)


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _members(bundle, version, tag):
    """(archive name, bytes, executable) of every member but RECORD, sorted."""
    members = [(f"{NAME}/__init__.py", INIT.encode(), False)]
    for directory, dirs, names in os.walk(bundle):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            with open(path, "rb") as stream:
                data = stream.read()
            rel = os.path.relpath(path, bundle)
            members.append((f"{NAME}/bundle/{rel}", data, bool(os.stat(path).st_mode & stat.S_IXUSR)))
    info = f"{NAME}-{version}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: udocker-engines\nVersion: {version}\n"
                "Summary: Self-contained engines for udocker (PRoot, runc, crun, patchelf, libfakechroot)\n"
                "License: various (see each engine's Debian package)\nRequires-Python: >=3.9\n")
    wheel = "Wheel-Version: 1.0\nGenerator: udocker make_wheel\nRoot-Is-Purelib: false\n"
    wheel += "".join(f"Tag: py3-none-{one}\n" for one in tag.split("."))
    members += [(f"{info}/METADATA", metadata.encode(), False), (f"{info}/WHEEL", wheel.encode(), False),
                (f"{info}/top_level.txt", f"{NAME}\n".encode(), False)]
    return members, info


def write(bundle, out_dir, top):
    version = _version(top)
    tag = ".".join(TAGS[_machine(bundle)])
    members, info = _members(bundle, version, tag)
    record = "\n".join([_record_line(n, d) for n, d, _ in members] + [f"{info}/RECORD,,"]) + "\n"
    members.append((f"{info}/RECORD", record.encode(), False))
    path = os.path.join(out_dir, f"{NAME}-{version}-py3-none-{tag}.whl")
    with zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, executable in members:
            entry = zipfile.ZipInfo(name, EPOCH)
            entry.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    os.replace(path + ".part", path)
    return path


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(write(os.path.abspath(argv[1]), os.path.abspath(argv[2]), top))


if __name__ == "__main__":
    main(sys.argv)
