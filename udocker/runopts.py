"""The values of `udocker run` options checked and turned into what a RunSpec holds: volumes, ports, the user,
CPU sets. Each bad value is a UsageError (or UdockerError) naming it: the engines never see one (runc would
answer a 20-digit uid or a relative working directory with its own log line)."""

import errno
import os

from udocker.errors import UdockerError, UsageError
from udocker.rootpath import resolve
from udocker.runspec import Mount

ID_MAX = 2 ** 31 - 1  # runc refuses larger uids and gids ("must be in range 0-2147483647")
CPU_MAX = 1 << 16  # CPU numbers a cpu set may name (glibc's CPU_SETSIZE is 1024; kernels allow up to 8192)


def _id(text, what, user):
    value = int(text)
    if value > ID_MAX:
        raise UsageError(f"invalid {what} in user {user}: {text[:24]}", hint=f"ids go from 0 to {ID_MAX}")
    return value


def _passwd(rootfs, name):
    """The entries of the container's /etc/`name` (passwd, group). The file itself is opened with O_NOFOLLOW
    rather than looked at first (one call less per run: on NFS or Lustre a round trip); a symbolic link
    there is followed inside the container."""
    directory = resolve(rootfs, "/etc")
    try:
        try:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            fd = os.open(resolve(rootfs, f"/etc/{name}"), os.O_RDONLY | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="replace") as stream:
            return [line.rstrip("\n").split(":") for line in stream if line.count(":") >= 2]
    except OSError:
        return []


def resolve_user(rootfs, user):
    """(uid, gid, home) for Docker's user forms: name, uid, name:group, uid:gid."""
    user = user or "0"
    name, _, group = user.partition(":")
    entries = _passwd(rootfs, "passwd")
    entry = next((e for e in entries if e[0] == name or (name.isdigit() and e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise UdockerError(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else _id(name, "uid", user)
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else uid if not entry else 0
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    if group:
        if group.isdigit():
            gid = _id(group, "gid", user)
        else:
            found = next((g for g in _passwd(rootfs, "group") if g[0] == group), None)
            if found is None:
                raise UdockerError(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[2])
    return uid, gid, home


def parse_volume(text):
    """HOST[:CONTAINER[:ro|rw]] -> Mount. The host path must exist (udocker 1.3 and docker -v with a
    path): a typo would otherwise silently bind nothing."""
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):  # '/tmp:' or '/a::ro': an empty part is a typo, not "the same path"
        raise UsageError(f"invalid volume: {text}", hint="use -v HOST[:CONTAINER[:ro]]")
    source = parts[0]
    target = parts[1] if len(parts) > 1 else source
    flag = parts[2] if len(parts) == 3 else "rw"
    if flag not in ("ro", "rw"):
        raise UsageError(f"invalid volume option {flag!r} in {text}", hint="use ro or rw")
    if not source.startswith("/") or not target.startswith("/"):
        raise UsageError(f"invalid volume: {text}", hint="host and container paths must be absolute")
    if not os.path.exists(source):
        raise UdockerError(f"volume source does not exist: {source}")
    return Mount(os.path.normpath(source), os.path.normpath(target), flag == "ro")


def check_devices(devices):
    """--device PATH: an absolute path that exists (runc would fail to mount it with its own log line)."""
    for path in devices:
        if not path.startswith("/"):
            raise UsageError(f"invalid device: {path}", hint="give the device's absolute path, e.g. /dev/fuse")
        if not os.path.exists(path):
            raise UdockerError(f"device does not exist: {path}")
    return list(devices)


def check_ports(publish):
    """-p [ADDRESS:]HOST:CONTAINER[/tcp|udp] or -p PORT -> (host port, container port, address, proto) tuples
    (address "" for every address of the host; an IPv6 address in brackets: [::1]:HOST:CONTAINER)."""
    ports = []
    for text in publish:
        spec, _, proto = text.partition("/")
        parts = spec.split(":")
        if spec.startswith("["):  # [IPv6 ADDRESS]:HOST:CONTAINER
            address, bracket, rest = spec[1:].partition("]:")
            parts = [address] + rest.split(":") if bracket and address and "]" not in address else ["", "", "", ""]
        host, container = parts[-2] if len(parts) > 1 else parts[-1], parts[-1]
        address = parts[0] if len(parts) == 3 else ""
        if len(parts) > 3 or proto not in ("", "tcp", "udp") or not all(
                port.isdigit() and 0 < int(port[:6]) < 65536 for port in (host, container)):
            raise UsageError(f"invalid port mapping: {text[:40]}",
                             hint="use [ADDRESS:]HOST_PORT:CONTAINER_PORT[/tcp|/udp], ports 1-65535")
        ports.append((int(host), int(container), address, proto or "tcp"))
    return ports


def network_of(ports, network):
    """The run's network: "private" when asked for, or when a port is published as another one; else "host"."""
    if network:
        return network
    return "private" if any(host != container for host, container, _, _ in ports) else "host"


def check_network(spec, mode, private_modes=("R1", "R2", "R3")):
    """Refuse a port mapped to another on the host's network, and a private network (asked for, or implied by
    such a port) in a mode that shares the host's network."""
    mapped = next(((h, c) for h, c, _, _ in spec.ports if h != c), None)
    names = ", ".join(private_modes)
    if mapped and spec.network == "host":
        raise UdockerError(f"cannot map port {mapped[1]} to {mapped[0]} with --network=host",
                           hint=f"publish it as {mapped[1]}:{mapped[1]}, or leave out --network=host")
    if spec.network != "private" or mode in private_modes:
        return
    if mapped:
        raise UdockerError(f"cannot map port {mapped[1]} to {mapped[0]} in mode {mode}: containers share the "
                           f"host's network", hint=f"publish it as {mapped[1]}:{mapped[1]}, or use mode {names} "
                           "(udocker setup --execmode=R1 CONTAINER), which can give a container its own network")
    raise UdockerError(f"--network=private cannot run in mode {mode}: containers share the host's network",
                       hint=f"use mode {names} (udocker setup --execmode=R1 CONTAINER)")


def _cpuset(text):
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()) or max(len(first), len(last)) > 5 \
                or int(last or first) >= CPU_MAX:
            raise UsageError(f"invalid --cpuset-cpus: {text[:40]}", hint="use e.g. 0-3,6")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus & os.sched_getaffinity(0):  # the kernel's answer would be a bare EINVAL
        raise UsageError(f"--cpuset-cpus {text[:40]}: none of these CPUs is available to this process",
                         hint="available: " + ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0))[:64]))
    return cpus


