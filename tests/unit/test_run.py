"""The pure parts of `udocker run`: option parsing, program, user, environment, volumes, ports."""

import os
import stat

import pytest

from udocker.cli.run import _Usage, parse, request
from udocker.errors import ProgramNotExecutable, ProgramNotFound, UdockerError, UsageError
from udocker.rootpath import resolve_stat
from udocker.runbuild import build_env, build_mounts, check_program, program_argv
from udocker.runopts import check_ports, parse_volume, resolve_user
from udocker.runspec import Mount, RunRequest


@pytest.mark.parametrize(
    "args, values, target, command",
    [
        (["c1"], {}, "c1", []),
        (["--rm", "-e", "A=1", "-eB=2", "--env=C", "c1", "ls", "-l"], {"rm": True, "env": ["A=1", "B=2", "C"]},
         "c1", ["ls", "-l"]),
        (["-it", "-v", "/a:/b", "--volume=/c", "img:1", "--rm"], {"interactive": True, "tty": True,
                                                                  "volume": ["/a:/b", "/c"]}, "img:1", ["--rm"]),
        (["-w/tmp", "-u", "1000:1000", "--name", "x", "i"], {"workdir": "/tmp", "user": "1000:1000", "name": "x"},
         "i", []),
        (["--entrypoint=", "i", "sh"], {"entrypoint": ""}, "i", ["sh"]),
        (["--location", "/r", "/bin/true"], {"location": "/r"}, None, ["/bin/true"]),
        (["--", "c", "x"], {}, "c", ["x"]),
    ],
)
def test_parse(args, values, target, command):
    assert parse(args) == (values, target, command)


@pytest.mark.parametrize("args", [["--bogus", "c"], ["-x", "c"], ["--name"], ["--rm=yes", "c"], ["-e"]])
def test_parse_rejects(args):
    with pytest.raises(_Usage):
        parse(args)


@pytest.mark.parametrize(
    "config, options, argv",
    [
        ({"Cmd": ["sh"]}, {}, ["sh"]),
        ({"Entrypoint": ["/init"], "Cmd": ["a"]}, {}, ["/init", "a"]),
        ({"Entrypoint": ["/init"], "Cmd": ["a"]}, {"command": ["b", "c"]}, ["/init", "b", "c"]),
        ({"Entrypoint": ["/init"], "Cmd": ["a"]}, {"entrypoint": "/x"}, ["/x"]),
        ({"Entrypoint": ["/init"], "Cmd": ["a"]}, {"entrypoint": "", "command": ["ls"]}, ["ls"]),
    ],
)
def test_program_follows_docker(config, options, argv):
    assert program_argv(config, RunRequest(**options)) == argv


def test_no_command_is_an_error():
    with pytest.raises(UsageError, match="no command specified"):
        program_argv({}, RunRequest())


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    for directory in ("bin", "usr/bin", "etc"):
        (root / directory).mkdir(parents=True)
    (root / "bin" / "sh").write_text("#!")
    (root / "bin" / "sh").chmod(0o755)
    (root / "bin" / "data").write_text("x")
    (root / "bin" / "data").chmod(0o644)
    os.symlink("/bin/sh", root / "usr" / "bin" / "ash")
    os.symlink("../../bin", root / "usr" / "bin" / "up")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1001::/home/tester:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    return str(root)


@pytest.mark.parametrize("argv0", ["sh", "/bin/sh", "ash", "/usr/bin/ash", "/usr/bin/up/sh"])
def test_program_found_inside_the_rootfs(rootfs, argv0):
    check_program(rootfs, argv0, {"PATH": "/usr/bin:/bin"})


def test_program_not_found_or_not_executable(rootfs):
    with pytest.raises(ProgramNotFound, match=r"executable file not found in \$PATH: nothere"):
        check_program(rootfs, "nothere", {"PATH": "/bin"})
    with pytest.raises(ProgramNotFound, match="no such file or directory: /bin/nothere"):
        check_program(rootfs, "/bin/nothere", {})
    with pytest.raises(ProgramNotExecutable):
        check_program(rootfs, "/bin/data", {})
    assert ProgramNotFound.exit_code == 127 and ProgramNotExecutable.exit_code == 126


