"""Issue 12: containers made by the real udocker 1.3.17 (P1, F1, F3, R1) work in udocker 2 with no step for the
user (ps, run by name, id and id prefix in their recorded mode, inspect, export, clone, setup, name, rm), and
udocker 1.3 still uses the repository afterwards, beside udocker 2's own containers."""

import json
import os
import tarfile

import pytest

MODES = ("P1", "F1", "F3", "R1")
UDOCKER2_FILES = ("engine", "runs", "udocker2.json")  # what udocker 2 adds to a 1.x container's directory


def _ok(done):
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _v13_ran(v13, name):
    """udocker 1.3 runs `cat /etc/debian_version` in container `name`. 1.3's R1 exits 1 whatever the program's
    status (it loses runc's): judge it by its output. On a loaded machine 1.3's R1 was seen to lose the end of
    the output ("12" alone): a run whose output is a cut-short "12." (or none) is tried again, twice at most."""
    for _ in range(3):
        done = v13("run", "--nobanner", name, "cat", "/etc/debian_version")
        if done.stdout.startswith("12.") or not "12.".startswith(done.stdout.strip()):
            break
    assert done.stdout.startswith("12."), done.stdout + done.stderr


@pytest.fixture
def v1repo(debian_image, udocker13, udocker):
    """A repository made by udocker 1.3: test/debian:12 and containers p1, f1, f3, r1 set up in their modes (F3
    with the test wrapper's emulation of udocker's patchelf) and each run once by 1.3."""
    v13 = udocker13(udocker.repo)
    _ok(v13("pull", f"--registry=http://{debian_image.registry.host}", debian_image.name))
    ids = {}
    for mode in MODES:
        name = mode.lower()
        ids[name] = _ok(v13("create", f"--name={name}", debian_image.name)).split()[-1]
        if mode != "P1":
            _ok(v13("setup", f"--execmode={mode}", name))
        _v13_ran(v13, name)
    return v13, ids


def _v1_files(repo, ids):
    """udocker 1.3's files of its containers (beside ROOT/): name -> bytes, or 'dir'."""
    found = {}
    for cid in ids.values():
        directory = os.path.join(repo, "containers", cid)
        for entry in os.listdir(directory):
            path = os.path.join(directory, entry)
            if entry not in UDOCKER2_FILES + ("ROOT",):
                found[cid, entry] = "dir" if os.path.isdir(path) else open(path, "rb").read()
    return found


def test_udocker2_lists_and_runs_udocker13_containers_in_their_modes(v1repo, udocker):
    v13, ids = v1repo
    before = _v1_files(udocker.repo, ids)
    listing = _ok(udocker("ps", "-m")).splitlines()
    for name, cid in ids.items():
        line = next(line for line in listing if line.startswith(cid))
        assert f" {name.upper()}  {name} " in line and "test/debian:12" in line, line
    assert {row["id"] for row in json.loads(_ok(udocker("ps", "--json")))} == set(ids.values())
    for name, cid in ids.items():
        for target in (name, cid, cid[:8]):
            done = udocker("run", target, "sh", "-c", "cat /etc/debian_version; echo $PATH; exit 3", timeout=300)
            assert done.returncode == 3, (name, target, done.stdout + done.stderr)
            assert done.stdout.startswith("12.") and "/usr/sbin" in done.stdout, done.stdout  # the image's Env
        assert _ok(udocker("setup", name)).splitlines()[0] == "execmode: " + name.upper()
    assert json.loads(_ok(udocker("ps", "--json")))  # the runs are recorded
    # nothing of 1.3's changed: its R1 config.json, modes, F3 patch records, names; F3 was not patched again
    assert _v1_files(udocker.repo, ids) == before
    for name, cid in ids.items():
        assert os.readlink(os.path.join(udocker.repo, "containers", name)).endswith(cid)
    f3_root = os.path.join(udocker.repo, "containers", ids["f3"], "ROOT")
    with open(os.path.join(f3_root, "usr", "bin", "ls"), "rb") as stream:
        assert stream.read().count(os.path.realpath(f3_root).encode() + b"//lib64/") == 1
    # udocker 1.3 runs them again, in its own modes
    for name in ids:
        _v13_ran(v13, name)
    assert all(f" {name.upper()} ['{name}']" in v13("ps", "-m").stdout for name in ids)


