"""Published ports with a private network (issue 11, item 3): in R1, as the unprivileged test user, `-p HOST:5000`
with different ports (or --network=private) gives the container a network namespace of its own through
slirp4netns, with the published ports forwarded from the host and the host's loopback at 10.0.2.2; nothing of
the stack outlives the run; the host's network stays the default; P1 refuses a port mapped to another. With the
DEEPaaS test image (UDOCKER_TEST_DEEPAAS: it has python3, whose http.server is the service)."""

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest

from tests.functional.test_services import TOP, Repo, _free_port, _kill_all
from tests.support.procs import deepaas_archive
from tests.support.procs import marked as _marked
from tests.support.procs import tun_usable as _tun_usable
from tests.support.procs import until as _until

SERVE = ("python3", "-m", "http.server", "--bind", "0.0.0.0", "--directory", "/", "5000")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    archive = deepaas_archive()
    base = tmp_path_factory.mktemp("network")
    (base / "home").mkdir()
    udocker = Repo(base / "repo", base / "home")
    assert udocker("-q", "load", "-i", archive, "test/deepaas").returncode == 0
    udocker.image = "test/deepaas:12"
    return udocker


@pytest.fixture(scope="module")
def r1(repo):
    missing = ("slirp4netns is not installed (.ci/run installs it)" if not shutil.which("slirp4netns") else
               "/dev/net/tun cannot be opened by this user (.ci/run makes it 0666, Debian's udev rule)"
               if not _tun_usable() else None)
    if missing and os.environ.get("CI"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    return _container(repo, "R1")


def _container(repo, mode):
    name = f"net-{mode.lower()}-{uuid.uuid4().hex[:6]}"
    assert repo("create", f"--name={name}", repo.image).returncode == 0
    setup = repo("setup", f"--execmode={mode}", name)
    assert setup.returncode == 0, setup.stderr
    return name


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def _stacks(token):
    """Pids of slirp4netns processes attached to a process of the container marked by `token`."""
    marked = {str(pid) for pid in _marked(token)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                argv = stream.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == "slirp4netns" and len(argv) > 3 and argv[-3] in marked:
            found.append(int(pid))
    return found


def _all_stacks():
    """Pids of this user's live slirp4netns processes."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                name = os.path.basename(stream.read().split(b"\0")[0])
        except OSError:
            continue
        if name == b"slirp4netns" and os.stat(f"/proc/{pid}").st_uid == os.getuid() and not _zombie(pid):
            found.add(int(pid))
    return found


def _alive(pids):
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_two_services_on_port_5000_answer_side_by_side_and_leave_nothing(repo, r1):
    ports = [_free_port(), _free_port()]
    tokens = []
    try:
        for port in ports:
            token = f"I11N_{uuid.uuid4().hex}"
            tokens.append(token)
            done = repo("run", "-d", "-e", f"{token}=1", "-p", f"127.0.0.1:{port}:5000/tcp", r1, *SERVE, timeout=120)
            assert done.returncode == 0, done.stderr
        for port in ports:
            assert _until(lambda p=port: _get(f"http://127.0.0.1:{p}/"), 60), repo("logs", r1).stdout[-2000:]
        stacks = [pid for token in tokens for pid in _stacks(token)]
        assert len(stacks) == 2
        stop = repo("stop", "-t", "5", r1, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert _until(lambda: not _alive(stacks) and not any(_marked(t) for t in tokens), 15)
    finally:
        for token in tokens:
            _kill_all(token)


def test_wait_until_port_waits_for_the_service_behind_a_published_port(repo, r1):
    """slirp4netns listens on the host port from the start: `wait --until-port` must wait for the program."""
    port = _free_port()
    token = f"I11N_{uuid.uuid4().hex}"
    try:
        done = repo("run", "-d", "-e", f"{token}=1", "-p", f"127.0.0.1:{port}:5000", r1, "sh", "-c",
                    "sleep 4; exec " + " ".join(SERVE), timeout=120)
        assert done.returncode == 0, done.stderr
        ready = repo("wait", "--until-port", f"127.0.0.1:{port}", "--timeout", "60", r1, timeout=90)
        assert ready.returncode == 0, ready.stderr
        assert _get(f"http://127.0.0.1:{port}/") is not None  # at once, not a while after
    finally:
        _kill_all(token)


class _Host(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's name)
        body = b"from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_outbound_reaches_the_hosts_loopback_through_the_gateway(repo, r1):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        fetch = f"import urllib.request; print(urllib.request.urlopen('http://10.0.2.2:{port}/').read().decode())"
        before = _all_stacks()
        done = repo("run", "--network=private", r1, "python3", "-c", fetch, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "from the host\n\n"
        assert not _all_stacks() - before  # the stack ended with the run
    finally:
        server.shutdown()


def test_the_stack_dies_with_a_killed_udocker_run(repo, r1):
    port, token = _free_port(), f"I11N_{uuid.uuid4().hex}"
    argv = [sys.executable, "-m", "udocker", "--repo", repo.path, "run", "-e", f"{token}=1", "-p", f"{port}:5000",
            r1, *SERVE]
    process = subprocess.Popen(argv, cwd=TOP, env=repo.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        assert _until(lambda: _get(f"http://127.0.0.1:{port}/"), 60)
        stacks = _stacks(token)
        assert len(stacks) == 1
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _until(lambda: not _alive(stacks) and not _marked(token), 15)
    finally:
        process.kill()
        _kill_all(token)


def test_the_hosts_network_stays_the_default(repo, r1):
    host = os.readlink("/proc/self/ns/net")
    for options in ((), ("-p", "5000:5000")):
        done = repo("run", *options, r1, "readlink", "/proc/self/ns/net", timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == host, done.stderr
    before = _all_stacks()
    for _ in range(3):  # short runs: the stack, daemonised at once, must stay below the supervisor
        private = repo("run", "--network=private", r1, "readlink", "/proc/self/ns/net", timeout=120)
        assert private.returncode == 0 and private.stdout.strip() not in ("", host), private.stderr
    assert not _all_stacks() - before


def test_p1_refuses_a_mapped_port_and_a_private_network_in_one_line(repo):
    name = _container(repo, "P1")
    for options, words in ((("-p", "8081:5000"), "cannot map port 5000 to 8081 in mode P1"),
                           (("--network=private",), "--network=private cannot run in mode P1")):
        done = repo("run", *options, name, "true", timeout=120)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 125 and len(errors) == 1 and words in errors[0], done.stderr
        assert "R1" in done.stderr
    assert repo("run", "-p", "5000:5000", name, "true", timeout=120).returncode == 0


QUERY = """
import os, socket, struct, sys
ident = int(sys.argv[2])
question = b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[3].split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
    client.settimeout(10)
    client.sendto(struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question, (sys.argv[1], 53))
    answer = client.recv(4096)
print(*struct.unpack(">HH", answer[:4]), int(answer[12:12 + len(question)] == question))
"""


def _ask(server, name, ident):
    """(id, flags, same question) of `server`'s answer to an A query, as QUERY prints it, run on the host."""
    done = subprocess.run([sys.executable, "-c", QUERY, server, str(ident), name], capture_output=True, text=True,
                          timeout=30)
    return done.stdout.split() if done.returncode == 0 else None


def test_dns_goes_through_the_stacks_forwarder_and_the_hosts_resolv_conf_is_kept(repo, r1):
    """The container's resolv.conf is the host's with loopback nameservers replaced by the forwarder (unit tests:
    tests/unit/test_netstack.py); here, on this host, the forwarder at 10.0.2.3 answers as the host's resolver."""
    from udocker.engines.netstack import container_resolv

    with open("/etc/resolv.conf", encoding="utf-8") as stream:
        host = stream.read()
    done = repo("run", "--network=private", r1, "cat", "/etc/resolv.conf", timeout=120)
    assert done.returncode == 0 and done.stdout == container_resolv(host), (done.stdout, done.stderr)
    servers = [line.split()[1] for line in host.splitlines() if line.split()[:1] == ["nameserver"]]
    name = "localhost"
    expected = _ask(servers[0], name, 4242) if servers else None  # the forwarder asks the host's first one
    if expected is None:
        pytest.skip("the host's resolver does not answer here: nothing for the forwarder to forward to")
    done = repo("run", "--network=private", r1, "python3", "-c", QUERY, "10.0.2.3", "4242", name, timeout=120)
    assert done.returncode == 0, done.stderr
    ident, flags, same = done.stdout.split()
    assert ident == "4242" and int(flags) & 0x8000 and same == "1", done.stdout  # an answer to our question
    assert int(flags) & 0xF == int(expected[1]) & 0xF  # with the host resolver's status


def test_publishing_on_ipv6_is_refused_in_one_line(repo, r1):
    done = repo("run", "-p", f"[::1]:{_free_port()}:5000", r1, "true", timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 125 and len(errors) == 1 and "IPv4 only" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_stack_ends_with_the_container_when_every_process_of_it_is_killed(repo, r1):
    """kill -9 of every process of a detached container (udocker's supervisor included, which would have killed
    the stack): the stack, which is no process of the container, must not outlive it."""
    port, token = _free_port(), f"I11N_{uuid.uuid4().hex}"
    try:
        done = repo("run", "-d", "-e", f"{token}=1", "-p", f"127.0.0.1:{port}:5000", r1, *SERVE, timeout=120)
        assert done.returncode == 0, done.stderr
        assert _until(lambda: _get(f"http://127.0.0.1:{port}/"), 60), repo("logs", r1).stdout[-2000:]
        stacks = _stacks(token)
        assert len(stacks) == 1
        _kill_all(token)
        assert _until(lambda: not _marked(token), 15) is True
        assert _until(lambda: not _alive(stacks), 15), stacks
    finally:
        _kill_all(token)
        for pid in _alive(stacks if "stacks" in locals() else []):
            os.kill(pid, signal.SIGKILL)