def test_program_lookup_is_execvps_and_sees_mounts(rootfs, tmp_path):
    """One lookup (engines/common.lookup) for run's check and the engines: a file without execute permission
    is passed over when an executable one follows in PATH (execvp), denied only when none does, and a bind
    mount's programs are found (nvidia-smi bound into the container, for one)."""
    (tmp_path / "rootfs" / "usr" / "bin" / "data").write_text("#!")
    (tmp_path / "rootfs" / "usr" / "bin" / "data").chmod(0o755)
    assert check_program(rootfs, "data", {"PATH": "/bin:/usr/bin"}) == "/usr/bin/data"
    with pytest.raises(ProgramNotExecutable, match="permission denied: data"):
        check_program(rootfs, "data", {"PATH": "/bin"})
    host = tmp_path / "host"
    host.mkdir()
    (host / "tool").write_text("#!")
    (host / "tool").chmod(0o755)
    mounts = [Mount(str(host), "/opt/tools")]
    assert check_program(rootfs, "tool", {"PATH": "/opt/tools:/bin"}, mounts) == "/opt/tools/tool"
    assert check_program(rootfs, "/opt/tools/tool", {}, mounts) == "/opt/tools/tool"
    with pytest.raises(ProgramNotFound):
        check_program(rootfs, "tool", {"PATH": "/opt/tools:/bin"})


def test_resolve_stat_keeps_the_lstat_of_what_it_resolved(rootfs):
    """rootpath.resolve_stat: the lstat of the last component it made (no stat of its own for the program
    check); None for a missing file; a link still there after MAX_SYMLINKS hops is no regular file."""
    host, info = resolve_stat(rootfs, "/usr/bin/up/sh")
    assert host == os.path.join(rootfs, "bin", "sh")
    assert (info.st_ino, info.st_mode) == (os.lstat(host).st_ino, os.lstat(host).st_mode)
    assert resolve_stat(rootfs, "/bin/nothere") == (os.path.join(rootfs, "bin", "nothere"), None)
    assert resolve_stat(rootfs, "/usr/bin/..")[0] == os.path.join(rootfs, "usr")
    assert stat.S_ISDIR(resolve_stat(rootfs, "/usr/bin/..")[1].st_mode)
    os.symlink("loop", os.path.join(rootfs, "bin", "loop"))
    with pytest.raises(ProgramNotFound):
        check_program(rootfs, "/bin/loop", {})


def test_passwd_behind_a_link_is_read_inside_the_container(rootfs, tmp_path):
    """/etc/passwd is opened without following a link on the host: a link is followed in the container."""
    passwd = os.path.join(rootfs, "etc", "passwd")
    os.rename(passwd, os.path.join(rootfs, "etc", "passwd.real"))
    os.symlink("/etc/passwd.real", passwd)  # absolute: on the host it would be the host's file
    assert resolve_user(rootfs, "tester") == (1000, 1001, "/home/tester")


@pytest.mark.parametrize(
    "user, expected",
    [(None, (0, 0, "/root")), ("tester", (1000, 1001, "/home/tester")), ("1000", (1000, 1001, "/home/tester")),
     ("4242", (4242, 4242, "/")), ("tester:staff", (1000, 50, "/home/tester")), ("0:7", (0, 7, "/root"))],
)
def test_resolve_user(rootfs, user, expected):
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize("user", ["nobody", "tester:nogroup"])
def test_unknown_user_or_group(rootfs, user):
    with pytest.raises(UdockerError, match="unable to find"):
        resolve_user(rootfs, user)