def test_udocker2_inspects_exports_clones_names_and_removes_them(v1repo, udocker, tmp_path):
    v13, ids = v1repo
    shown = json.loads(_ok(udocker("inspect", "--json", "p1")))
    assert shown["id"] == ids["p1"] and shown["image"] == "test/debian:12" and shown["names"] == ["p1"]
    assert shown["rootfs"] == os.path.join(udocker.repo, "containers", ids["p1"], "ROOT")
    assert shown["config"]["Cmd"] == ["/bin/bash"]
    assert _ok(udocker("inspect", "-p", "f1")).strip() == os.path.join(udocker.repo, "containers", ids["f1"], "ROOT")
    archive = tmp_path / "f1.tar"
    _ok(udocker("export", "-o", str(archive), "f1"))
    with tarfile.open(archive) as tar:
        assert tar.extractfile("./etc/debian_version").read().startswith(b"12.")
        # 1.3's F1 made absolute links host paths into ROOT: exported as the container paths they stand for
        loader = tar.getmember("./usr/lib64/ld-linux-x86-64.so.2")
        assert loader.linkname == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    for name in ("p1", "f1", "r1"):
        clone = _ok(udocker("clone", f"--name={name}-2", name)).strip()
        assert os.path.isdir(os.path.join(udocker.repo, "containers", clone, "rootfs"))
        _ok(udocker("setup", "--execmode=P1", f"{name}-2"))
        done = udocker("run", f"{name}-2", "sh", "-c", "cat /etc/debian_version; grep -c root /etc/passwd")
        assert done.returncode == 0 and done.stdout.startswith("12."), (name, done.stdout + done.stderr)
    refused = udocker("setup", "--execmode=F1", "f3")  # 1.3's patched container: its mode is 1.3's to change
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines()[-2:][0].startswith("error: cannot ")
    assert f"udocker setup --execmode=F1 {ids['f3']}" in refused.stderr
    _ok(udocker("setup", "--execmode=P2", "p1"))  # P1 <-> P2 changes nothing in ROOT: recorded as 1.3 does
    assert " P2 ['p1']" in v13("ps", "-m").stdout
    refused = udocker("setup", "--execmode=P1", "f1")
    assert refused.returncode == 1 and "udocker setup --execmode=P1" in refused.stderr, refused.stderr
    _ok(udocker("name", "p1", "first"))
    assert "first" in v13("ps").stdout and _ok(udocker("run", "first", "true")) == ""
    _ok(udocker("rmname", "first"))
    assert not os.path.lexists(os.path.join(udocker.repo, "containers", "first"))
    _ok(udocker("rm", "r1"))
    assert not os.path.lexists(os.path.join(udocker.repo, "containers", "r1"))
    assert not os.path.exists(os.path.join(udocker.repo, "containers", ids["r1"]))
    # udocker 1.3 after all that, beside udocker 2's containers and their names: ps, run, rm of its own
    listed = v13("ps")
    assert listed.returncode == 0 and "['p1']" in listed.stdout and "'r1'" not in listed.stdout, listed.stdout
    assert "Error" not in listed.stderr and "['p1-2']" in listed.stdout, listed.stderr
    _v13_ran(v13, "p1")
    _v13_ran(v13, "f3")
    assert v13("rm", "f1").returncode == 0
    assert not os.path.exists(os.path.join(udocker.repo, "containers", ids["f1"]))
    names = {row["names"][0] for row in json.loads(_ok(udocker("ps", "--json")))}
    assert names == {"p1", "f3", "p1-2", "f1-2", "r1-2"}


def _interp(data, tmp_path):
    from udocker.engines.elfpatch import read_elf

    (tmp_path / "elf").write_bytes(data)
    return read_elf(str(tmp_path / "elf")).interp


