"""engines.install: bundle verification against its manifest and the shipped list, atomic install, purge,
and the per-mode report; on small synthetic bundles (the real one is built in tests/functional)."""

import ast
import hashlib
import json
import os
import tarfile

import pytest

from udocker.config import Config
from udocker.engines import install, locate, ocirt, report
from udocker.errors import DigestMismatch, EngineError, EngineUnavailable
from udocker.paths import Layout

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = {"bin/proot": b"#!/bin/sh\necho proot 9.9.9\n", "lib/libtalloc.so.2": b"talloc",
         "lib/fakechroot/libfakechroot.so": b"fakechroot"}


def _manifest(files, *, arch="amd64", machine=None, loader=None):
    lines = ["format: 1", f"architecture: {arch}", f"machine: {machine or os.uname().machine}",
             *([f"loader: {loader}"] if loader else []), "engines:", "  proot:", '    version: "9.9.9"',
             "    source: proot 9.9.9-1", "    files: [bin/proot, lib/libtalloc.so.2]", "files:"]
    for name, data in sorted(files.items()):
        lines += [f"  {name}:", f"    sha256: {hashlib.sha256(data).hexdigest()}", "    source: x 1"]
    return "\n".join(lines) + "\n"


def _bundle(root, files=FILES, manifest_files=None, **kwargs):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "manifest.yaml").write_text(_manifest(manifest_files or files, **kwargs))
    return root


@pytest.fixture
def layout(tmp_path):
    layout = Layout(str(tmp_path / "repo"))
    for path in (layout.tmp, layout.locks):
        os.makedirs(path)
    return layout


@pytest.fixture
def shipped(tmp_path):
    path = tmp_path / "shipped.yaml"
    path.write_text(_manifest(FILES))
    return str(path)


def test_shipped_list_is_packaged_as_data():
    with open(os.path.join(TOP, "engines", "manifest.yaml"), "rb") as one, open(install.SHIPPED, "rb") as two:
        assert one.read() == two.read()
    manifest = install.load_shipped()
    assert {"proot", "runc", "crun", "patchelf", "fakechroot"} <= set(manifest.engines)
    assert "bin/proot" in manifest.files and "lib/libtalloc.so.2" in manifest.files


def test_install_directory_then_identical_is_a_no_op(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "b")
    done = install.install_from(str(bundle), layout, shipped_path=shipped)
    assert done.changed and set(done.verified.checked_by.values()) == {"shipped list"}
    for name, data in FILES.items():
        assert (tmp_path / "repo/engines" / name).read_bytes() == data
    assert os.access(os.path.join(layout.engines, "bin/proot"), os.X_OK)
    assert not install.install_from(str(bundle), layout, shipped_path=shipped).changed
    assert [n for n in os.listdir(layout.tmp) if n != ".lock"] == []


def test_install_tarball_with_top_directory(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "udocker-engines-amd64")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as archive:
        archive.add(bundle, arcname="udocker-engines-amd64")
    install.install_from(str(tmp_path / "b.tar.gz"), layout, shipped_path=shipped)
    assert sorted(os.listdir(layout.engines)) == ["bin", "installed.json", "lib", "manifest.yaml"]


def test_tampered_file_is_named_and_nothing_installed(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "b")
    (bundle / "bin/proot").write_bytes(FILES["bin/proot"][:-2] + b"X\n")
    with pytest.raises(DigestMismatch, match="^checksum mismatch for bin/proot: "):
        install.install_from(str(bundle), layout, shipped_path=shipped)
    assert not os.path.exists(layout.engines)


def test_site_bundle_needs_trust_and_is_reported(tmp_path, layout, shipped):
    files = dict(FILES, **{"bin/proot": b"site build"})
    bundle = _bundle(tmp_path / "b", files)
    with pytest.raises(DigestMismatch, match="checksum mismatch for bin/proot: .* the shipped engines list says"):
        install.install_from(str(bundle), layout, shipped_path=shipped)
    assert not os.path.exists(layout.engines)
    done = install.install_from(str(bundle), layout, shipped_path=shipped, trust_bundle_manifest=True)
    assert done.verified.checked_by["bin/proot"] == "bundle manifest"
    assert done.verified.checked_by["lib/libtalloc.so.2"] == "shipped list"
    assert done.verified.differs_from_shipped == ["bin/proot"]


