"""A private network for R modes without root (`run -p HOST:CONTAINER` with different ports, `--network=private`):
the container gets a network namespace of its own, and slirp4netns (Debian's package, a user-mode TCP/IP stack
on a tap device) connects it to the host's network and forwards the published ports from the host.

How: config.json asks for a "network" namespace and a `createRuntime` hook, this file run as a script
(`python -I -S netstack.py SLIRP4NETNS [ADDRESS:HOST:CONTAINER/PROTO...]`, standard library only: the hook adds
~15 ms to the start). runc runs the hook as the caller, in the host's namespaces, once the container's
namespaces exist and before its program starts, with the container's state (its first process's pid) on stdin.
The hook starts slirp4netns in a session of its own, attached to that pid's user and network namespaces
(`--configure`: tap0 10.0.2.100/24, gateway 10.0.2.2 (the host's loopback), DNS 10.0.2.3), waits until it is
ready, adds each published port through its API socket (in a private temporary directory, removed before the
hook exits), forks a watcher (_watch) that keeps slirp4netns's --exit-fd pipe open as long as the container's
first process lives, and exits: the program starts with its network up. A port that cannot be bound on the host fails
the hook, with one line on stderr, and so the run (runc reports it).

DNS: slirp4netns's forwarder at 10.0.2.3 (never --disable-dns) asks the host's first nameserver from the host's
network namespace. A nameserver on the host's loopback (systemd-resolved's 127.0.0.53, a dnsmasq on 127.0.0.1)
would not answer in the container's namespace, so the container's /etc/resolv.conf (the host's, bound by the
system mounts) becomes a copy in the engine's folder with the forwarder in its place (private_resolv); a host
whose nameservers are all reachable keeps its own file, bound as it is (its nameservers keep their order and
fallbacks, which the forwarder, using the first one only, would lose). The host's file is never written.

IPv6: Debian 12's slirp4netns (1.2.0) forwards IPv4 only (its API refuses an IPv6 host_addr and proto tcp6), so
`-p [::1]:H:C` is refused in one line before the runtime; the container's network is IPv4 (no --enable-ipv6:
without forwards it would only add an experimental outbound path).

slirp4netns outlives the hook: it is reparented to udocker's supervisor, which is a child subreaper from before
the runtime starts when the Launch asks for it (Launch.subreaper), and which kills everything below it when the
engine ends or `udocker run` is killed: the stack never outlives the run. Its own session keeps a terminal's ^C
away from it (the program may still need its network while it stops).
"""

import json
import os
import sys

READY_TIMEOUT = 10  # seconds slirp4netns may take to configure the namespace
HOOK_TIMEOUT = 30  # seconds runc waits for the hook
TUN = "/dev/net/tun"
HOST_RESOLV = "/etc/resolv.conf"  # the host's, bound into containers by the system mounts (runbuild.py)
FORWARDER = "10.0.2.3"  # slirp4netns's DNS forwarder (its default address for --configure)


def oci_hooks(layout, ports):
    """The config.json "hooks" of a private network run by slirp4netns (found as the engines are: engine_paths,
    the engines folder, PATH), forwarding `ports` ((host port, container port, host address, proto) tuples)."""
    from udocker.engines.locate import find
    from udocker.errors import EngineUnavailable

    stack = find("slirp4netns", layout)
    ipv6 = next(((host, container, address) for host, container, address, _ in ports if ":" in address), None)
    if ipv6:
        from udocker.errors import UdockerError

        host, container, address = ipv6
        raise UdockerError(f"cannot publish port {host} on [{address}]: the private network's stack (slirp4netns "
                           "1.2) forwards IPv4 only", hint=f"publish it on an IPv4 address (-p 127.0.0.1:{host}:"
                           f"{container}) or on every one (-p {host}:{container})")
    if not os.access(TUN, os.R_OK | os.W_OK):  # slirp4netns would only say "child failed(1)"
        raise EngineUnavailable(f"a private network needs {TUN}, which this user cannot open",
                                hint="ask an administrator to make it mode 0666 (Debian's default), or publish "
                                "each port as itself on the host's network (-p 5000:5000)")
    forwards = [f"{address or '0.0.0.0'}:{host}:{container}/{proto}" for host, container, address, proto in ports]
    argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), stack, *forwards]
    return {"createRuntime": [{"path": sys.executable, "args": argv, "timeout": HOOK_TIMEOUT}]}


def container_resolv(text):
    """The private network's resolv.conf from the host's `text`: its loopback nameservers replaced by one line
    naming the forwarder, the other lines kept; the forwarder alone when no nameserver is left."""
    lines, replaced = [], False
    for line in text.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver" and _loopback(words[1]):
            if not replaced:
                lines.append(f"nameserver {FORWARDER}")
            replaced = True
            continue
        lines.append(line)
    if not any(line.split()[:1] == ["nameserver"] for line in lines):
        lines.insert(0, f"nameserver {FORWARDER}")
    return "".join(line + "\n" for line in lines)