def test_udocker13_f3_container_exported_and_cloned_by_udocker2_runs_anywhere(v1repo, udocker, tmp_path):
    """1.3's F3 patched every program's interpreter with the host path of its ROOT and its loader in place: udocker
    2's export gives the image's tree back, its clone and its export --clone run away from that ROOT (1.3's own
    archive of it runs only while the original container is there: see test_v1_archives.py)."""
    v13, ids = v1repo
    before = _v1_files(udocker.repo, ids)
    f3_dir = os.path.join(udocker.repo, "containers", ids["f3"])
    with open(os.path.join(f3_dir, "ld.so.orig"), "rb") as stream:
        loader_orig = stream.read()
    flat = tmp_path / "f3.tar"
    _ok(udocker("export", "-o", str(flat), "f3"))
    with tarfile.open(flat) as tar:
        assert _interp(tar.extractfile("./usr/bin/cat").read(), tmp_path) == "/lib64/ld-linux-x86-64.so.2"
        assert tar.extractfile("./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").read() == loader_orig
        assert not any(f3_dir.encode() in (m.linkname or "").encode() for m in tar.getmembers())
    _ok(udocker("import", "--tocontainer", "--name=flat", str(flat)))
    clone = _ok(udocker("clone", "--name=f3-2", "f3")).strip()
    assert json.loads(_ok(udocker("inspect", "--json", "f3-2")))["mode"] == "F3"
    for name in ("flat", "f3-2"):
        _ok(udocker("setup", "--execmode=F3", name))  # udocker 2's own F3, on the unpatched tree
        done = udocker("run", name, "sh", "-c", "cat /etc/debian_version; ls -d /usr")
        lines = done.stdout.split()
        assert done.returncode == 0 and lines[0].startswith("12.") and lines[1:] == ["/usr"], done.stdout + done.stderr
    with open(os.path.join(udocker.repo, "containers", clone, "rootfs", "usr", "bin", "cat"), "rb") as stream:
        assert f3_dir.encode() not in stream.read()  # patched for udocker 2's clone only
    archive = tmp_path / "f3-clone.tar"
    _ok(udocker("export", "--clone", "-o", str(archive), "f3"))
    with tarfile.open(archive) as tar:
        assert _interp(tar.extractfile("ROOT/usr/bin/cat").read(), tmp_path) == "/lib64/ld-linux-x86-64.so.2"
        assert tar.extractfile("execmode").read() == b"F1"  # 1.3 runs it without a setup of its own
    assert _v1_files(udocker.repo, ids) == before  # 1.3's container is as it was, and 1.3 still runs it
    _v13_ran(v13, "f3")
    _ok(v13("import", "--clone", "--name=f3-back", str(archive)))
    assert v13("rm", "f3").returncode == 0  # the archive does not need the container it came from
    _v13_ran(v13, "f3-back")
    _ok(udocker("import", "--clone", "--name=f3-again", str(archive)))  # udocker 2 gets the mode back
    assert json.loads(_ok(udocker("inspect", "--json", "f3-again")))["mode"] == "F3"
    done = udocker("run", "f3-again", "cat", "/etc/debian_version")
    assert done.returncode == 0 and done.stdout.startswith("12."), done.stdout + done.stderr