# -- options of udocker 1.3's manual: --dri, --dns, --dns-search, -P, --kernel -------------------------------
DRI_DIRS = ("/usr/lib64/dri", "/lib64/dri", "/usr/lib/dri", "/lib/dri")  # udocker 1.3's dri_list
DRI_DEVICES = "/dev/dri"


def dri(root="/"):
    """--dri: (the Mounts of udocker 1.3's DRI driver directories, the device directory) that exist under
    `root` (host paths, as seen from `root`)."""
    def host(path):
        return os.path.join(root, path.lstrip("/"))

    mounts = [Mount(host(path), path) for path in DRI_DIRS if os.path.isdir(host(path))]
    devices = [host(DRI_DEVICES)] if os.path.isdir(host(DRI_DEVICES)) else []
    return mounts, devices


def resolv_conf(nameservers, search, host_text):
    """The container's resolv.conf: the host's (`host_text`) with its nameserver lines replaced by
    `nameservers` and its search/domain lines by `search`, where given (Docker's --dns, --dns-search)."""
    import ipaddress

    for server in nameservers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise UsageError(f"invalid --dns: {server[:60]}", hint="give the IP address of a name server") from None
    for domain in search:
        if not domain or len(domain) > 253 or any(c.isspace() for c in domain):
            raise UsageError(f"invalid --dns-search: {domain[:60]!r}", hint="give a domain name, e.g. example.org")
    replaced = (("nameserver",) if nameservers else ()) + (("search", "domain") if search else ())
    kept = [line for line in host_text.splitlines() if (line.split() or [""])[0] not in replaced]
    lines = [f"nameserver {server}" for server in nameservers] + kept
    if search:
        lines.append("search " + " ".join(search))
    return "\n".join(lines) + "\n"


def exposed_ports(config):
    """(port, protocol) of the image config's ExposedPorts ("80/tcp": {}), in order."""
    found = []
    for key in (config.get("ExposedPorts") or {}):
        port, _, proto = str(key).partition("/")
        if port.isdigit() and 0 < int(port) < 65536 and proto in ("", "tcp", "udp"):
            found.append((int(port), proto or "tcp"))
    return found


def publish_all(ports, exposed, free):
    """-P: `ports` (check_ports' tuples) plus each exposed (port, protocol) not published yet, on a free host
    port when `free` (R modes with a private network), else on the same port."""
    taken = {(container, proto) for _, container, _, proto in ports}
    added = []
    for port, proto in exposed:
        if (port, proto) not in taken:
            added.append((_free_port(proto) if free else port, port, "", proto))
    return list(ports) + added, added


def _free_port(proto):
    import socket

    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def check_kernel(release):
    """--kernel RELEASE: a release string as uname -r shows one (e.g. 6.1.0)."""
    import re

    if not re.fullmatch(r"[0-9][0-9A-Za-z._+~-]{0,63}", release or ""):
        raise UsageError(f"invalid --kernel: {str(release)[:40]}", hint="give a kernel release, e.g. 6.1.0")
    return release