def test_environment_precedence(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nA=file\n\n")
    options = RunRequest(env=["A=cli", "HOSTVAR", "MISSING"], env_files=[str(env_file)])
    env = build_env({"Env": ["A=image", "PATH=/image/bin", "B=image"]}, options,
                    {"HOSTVAR": "host", "SECRET": "x"}, "/root", "node1")
    assert env == {"A": "cli", "B": "image", "PATH": "/image/bin", "FROM_FILE": "1", "HOSTVAR": "host",
                   "HOME": "/root", "HOSTNAME": "node1"}
    assert build_env({}, RunRequest(hostenv=True), {"SECRET": "x"}, "/", "n")["SECRET"] == "x"
    assert build_env({}, RunRequest(), {}, "/", "n")["PATH"].endswith("/bin")


def test_batch_and_mpi_variables_reach_the_program():
    host = {"SLURM_PROCID": "3", "SLURM_JOB_ID": "17", "PMIX_RANK": "3", "PMIX_SERVER_URI41": "pmix-server.1;x",
            "OMPI_COMM_WORLD_RANK": "3", "PMI_FD": "5", "SECRET": "x", "HOME": "/home/u", "XSLURM_X": "no"}
    env = build_env({"Env": ["SLURM_JOB_ID=image"]}, RunRequest(env=["PMI_FD=cli"]), host, "/root", "n")
    assert {k: v for k, v in env.items() if k not in ("PATH", "HOSTNAME")} == {
        "SLURM_PROCID": "3", "SLURM_JOB_ID": "image", "PMIX_RANK": "3", "PMIX_SERVER_URI41": "pmix-server.1;x",
        "OMPI_COMM_WORLD_RANK": "3", "PMI_FD": "cli", "HOME": "/root"}


def test_pmix_server_directory_is_bound(tmp_path):
    server = tmp_path / "pmix.3.0"
    server.mkdir()
    environ = {"PMIX_SERVER_TMPDIR": f"{server}/", "PMIX_SYSTEM_TMPDIR": "/tmp"}
    assert Mount(str(server), str(server)) in build_mounts(RunRequest(), environ)
    assert build_mounts(RunRequest(nosysdirs=True), environ) == []
    assert build_mounts(RunRequest(nosysdirs=True), {"PMIX_SERVER_TMPDIR": str(tmp_path / "gone")}) == []


def test_volumes(tmp_path):
    assert parse_volume(str(tmp_path)) == Mount(str(tmp_path), str(tmp_path))
    assert parse_volume(f"{tmp_path}:/data:ro") == Mount(str(tmp_path), "/data", True)
    for bad in ("relative:/x", f"{tmp_path}:/x:rx", f"{tmp_path}:rel", "a:b:c:d"):
        with pytest.raises(UsageError):
            parse_volume(bad)
    with pytest.raises(UdockerError, match="volume source does not exist"):
        parse_volume("/nonexistent/dir:/x")
    mounts = build_mounts(RunRequest(volumes=[f"{tmp_path}:/data"], novol=["/proc"]), {"HOME": "/h"})
    targets = [m.target for m in mounts]
    assert "/dev" in targets and "/proc" not in targets and targets[-1] == "/data"
    assert build_mounts(RunRequest(nosysdirs=True), {}) == []


def test_ports():
    assert check_ports(["8080:8080", "9000", "127.0.0.1:8081:5000/tcp", "53:53/udp"]) == [
        (8080, 8080, "", "tcp"), (9000, 9000, "", "tcp"), (8081, 5000, "127.0.0.1", "tcp"), (53, 53, "", "udp")]
    for bad in ("8080:80/sctp", "a:1:2:3", "0:80", "http"):
        with pytest.raises(UsageError, match="invalid port mapping"):
            check_ports([bad])


def test_request_of_the_parsed_options():
    """cli/run.py turns the parser's values into the typed RunRequest run() takes."""
    values, target, command = parse(["--rm", "-v", "/a:/b", "--env-file=f", "--cpuset-cpus=0-1", "--device=/dev/x",
                                     "--no-nvidia", "--ib", "-it", "--platform=linux/arm64", "img", "ls"])
    asked = request(values, target, command, tty=True)
    assert (asked.target, asked.command, asked.rm, asked.volumes, asked.env_files) == ("img", ["ls"], True,
                                                                                        ["/a:/b"], ["f"])
    assert (asked.cpuset, asked.devices, asked.tty, asked.pull) == ("0-1", ["/dev/x"], True, "missing")
    assert (asked.nvidia, asked.infiniband, asked.hostmpi) == (False, True, None)
    with pytest.raises(TypeError, match="unknown fields"):
        RunRequest(volume=["/a"])


def test_ipc_option():
    """--ipc host (the default: R modes share the host's IPC namespace and /dev/shm) or private."""
    assert request(*parse(["img"])).ipc is None
    assert request(*parse(["--ipc=private", "img"])).ipc == "private"
    assert request(*parse(["--ipc", "host", "img"])).ipc == "host"


def test_a_missing_name_costs_one_lstat_per_component(rootfs, monkeypatch):
    """On NFS or Lustre each lstat is a round trip: a PATH entry without the program is one lstat per component
    walked, the missing last one included, not one more for it (issue 13, item 4)."""
    seen = []
    real = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path: seen.append(path) or real(path))
    assert resolve_stat(rootfs, "/usr/bin/nothere")[1] is None
    assert len(seen) == len(set(seen))
    seen.clear()
    assert resolve_stat(rootfs, "/usr/bin/..")[0] == os.path.join(rootfs, "usr")  # '..' ended it: one lstat more
    assert seen[-1] == os.path.join(rootfs, "usr")


def test_a_path_search_lstats_each_directory_once(rootfs, monkeypatch):
    """common.lookup: /usr is lstat'ed once for every PATH entry below it (each lstat a round trip on NFS)."""
    from udocker.engines.common import lookup

    seen = []
    real = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path: seen.append(path) or real(path))
    lookup(rootfs, "nothere", {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert seen and len(seen) == len(set(seen))