def test_migrate_converts_them_for_good_with_a_dry_run_and_a_report(v1repo, udocker):
    v13, ids = v1repo
    before = _v1_files(udocker.repo, ids)
    dry = udocker("migrate", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    rows = {line.split()[0]: line for line in dry.stdout.splitlines()[1:]}
    assert all(rows[ids[n]].endswith("would convert") for n in ids), dry.stdout
    assert _v1_files(udocker.repo, ids) == before  # the dry run changed nothing
    report = json.loads(udocker("migrate", "--json").stdout)
    assert {row["id"]: row["result"] for row in report} == {cid: "converted" for cid in ids.values()}
    for name in ids:
        directory = os.path.join(udocker.repo, "containers", ids[name])
        assert "rootfs" in os.listdir(directory)
        assert set(os.listdir(directory)) <= {"container.json", "engine", "rootfs", "runs"}, os.listdir(directory)
        # a repository 1.3 still uses (its repos/): the name stays 1.x's link, which 1.3 lists beside the container
        assert os.readlink(os.path.join(udocker.repo, "containers", name)) == ids[name]
        done = udocker("run", name, "sh", "-c", "cat /etc/debian_version; exit 3", timeout=300)
        assert done.returncode == 3 and done.stdout.startswith("12."), (name, done.stdout + done.stderr)
        if name != "p1":  # 1.3 recorded no mode for it: the configured default applies, as in 1.3
            assert _ok(udocker("setup", name)).splitlines()[0] == "execmode: " + name.upper()
    # F3: 1.3's patches undone, then set up by udocker 2's own F3 (its loader copy, not 1.3's ROOT prefix)
    f3_cat = os.path.join(udocker.repo, "containers", ids["f3"], "rootfs", "usr", "bin", "cat")
    with open(f3_cat, "rb") as stream:
        data = stream.read()
    assert b"/ROOT/" not in data and os.path.join(udocker.repo, "containers", ids["f3"], "engine").encode() in data
    assert {row["names"][0] for row in json.loads(_ok(udocker("ps", "--json")))} == set(ids)
    # the converted containers are udocker 2's; their names stay 1.x links, so 1.3 lists them all
    listed = v13("ps")
    assert "Error" not in listed.stderr and all(f"['{name}']" in listed.stdout for name in ids), listed.stdout


def test_udocker2_names_and_containers_in_a_v1_repository_are_udocker13s(v1repo, udocker, debian_image):
    """In a repository udocker 1.3 still uses, udocker 2 writes names as 1.3 does (containers/<name> -> <uuid>,
    no containers/.names/) and its containers carry what 1.3 needs: 1.3 lists, runs, names and removes them."""
    from concurrent.futures import ThreadPoolExecutor

    v13, ids = v1repo
    containers = os.path.join(udocker.repo, "containers")
    made = _ok(udocker("create", "--name=x", debian_image.name)).strip()
    _ok(udocker("name", "x", "y"))
    _ok(udocker("rename", "y", "z"))
    assert os.readlink(os.path.join(containers, "x")) == made and os.readlink(os.path.join(containers, "z")) == made
    assert not any(os.path.lexists(os.path.join(containers, n)) for n in (".names", "y"))
    for bad in ("a b", made, ids["p1"], ".hidden"):  # udocker 2's rules stand: characters, a name equal to an id
        refused = udocker("name", "x", bad)
        assert refused.returncode == 1 and refused.stderr.startswith("error: invalid container name"), refused.stderr
    refused = udocker("name", "x", "p1")  # 1.3's name of another container
    assert refused.returncode == 1 and "container name already in use: p1" in refused.stderr, refused.stderr
    gone = _ok(udocker("create", "--name=gone", debian_image.name)).strip()
    _ok(udocker("rm", "gone"))
    assert not os.path.lexists(os.path.join(containers, "gone")) and not os.path.exists(os.path.join(containers, gone))
    with ThreadPoolExecutor(2) as pool:  # one name, exactly one winner
        race = list(pool.map(lambda i: udocker("create", "--name=race", debian_image.name), range(2)))
    assert sorted(r.returncode for r in race) == [0, 1], [r.stderr for r in race]
    assert "container name already in use: race" in next(r.stderr for r in race if r.returncode)
    winner = next(r.stdout.strip() for r in race if r.returncode == 0)
    assert os.readlink(os.path.join(containers, "race")) == winner
    # udocker 1.3: ps lists them without an error, runs x by its name, names it, and udocker 2 sees that name
    listed = v13("ps")
    assert listed.returncode == 0 and "Error" not in listed.stdout + listed.stderr, listed.stdout + listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(made))
    assert "['x', 'z']" in line.replace("['z', 'x']", "['x', 'z']") and "test/debian:12" in line, line
    assert all(f"['{name}']" in listed.stdout for name in ids)
    ran = v13("run", "--nobanner", "x", "true")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    _v13_ran(v13, "z")
    _ok(v13("name", made, "w"))
    assert _ok(udocker("run", "w", "cat", "/etc/debian_version")).startswith("12.")
    row = next(r for r in json.loads(_ok(udocker("ps", "--json"))) if r["id"] == made)
    assert row["names"] == ["w", "x", "z"]
    # udocker 2's rm refuses it while udocker 1.3 protects it
    _ok(v13("protect", made))
    refused = udocker("rm", "x")
    assert refused.returncode == 1 and refused.stderr.startswith("error: container is protected"), refused.stderr
    _ok(v13("unprotect", made))
    # udocker 1.3's rm refuses it while udocker 2 protects it, then removes it with its names
    _ok(udocker("protect", "x"))
    refused = v13("rm", "x")
    assert refused.returncode == 1 and "Error: container is protected" in refused.stderr, refused.stderr
    _ok(udocker("unprotect", "x"))
    assert v13("rm", "x").returncode == 0
    assert not os.path.exists(os.path.join(containers, made))
    assert not any(os.path.lexists(os.path.join(containers, n)) for n in ("w", "x", "z"))
    assert made not in {r["id"] for r in json.loads(_ok(udocker("ps", "--json")))}
    assert "Error" not in v13("ps").stderr


def test_names_an_earlier_udocker2_kept_in_containers_dot_names(v1repo, udocker, debian_image):
    """A 1.x repository where an earlier udocker 2 kept names in containers/.names/: udocker 2 finds them, and its
    next write of a name moves them to 1.x links, after which 1.3's ps lists them without an error."""
    v13, ids = v1repo
    containers = os.path.join(udocker.repo, "containers")
    os.mkdir(os.path.join(containers, ".names"))
    os.symlink(ids["p1"], os.path.join(containers, ".names", "old"))  # as udocker 2 wrote names until now
    assert _ok(udocker("run", "old", "cat", "/etc/debian_version")).startswith("12.")
    assert "Error: invalid container json metadata" in v13("ps").stderr  # what such a repository did to 1.3
    _ok(udocker("name", "f1", "another"))
    assert not os.path.lexists(os.path.join(containers, ".names"))
    assert os.readlink(os.path.join(containers, "old")) == ids["p1"]
    listed = v13("ps")
    assert "Error" not in listed.stdout + listed.stderr and "'old'" in listed.stdout, listed.stdout + listed.stderr
    _v13_ran(v13, "old")
    assert _ok(udocker("run", "another", "true")) == ""