def test_files_outside_the_shipped_list_need_trust(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "b", dict(FILES, **{"lib/libextra.so.1": b"x"}))
    with pytest.raises(EngineError, match="lib/libextra.so.1 is not in the shipped engines list"):
        install.install_from(str(bundle), layout, shipped_path=shipped)


@pytest.mark.parametrize("change, message", [
    (lambda b: (b / "bin/extra").write_bytes(b"x"), "file not in the bundle's manifest: bin/extra"),
    (lambda b: (b / "lib/libtalloc.so.2").unlink(), "file missing from the bundle: lib/libtalloc.so.2"),
    (lambda b: os.symlink("/bin/sh", b / "bin/sh"), "bundle member bin/sh is not a regular file"),
    (lambda b: (b / "manifest.yaml").unlink(), "no manifest.yaml in"),
])
def test_malformed_bundles(tmp_path, layout, shipped, change, message):
    bundle = _bundle(tmp_path / "b")
    change(bundle)
    with pytest.raises(EngineError, match=message):
        install.install_from(str(bundle), layout, shipped_path=shipped)
    assert not os.path.exists(layout.engines)


def test_unsafe_tar_member_is_refused(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "b")
    with tarfile.open(tmp_path / "b.tar", "w") as archive:
        archive.add(bundle / "manifest.yaml", arcname="manifest.yaml")
        archive.add(bundle / "bin/proot", arcname="../evil")
    with pytest.raises(EngineError, match="unsafe or unexpected file name '../evil'"):
        install.install_from(str(tmp_path / "b.tar"), layout, shipped_path=shipped)
    assert not (tmp_path / "evil").exists()


def test_other_machine_and_a_stray_loader_are_refused(tmp_path, layout, shipped):
    with pytest.raises(EngineError, match="the bundle is for riscv64"):
        install.install_from(str(_bundle(tmp_path / "a", machine="riscv64")), layout, shipped_path=shipped)
    for loader in ("bin/proot", "lib/ld-missing.so.2"):
        with pytest.raises(EngineError, match="names a loader that is not one of its lib/ files"):
            install.install_from(str(_bundle(tmp_path / loader.replace("/", "_"), loader=loader)), layout,
                                 shipped_path=shipped)
    assert not os.path.exists(layout.engines)


def test_existing_installation_is_replaced_only_with_force(tmp_path, layout, shipped):
    install.install_from(str(_bundle(tmp_path / "a")), layout, shipped_path=shipped)
    other = _bundle(tmp_path / "b", {"bin/proot": FILES["bin/proot"]})
    with pytest.raises(EngineError, match="already installed"):
        install.install_from(str(other), layout, shipped_path=shipped)
    install.install_from(str(other), layout, shipped_path=shipped, force=True)
    assert not os.path.exists(os.path.join(layout.engines, "lib"))
    assert install.purge(layout) == 3 and not os.path.exists(layout.engines)
    assert install.purge(layout) == 0


def test_report_names_the_origin_of_installed_engines(tmp_path, layout, shipped, monkeypatch):
    monkeypatch.setattr(ocirt, "_PROBES", {})  # not what an earlier test in this process found for runc R2
    install.install_from(str(_bundle(tmp_path / "b")), layout, shipped_path=shipped)
    config = Config.load(environ={"UDOCKER_DIR": layout.topdir}, system_file="/nonexistent")
    engines = report.find_engines(config, layout, {"PATH": str(tmp_path / "empty")})
    by_name = {row.name: row for row in engines}
    assert (by_name["proot"].origin, by_name["proot"].version) == (install.BUNDLE, "9.9.9")
    assert by_name["runc"].path is None and by_name["runc"].problem == "runc not found"
    modes = {row.mode: row for row in report.check_modes(config, layout, engines)}
    assert (modes["R2"].status, modes["R2"].engine) == ("unusable", "runc/crun+proot")
    record = install.installed_record(layout)
    assert (record["origin"], record["from"], record["patched"]) == ("bundle", str(tmp_path / "b"), {})


