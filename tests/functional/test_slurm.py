"""udocker inside SLURM jobs on the single-node cluster that utils/slurm_setup.sh starts (.ci/run does, as root).

Jobs run as the test user with this checkout's udocker first on PATH (tmp_path/bin/udocker runs
`sys.executable -m udocker`), one repository shared by every task (UDOCKER_DIR in tmp_path), and the images of
the session's `registry` on loopback. Without SLURM these tests skip; under CI (CI set) they fail, since .ci/run
must have started it. The MPI tests also need the Debian 12 image with openmpi-bin (UDOCKER_TEST_DEBIAN_MPI,
built by .ci/run) and mpicc on the host (libopenmpi-dev): the hello program is compiled on the host, against
the same Debian 12 Open MPI, and copied into the container.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import TOP
from tests.support import build_debian_image as debian
from tests.support.procs import marked as _marked
from tests.support.procs import until as _until

CI = bool(os.environ.get("CI"))
IMAGE = "test/busybox:latest"
MPI_ENV = "UDOCKER_TEST_DEBIAN_MPI"
pytestmark = pytest.mark.timeout(600)


def _unavailable(reason):
    if CI:
        pytest.fail(f"{reason}: .ci/run should have started SLURM with utils/slurm_setup.sh")
    pytest.skip(f"{reason}; as root, `bash utils/slurm_setup.sh` starts a single-node cluster")


@pytest.fixture(scope="module")
def slurm():
    """The node's name, once `sinfo` says it takes jobs."""
    if not shutil.which("sbatch"):
        _unavailable("SLURM is not installed (no sbatch on PATH)")
    info = subprocess.run(["sinfo", "--noheader", "--format=%n %t"], capture_output=True, text=True, timeout=30)
    nodes = dict(line.split() for line in info.stdout.splitlines() if len(line.split()) == 2)
    ready = [node for node, state in nodes.items() if state.rstrip("*") in ("idle", "mix", "alloc")]
    if info.returncode != 0 or not ready:
        _unavailable(f"SLURM is not up: sinfo says {(info.stdout + info.stderr).strip()!r}")
    return ready[0]