def _loopback(address):
    return address.startswith("127.") or address.split("%")[0] in ("::1", "0.0.0.0", "::", "0:0:0:0:0:0:0:1")


def private_resolv(mounts, directory):
    """Point the bind of the host's resolv.conf among `mounts` (config.json's) at the private network's version,
    written into `directory` (the engine's folder of the container) when it differs from the host's."""
    binds = [m for m in mounts if m["destination"] == "/etc/resolv.conf" and m["source"] == HOST_RESOLV]
    if not binds:
        return
    try:
        with open(HOST_RESOLV, encoding="utf-8", errors="replace") as stream:
            host = stream.read()
    except OSError:
        return
    text = container_resolv(host)
    if text == host:
        return
    path = os.path.join(directory, "resolv.conf")
    try:
        with open(path, encoding="utf-8") as stream:
            current = stream.read()
    except OSError:
        current = None
    if current != text:
        from udocker import fs

        os.makedirs(directory, mode=0o700, exist_ok=True)
        fs.atomic_write(path, text.encode(), mode=0o644, durable=False)  # a StoreError (one line) when it fails
    for bind in binds:
        bind["source"] = path


def parse_forward(text):
    """'ADDRESS:HOST:CONTAINER/PROTO' -> the arguments of slirp4netns's add_hostfwd."""
    spec, _, proto = text.partition("/")
    address, host, container = spec.rsplit(":", 2)
    return {"proto": proto or "tcp", "host_addr": address, "host_port": int(host), "guest_port": int(container)}


def _start(stack, pid, directory, exit_fd):
    """Start slirp4netns for `pid`'s network namespace, ending when `exit_fd` (a pipe's read end) reads end of
    file; return (process, API socket path) once it is ready."""
    import select
    import subprocess

    socket_path = os.path.join(directory, "api.sock")
    reader, writer = os.pipe()
    with open(os.path.join(directory, "log"), "wb") as log:
        process = subprocess.Popen(
            [stack, "--configure", "--mtu=65520", "--api-socket", socket_path, "--ready-fd", str(writer),
             "--exit-fd", str(exit_fd), str(pid), "tap0"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log, pass_fds=(writer, exit_fd), start_new_session=True, close_fds=True)
    os.close(writer)
    ready, _, _ = select.select([reader], [], [], READY_TIMEOUT)
    answer = os.read(reader, 1) if ready else b""
    os.close(reader)
    if answer != b"1":
        process.kill()
        process.wait()
        raise RuntimeError("the network stack did not start: " + _tail(os.path.join(directory, "log")))
    return process, socket_path


def _tail(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "no message"


def _forward(socket_path, text):
    """Ask slirp4netns (its API socket) to forward one port; raise RuntimeError naming it when it cannot."""
    import socket

    request = {"execute": "add_hostfwd", "arguments": parse_forward(text)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(READY_TIMEOUT)
        client.connect(socket_path)
        client.sendall(json.dumps(request).encode())
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            data = client.recv(4096)
            if not data:
                break
            answer += data
    try:
        reply = json.loads(answer or b"{}")
    except ValueError:
        reply = {}
    if "return" not in reply:
        args = request["arguments"]
        detail = reply.get("error", {}).get("desc", "no answer")
        raise RuntimeError(f"cannot publish port {args['host_addr']}:{args['host_port']} (is it in use on the "
                           f"host?): {detail}")


def hook(argv, state):
    """The createRuntime hook: argv [stack, forward...], `state` the runtime's state JSON. Returns 0 or 1."""
    import shutil
    import tempfile

    pid = json.loads(state)["pid"]
    directory = tempfile.mkdtemp(prefix="udocker-net-")
    process = None
    exit_reader, exit_writer = os.pipe()
    try:
        process, socket_path = _start(argv[0], pid, directory, exit_reader)
        for text in argv[1:]:
            _forward(socket_path, text)
        _watch(pid, exit_writer)
        return 0
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        if process is not None:
            process.kill()
        sys.stderr.write(f"udocker: private network: {error}\n")
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for fd in (exit_reader, exit_writer):
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(pid, exit_writer):
    """Fork a watcher that holds slirp4netns's exit pipe open until the container's first process `pid` ends:
    the stack then ends by itself, even when udocker's supervisor, which kills it at the end of a run, was
    killed first (kill -9 of every process of a detached container). The watcher keeps none of the runtime's
    pipes (the runtime waits for the hook's output to end) and has a session of its own."""
    if os.fork():
        return
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2 and int(name) != exit_writer:
                try:
                    os.close(int(name))
                except OSError:
                    pass
        _wait_gone(pid)
    finally:
        os._exit(0)


def _wait_gone(pid):
    """Return once process `pid` (not a child) has ended: its pidfd becomes readable (Linux 5.3), else polling."""
    import select
    import time

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
        return
    with open(f"/proc/{pid}/stat", "rb") as stream:
        start = stream.read().rsplit(b")", 1)[1].split()[19]
    while True:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except OSError:
            return
        if fields[19] != start or fields[0] == b"Z":
            return
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(hook(sys.argv[1:], sys.stdin.read()))
