"""Images of a repository made by the real udocker 1.3.17 (tests/support/udocker13): udocker 2 lists and uses
them with no step for the user (issue 12), pulls beside them, and udocker 1.3 goes on using the repository.
Concurrent first opens of one fresh 1.x repository adopt its images once."""

import os
import subprocess
import sys

import pytest

from tests.fixtures.v1files import snapshot
from tests.functional.test_slurm import _explain, cluster, slurm  # noqa: F401 - the SLURM fixtures

pytestmark = pytest.mark.timeout(900)

DEBIAN = "test/debian:12"
BUSYBOX = "test/busybox:latest"


def _ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def _names(listing):
    return [line.split()[0] for line in listing.splitlines()[1:]]


@pytest.fixture
def v13_repo(debian_image, udocker13):
    """A repository made by udocker 1.3: test/debian:12 and test/busybox:latest pulled from the local registry."""
    v13 = udocker13()
    host = debian_image.registry.host
    for name in (DEBIAN, BUSYBOX):
        _ok(v13("pull", f"--registry=http://{host}", name))
    assert not os.path.exists(os.path.join(v13.topdir, "VERSION"))
    return v13


def test_udocker2_uses_the_images_of_udocker13_and_13_goes_on(v13_repo, debian_image, udocker):
    v13, registry = v13_repo, debian_image.registry
    before = snapshot(v13.topdir)
    listing = _ok(udocker("images"))
    assert _names(listing) == ["docker.io/test/busybox:latest", "docker.io/test/debian:12"], listing
    assert '"Env"' in _ok(udocker("inspect", DEBIAN)) or "PATH=" in _ok(udocker("inspect", DEBIAN))
    _ok(udocker("create", "--name=two", DEBIAN))
    assert _ok(udocker("run", "two", "cat", "/etc/debian_version")).startswith("12.")
    assert _ok(udocker("run", "--rm", DEBIAN, "cat", "/etc/debian_version")).startswith("12.")
    assert _ok(udocker("run", "--rm", BUSYBOX, "/bin/busybox", "echo", "hello")) == "hello\n"
    assert snapshot(v13.topdir) == before  # nothing of 1.x's was written
    _ok(udocker("pull", registry.ref("test/busybox-oci:latest")))
    assert _names(_ok(udocker("images"))) == [registry.ref("test/busybox-oci:latest"),
                                              "docker.io/test/busybox:latest", "docker.io/test/debian:12"]
    _ok(udocker("rmi", BUSYBOX))  # removed for both
    assert not os.path.exists(os.path.join(v13.topdir, "repos", "test", "busybox"))
    assert _names(_ok(udocker("images"))) == [registry.ref("test/busybox-oci:latest"), "docker.io/test/debian:12"]

    # udocker 1.3 again, on the same repository
    listed = _ok(v13("images"))
    assert "test/debian:12" in listed and "busybox" not in listed, listed
    _ok(v13("create", "--name=back", DEBIAN))
    ran = v13("run", "--nobanner", "back", "cat", "/etc/debian_version")
    assert ran.returncode == 0 and any(line.startswith("12.") for line in ran.stdout.splitlines()), ran
    _ok(v13("pull", f"--registry=http://{registry.host}", BUSYBOX))
    assert "docker.io/test/busybox:latest" in _names(_ok(udocker("images")))  # 1.3's new pull is adopted
    _ok(v13("rmi", DEBIAN))
    assert "docker.io/test/debian:12" not in _names(_ok(udocker("images")))  # 1.3 removed it: so does 2
    assert _ok(udocker("run", "two", "cat", "/etc/debian_version")).startswith("12.")  # containers keep working
    assert "test/busybox:latest" in _ok(v13("images"))


def test_a_corrupt_layer_of_udocker13_gets_one_line(v13_repo, udocker):
    layers = os.path.join(v13_repo.topdir, "layers")
    tag = os.path.join(v13_repo.topdir, "repos", "test", "busybox", "latest")
    layer = max((os.path.realpath(os.path.join(tag, name)) for name in os.listdir(tag) if name.startswith("sha256:")),
                key=os.path.getsize)
    assert os.path.dirname(layer) == layers
    os.chmod(layer, 0o644)
    with open(layer, "r+b") as stream:
        stream.seek(100)
        stream.write(b"corrupt")
    listed = udocker("images")
    assert _names(_ok(listed)) == ["docker.io/test/debian:12"]
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning: udocker 1")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: udocker 1 image test/busybox:latest"), listed.stderr
    ran = udocker("run", "--rm", "--pull=never", BUSYBOX, "true")
    assert ran.returncode == 125 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.splitlines()[0].startswith("error: udocker 1 image test/busybox:latest cannot be used:"), ran


def test_eight_concurrent_first_opens_adopt_once(v13_repo, udocker):
    top = v13_repo.topdir
    before = snapshot(top)
    command = [sys.executable, "-m", "udocker", "--repo", top, "images"]
    processes = [subprocess.Popen(command, env=udocker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=udocker.cwd) for _ in range(8)]
    results = [(process.wait(timeout=300), *process.communicate()) for process in processes]
    assert all(code == 0 for code, _out, _err in results), results
    assert all(_names(out) == ["docker.io/test/busybox:latest", "docker.io/test/debian:12"]
               for _code, out, _err in results), results
    adopted = [line for _code, _out, err in results for line in err.splitlines() if line.startswith("adopted ")]
    assert sorted(adopted) == ["adopted udocker 1 image test/busybox:latest as docker.io/test/busybox:latest",
                               "adopted udocker 1 image test/debian:12 as docker.io/test/debian:12"], results
    assert snapshot(top) == before
    assert os.listdir(os.path.join(top, "tmp")) == []
    _ok(udocker("create", "--name=after", DEBIAN))
    listed = _ok(v13_repo("images"))
    assert "test/debian:12" in listed and "test/busybox:latest" in listed


def test_eight_slurm_tasks_open_one_udocker13_repository_at_once(v13_repo, cluster):  # noqa: F811
    """A job array's tasks all start on a repository only udocker 1.3 has used: each lists the images and
    runs one; the images are adopted once."""
    assert cluster.repo == v13_repo.topdir
    before = snapshot(v13_repo.topdir)
    script = cluster.script("v1.sh", f"""\
        udocker images && udocker run --rm {BUSYBOX} /bin/busybox echo "task=$SLURM_ARRAY_TASK_ID"
        """)
    result = cluster.sbatch(script, "--array=0-7", "--output=v1-%a.out")
    assert result.returncode == 0, _explain(result, cluster, "v1-*.out")
    outputs = cluster.outputs("v1-*.out")
    for task in range(8):
        output = outputs[f"v1-{task}.out"]
        assert f"task={task}\n" in output and "docker.io/test/debian:12" in output, output
    adopted = [line for text in outputs.values() for line in text.splitlines() if line.startswith("adopted ")]
    assert len(adopted) == 2, outputs
    assert snapshot(v13_repo.topdir) == before
    assert "test/debian:12" in _ok(v13_repo("images"))