def test_engines_relocated_for_another_path_are_reinstalled(tmp_path, layout, shipped):
    bundle = _bundle(tmp_path / "b")
    install.install_from(str(bundle), layout, shipped_path=shipped)
    record = install.installed_record(layout)
    record["patched"] = {"bin/proot": {"interpreter": "/old/home/.udocker/engines/lib/ld-linux-x86-64.so.2"}}
    with open(os.path.join(layout.engines, install.INSTALLED), "w", encoding="utf-8") as stream:
        json.dump(record, stream)  # as after `mv /old/home/.udocker REPO`
    assert install.moved_from(layout) == "/old/home/.udocker/engines"
    config = Config.load(environ={"UDOCKER_DIR": layout.topdir}, system_file="/nonexistent")
    row = report.find_engines(config, layout, {"PATH": ""})[0]
    assert row.problem.startswith("installed for /old/home/.udocker/engines: run 'udocker install'"), row
    done = install.install_from(str(bundle), layout, shipped_path=shipped)  # the same bundle: no --force needed
    assert done.changed and install.moved_from(layout) is None


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """A udocker_engines 'wheel' on sys.path holding a synthetic bundle."""
    site = tmp_path / "site"
    _bundle(site / "udocker_engines" / "bundle")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(locate, "_WHEEL", [])
    monkeypatch.setattr(install, "SHIPPED", str(tmp_path / "no-shipped-list.yaml"))
    return site / "udocker_engines" / "bundle"


def test_wheel_is_installed_on_first_use_into_an_empty_engines_folder(wheel, layout):
    assert locate.wheel_bundle() == str(wheel)
    assert locate.locate("proot", layout, {"PATH": ""}) == (os.path.join(layout.engines, "bin", "proot"),
                                                            locate.ENGINES_FOLDER)
    assert install.installed_origin(layout) == install.WHEEL
    assert locate.find_library("fakechroot/libfakechroot.so", layout).startswith(layout.engines)


def test_an_upgraded_wheel_replaces_wheel_engines_but_not_a_bundle(wheel, tmp_path, layout):
    install.install_from(str(_bundle(tmp_path / "b")), layout, trust_bundle_manifest=True)  # origin: bundle
    assert not locate._install_wheel(layout, None)  # the user's engines stay
    (wheel / "bin" / "proot").write_bytes(b"#!/bin/sh\necho proot 9.9.10\n")
    (wheel / "manifest.yaml").write_text(_manifest(dict(FILES, **{"bin/proot": b"#!/bin/sh\necho proot 9.9.10\n"})))
    with pytest.raises(EngineError, match="already installed"):
        install.install_from(str(wheel), layout, origin=install.Origin(install.WHEEL, str(wheel)))
    install.purge(layout)
    install.install_from(str(tmp_path / "b"), layout, origin=install.Origin(install.WHEEL, "an older wheel"))
    done = install.install_from(str(wheel), layout, origin=install.Origin(install.WHEEL, str(wheel)))
    assert done.changed and install.installed_record(layout)["from"] == str(wheel)


def test_a_tampered_wheel_installs_nothing(wheel, layout):
    (wheel / "lib" / "libtalloc.so.2").write_bytes(b"evil")
    with pytest.raises(DigestMismatch, match="checksum mismatch for lib/libtalloc.so.2"):
        locate.locate("proot", layout, {"PATH": ""})
    assert not os.path.exists(layout.engines)


def test_configured_path_wins_and_a_wrong_one_is_an_error(tmp_path, layout):
    exe = tmp_path / "myproot"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    config = Config.load(environ={"UDOCKER_DIR": layout.topdir}, system_file="/nonexistent")
    config.values["engine_paths"] = {"proot": str(exe), "runc": str(tmp_path / "nope")}
    assert locate.locate("proot", config) == (str(exe), locate.CONFIGURED)
    assert locate.find("proot", layout, config=config) == str(exe)
    with pytest.raises(EngineUnavailable, match="runc configured in engine_paths is not an executable"):
        locate.find("runc", config)


def test_engine_paths_config_key(tmp_path):
    path = tmp_path / "u.conf"
    path.write_text("engine_paths: {proot: relative/proot}\n")
    from udocker.config import read_file
    from udocker.errors import ConfigError

    with pytest.raises(ConfigError, match="engine_paths"):
        read_file(str(path))


def test_provisioning_code_has_no_network_imports():
    network = {"socket", "requests", "urllib", "http", "ftplib", "udocker.registry"}
    for module in ("udocker/engines/install.py", "udocker/engines/locate.py", "udocker/cli/install.py"):
        with open(os.path.join(TOP, module), encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {n for n in names if n.split(".")[0] in network or n.startswith("udocker.registry")}, module