class Cluster:
    """Submits jobs as this user; every job sees `env`: the checkout's udocker first on PATH, UDOCKER_DIR =
    the shared repository `repo`."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.repo = str(tmp_path / "repo")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        wrapper = bindir / "udocker"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m udocker "$@"\n')
        wrapper.chmod(0o755)
        home = tmp_path / "home"
        home.mkdir()
        path = os.pathsep.join([str(bindir), os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        self.env = {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": TOP, "UDOCKER_DIR": self.repo,
                    "PYTHONDONTWRITEBYTECODE": "1", "USER": os.environ.get("USER", "")}

    def script(self, name, body):
        path = self.dir / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        return str(path)

    def sbatch(self, script, *options, env=None, timeout=300):
        """Submit and wait for the job (array) to end; returns sbatch's CompletedProcess (its status is the
        highest exit status of the job's tasks)."""
        command = ["sbatch", "--wait", "--parsable", "--time=10", f"--chdir={self.dir}", *options, script]
        return subprocess.run(command, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def srun(self, *args, env=None, timeout=300):
        command = ["srun", "--time=10", f"--chdir={self.dir}", *args]
        return subprocess.run(command, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def udocker(self, *args, check=True):
        result = subprocess.run(["udocker", *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert not check or result.returncode == 0, result.stderr
        return result

    def outputs(self, pattern):
        return {path.name: path.read_text() for path in sorted(self.dir.glob(pattern))}


@pytest.fixture
def cluster(slurm, tmp_path):
    return Cluster(tmp_path)


def _explain(result, cluster, pattern):
    """sbatch's status and output, and the end of each task's output."""
    tails = "".join(f"--- {name}\n{text[-800:]}" for name, text in cluster.outputs(pattern).items())
    return f"sbatch status {result.returncode}\n{result.stdout}{result.stderr}\n{tails}"


def test_array_tasks_pull_create_and_run_one_image_at_once(cluster, registry):
    """16 tasks start together on an empty repository: each pulls the image (concurrently), creates its
    own container, runs it and removes it."""
    image = registry.ref(IMAGE)
    script = cluster.script("array.sh", f"""\
        udocker run --rm {image} sh -c 'echo "task=$SLURM_ARRAY_TASK_ID job=$SLURM_ARRAY_JOB_ID"'
        """)
    result = cluster.sbatch(script, "--array=0-15", "--output=task-%a.out")
    assert result.returncode == 0, _explain(result, cluster, "task-*.out")
    job = result.stdout.strip().split(";")[0]
    for task in range(16):
        output = (cluster.dir / f"task-{task}.out").read_text()
        assert f"task={task} job={job}\n" in output, output
    cluster.udocker("verify", image)
    assert json.loads(cluster.udocker("ps", "--json").stdout) == []
    leftovers = [n for n in os.listdir(os.path.join(cluster.repo, "tmp")) if n != ".lock"]
    assert leftovers == []


def test_srun_ranks_run_one_container_and_see_the_step(cluster, registry):
    image = registry.ref(IMAGE)
    cluster.udocker("pull", image)
    cluster.udocker("create", "--name=c", image)
    result = cluster.srun("-n", "4", "udocker", "run", "c", "sh", "-c",
                          'echo "rank=$SLURM_PROCID of=$SLURM_NTASKS step=$SLURM_STEP_ID job=$SLURM_JOB_ID"')
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert [line.split()[0] for line in lines] == [f"rank={n}" for n in range(4)], result.stdout
    assert {line.split(maxsplit=1)[1] for line in lines} == {lines[0].split(maxsplit=1)[1]}
    assert "of=4 step=0 job=" in lines[0] and lines[0].split("job=")[1].isdigit()


def test_srun_exit_status_is_the_programs(cluster, registry):
    image = registry.ref(IMAGE)
    cluster.udocker("pull", image)
    cluster.udocker("create", "--name=c", image)
    assert cluster.srun("-n", "1", "udocker", "run", "c", "sh", "-c", "exit 3").returncode == 3
    failing = cluster.srun("-n", "2", "udocker", "run", "c", "sh", "-c", 'exit "$((SLURM_PROCID * 5))"')
    assert failing.returncode == 5
    missing = cluster.srun("-n", "1", "udocker", "run", "c", "/no/such/program")
    assert missing.returncode == 127 and "no such file" in missing.stderr


def test_tasks_reuse_one_prepared_container(cluster, registry):
    """`run --pull=reuse --name=shared IMAGE`: the first task creates `shared`, the others wait and reuse it."""
    image = registry.ref(IMAGE)
    script = cluster.script("reuse.sh", f"""\
        udocker run --pull=reuse --name=shared {image} sh -c 'echo "task=$SLURM_ARRAY_TASK_ID" >>/tasks.log'
        """)
    result = cluster.sbatch(script, "--array=0-7", "--output=reuse-%a.out")
    assert result.returncode == 0, _explain(result, cluster, "reuse-*.out")
    containers = json.loads(cluster.udocker("ps", "--json").stdout)
    assert len(containers) == 1, containers
    log = cluster.udocker("run", "shared", "cat", "/tasks.log").stdout
    assert sorted(log.split()) == sorted(f"task={n}" for n in range(8))


def test_a_detached_service_ends_with_its_job(cluster, registry):
    """`run -d` in a batch job, then scancel: nothing of the service is left (issue 11), although the detached
    run left the step's process tree (this cluster tracks processes with proctrack/linuxproc)."""
    token = f"I11_SLURM_{os.getpid()}_{int(time.time())}"
    script = cluster.script("service.sh", f"""\
        udocker run -d --name=svc -e {token}=1 {registry.ref(IMAGE)} sh -c 'sleep 600'
        sleep 600
        """)
    submitted = subprocess.run(["sbatch", "--parsable", "--time=10", f"--chdir={cluster.dir}",
                                "--output=service.out", script], env=cluster.env, capture_output=True, text=True,
                               timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    try:
        assert _until(lambda: len(_marked(token)) >= 3, 120), cluster.outputs("service.out")
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=60)
    assert _until(lambda: not _marked(token), 30), [(p, open(f"/proc/{p}/comm").read()) for p in _marked(token)]
    rows = json.loads(cluster.udocker("ps", "--json").stdout)
    assert [row["status"] for row in rows if "svc" in row["names"]] == ["exited"], rows


def test_a_jobs_tmpdir_is_udockers_scratch(cluster, registry):
    """With TMPDIR set (node-local scratch), udocker's scratch files (here: an archive loaded from a pipe) go
    there; partial downloads and unpacks stay in the repository's tmp/ (on the store's file system, where
    os.replace is atomic). The program does not inherit the host's TMPDIR: it names a host path."""
    image = registry.ref(IMAGE)
    scratch = cluster.dir / "jobtmp"
    scratch.mkdir()
    script = cluster.script("tmpdir.sh", f"""\
        set -e
        udocker showconf --json >showconf.json
        udocker pull {image} >/dev/null
        udocker save {image} | gzip | udocker load loaded:1
        udocker run --rm loaded:1 sh -c 'echo "tmpdir=${{TMPDIR:-unset}}"'
        """)
    result = cluster.sbatch(script, "--output=tmpdir.out", env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, _explain(result, cluster, "tmpdir.out")
    shown = json.loads((cluster.dir / "showconf.json").read_text())
    assert shown["tmpdir"] == {"value": str(scratch), "source": "environment variable TMPDIR"}
    assert "tmpdir=unset" in (cluster.dir / "tmpdir.out").read_text()
    assert [name for name in os.listdir(scratch) if name != ".lock"] == []
    # Proof that load used TMPDIR: a TMPDIR that cannot be a directory makes it fail, naming it.
    not_a_dir = cluster.dir / "not-a-dir"
    not_a_dir.write_text("")
    save = subprocess.run(["udocker", "save", image], env=cluster.env, capture_output=True, timeout=120)
    load = subprocess.run(["udocker", "load", "again:1"], env={**cluster.env, "TMPDIR": str(not_a_dir)},
                          input=save.stdout, capture_output=True, timeout=120)
    assert load.returncode == 1 and str(not_a_dir) in load.stderr.decode(), load.stderr


# -- MPI -----------------------------------------------------------------------------------------------------
HELLO = r"""
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
    int rank, size, sum = 0;
    char marker[64] = "none";
    FILE *file = fopen("/etc/udocker-test-marker", "r");
    if (file) { fscanf(file, "%63s", marker); fclose(file); }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("hello rank=%d size=%d sum=%d marker=%s\n", rank, size, sum, marker);
    MPI_Finalize();
    return 0;
}
"""


@pytest.fixture(scope="module")
def mpi_image(registry):
    """The Debian 12 + openmpi-bin image (UDOCKER_TEST_DEBIAN_MPI) pushed as test/debian-mpi:12."""
    archive = os.environ.get(MPI_ENV)
    if not archive:
        how = (f"build it as root with `python3 tests/support/build_debian_image.py --include openmpi-bin "
               f"/some/dir/debian12-mpi.tar` and set {MPI_ENV}")
        if CI:
            pytest.fail(f"{MPI_ENV} is not set: .ci/run should have built it ({how})")
        pytest.skip(f"no Debian image with Open MPI: {how}")
    return debian.push_archive(registry.client(), archive, "test/debian-mpi:12").ref


def _hello_container(cluster, image, name):
    """Container `name` of `image`, in P1, with /usr/local/bin/mpi_hello (compiled here with mpicc) and a
    marker file only the container has."""
    if not shutil.which("mpicc") or not shutil.which("mpirun"):
        if CI:
            pytest.fail("mpicc or mpirun is missing: .ci/run should have installed libopenmpi-dev, openmpi-bin")
        pytest.skip("Open MPI is not installed on the host (apt-get install openmpi-bin libopenmpi-dev)")
    source = cluster.dir / "hello.c"
    source.write_text(HELLO)
    binary = cluster.dir / "mpi_hello"
    subprocess.run(["mpicc", "-O1", "-o", str(binary), str(source)], check=True, timeout=120)
    cluster.udocker("pull", image)
    cluster.udocker("create", f"--name={name}", image)
    # PRoot: the ranks run as the caller's own uid (-u is emulated). Rootless runc must map container root to
    # the caller, so R1 runs another uid as a subordinate id, which cannot use mpirun's session directory.
    cluster.udocker("setup", "--execmode=P1", name)
    rootfs = cluster.udocker("inspect", "-p", name).stdout.strip()
    shutil.copy(binary, os.path.join(rootfs, "usr/local/bin/mpi_hello"))
    with open(os.path.join(rootfs, "etc/udocker-test-marker"), "w", encoding="utf-8") as stream:
        stream.write("in-container\n")
    return name


@pytest.fixture
def mpi_container(cluster, registry, mpi_image):
    return _hello_container(cluster, registry.ref(mpi_image), "mpi")


def _hello_lines(output, size):
    lines = sorted(line for line in output.splitlines() if line.startswith("hello "))
    expected = [f"hello rank={n} size={size} sum={size * (size - 1) // 2} marker=in-container" for n in range(size)]
    return lines, expected


def _as_me():
    # Run as the host user: PMIx's "native" security compares the uid a client reports with the server's, and
    # the image's default user is root (emulated by the engine).
    return f"--user={os.getuid()}:{os.getgid()}"


def test_mpirun_starts_ranks_in_containers(cluster, mpi_container):
    """The host's mpirun starts `udocker run` per rank; each rank's MPI_Init reaches mpirun's PMIx server with
    the PMIX_* variables and the session directory PMIX_SERVER_TMPDIR, which udocker binds."""
    result = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "--mca", "btl", "self,vader", "udocker",
                             "run", _as_me(), mpi_container, "/usr/local/bin/mpi_hello"],
                            env=cluster.env, capture_output=True, text=True, timeout=120, cwd=cluster.dir)
    lines, expected = _hello_lines(result.stdout, 2)
    assert result.returncode == 0 and lines == expected, result.stdout + result.stderr


@pytest.mark.parametrize("plugin", ["pmix", "pmi2"])
def test_srun_mpi_ranks_in_containers(cluster, mpi_container, plugin):
    """srun --mpi=pmix starts the ranks: slurmstepd's PMIx server (TCP, data store in PMIX_SERVER_TMPDIR
    under slurmd's spool directory) serves MPI_Init in the containers."""
    if plugin == "pmi2":
        pytest.skip("Debian 12's Open MPI has no PMI-2 client (only PMIx): srun --mpi=pmi2 cannot start it")
    plugins = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True, timeout=30)
    if plugin not in (plugins.stdout + plugins.stderr).split():
        pytest.fail(f"this SLURM has no {plugin} plugin: {plugins.stdout + plugins.stderr}")
    result = cluster.srun(f"--mpi={plugin}", "-n", "2", "udocker", "run", _as_me(), mpi_container,
                          "/usr/local/bin/mpi_hello", env={"OMPI_MCA_btl": "self,vader"}, timeout=120)
    lines, expected = _hello_lines(result.stdout, 2)
    assert result.returncode == 0 and lines == expected, result.stdout + result.stderr


def test_host_mpi_in_an_image_without_mpi(cluster, debian_image):
    """--hostmpi: a Debian image without Open MPI runs an MPI program with the node's Open MPI bound in
    (libraries first on LD_LIBRARY_PATH, components and help files at their host paths)."""
    _hello_container(cluster, debian_image.ref, "plain")
    without = cluster.udocker("run", "plain", "/usr/local/bin/mpi_hello", check=False)
    assert without.returncode == 127 or "libmpi" in without.stderr  # the image has no MPI of its own
    result = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "--mca", "btl", "self,vader", "udocker",
                             "run", "--hostmpi", _as_me(), "plain", "/usr/local/bin/mpi_hello"],
                            env=cluster.env, capture_output=True, text=True, timeout=120, cwd=cluster.dir)
    lines, expected = _hello_lines(result.stdout, 2)
    assert result.returncode == 0 and lines == expected, result.stdout + result.stderr
