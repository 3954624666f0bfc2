"""`udocker run` at the command line: a hand-written parser for udocker 1.3's run options (click alone costs
~28 ms of start-up), their RunRequest and configuration, the reports of -q and -D, and the exit status: udocker's
own failures exit 125, a program that cannot be executed 126, one not found 127; otherwise the container's
exit status is udocker's. The use case itself is udocker/run.py."""

import os
import sys

from udocker.cli.boundary import guarded, report
from udocker.runspec import RunRequest

USAGE = """Usage: udocker run [OPTIONS] CONTAINER|IMAGE [COMMAND [ARG...]]

  Run COMMAND (default: the image's entrypoint and cmd) in a container, or in a new container of IMAGE
  (pulled if needed). The exit status is the program's; 125: udocker failed, 126: the program cannot
  be executed, 127: it was not found.

Options:
  -d, --detach              Run in the background: print the container id and exit; the output goes
                            to the container's log ('udocker logs'); stop it with 'udocker stop'.
  --rm                      Remove the container when it exits.
  --name NAME               Name the container created from IMAGE.
  -w, --workdir DIR         Working directory inside the container.
  -u, --user USER[:GROUP]   Run as this user (name or uid) of the container.
  -v, --volume HOST[:CONT[:ro]]  Bind a host path into the container (repeatable).
  --novol PATH              Do not bind PATH (a system or earlier volume).
  -e, --env KEY[=VALUE]     Set a variable; KEY alone takes the host's value (repeatable).
  --env-file FILE           Read variables from FILE (KEY=VALUE lines).
  --hostenv                 Pass the host's environment to the container.
  --hostauth                Use the host's /etc/passwd and /etc/group.
  --containerauth           Use the container's /etc/passwd and /etc/group as they are (the default).
  --nosysdirs               Do not bind /dev, /proc, /sys, /etc/resolv.conf, /etc/hosts.
  --nometa                  Ignore the image's metadata (entrypoint, cmd, env, workdir, user).
  --bindhome                Bind the user's home directory.
  --entrypoint CMD          Replace the image's entrypoint ("" clears it).
  --cpuset-cpus CPUS        Run on these CPUs (e.g. 0-3,6).
  --hostname NAME           Hostname seen in the container (engines with a UTS namespace).
  --ipc host|private        R modes: share the host's IPC namespace and /dev/shm (the default, as MPI,
                            NCCL and data loaders need between ranks), or have their own. P, F: always host.
  --location DIR            Run a root file system directory instead of a container.
  --platform OS/ARCH        Platform of the image to pull.
  --pull[=missing|never|always|reuse]  When to pull IMAGE (reuse: run the container --name if it exists);
                            a bare --pull (before another option) means missing.
  --registry URL            Pull docker.io images from this registry.
  --index URL               Docker Hub index to use.
  --httpproxy URL           Pull through this proxy (http, https, socks4, socks4a, socks5, socks5h).
  --device PATH             Expose a host device (repeatable).
  --dri                     Expose the host's DRI devices (/dev/dri) and driver directories (udocker 1.3's
                            /usr/lib64/dri, /lib64/dri, /usr/lib/dri, /lib/dri) that exist.
  --dns IP                  The container's name server (repeatable): a resolv.conf of its own, bound over
                            /etc/resolv.conf (the host's is never changed).
  --dns-search DOMAIN       The container's DNS search domain (repeatable), as --dns.
  --volumes-from CONTAINER[:ro|rw]  Bind the volumes (-v) of CONTAINER's latest run too (repeatable).
  --kernel RELEASE          P modes: the kernel release the program sees (PRoot's -k), where the PRoot
                            engine can emulate it.
  -p, --publish [ADDR:]HOST:CONT[/tcp|/udp]  Publish a port. As another port (8081:5000): R modes only,
                            with a private network (below); P and F modes share the host's network.
  -P, --publish-all         Publish every port the image EXPOSEs: on free host ports in R modes with a
                            private network (printed on stderr), else on the same ports.
  --network host|private    The host's network (the default: HPC and MPI need it), or, in R modes, a
                            network of its own through slirp4netns, with outbound connectivity, the host's
                            loopback at 10.0.2.2 and the published ports forwarded from the host.
  --nvidia                  Make the node's NVIDIA driver and GPUs visible (an error without them). In
                            F2-F4 through LD_LIBRARY_PATH only: a program that clears it misses libcuda.
  --no-nvidia               Do not, even when the job was given GPUs (default: config key nvidia, auto).
  --ib                      Make the node's Infiniband/RDMA devices and libraries visible.
  --no-ib                   Do not, even when the node has them (default: config key infiniband, auto).
  --hostmpi                 Use the node's MPI libraries in place of the image's (ABI-compatible images).
  --no-hostmpi              Do not (default: config key host_mpi, off).
  -i, --interactive, -t, --tty, --nobanner   Accepted for compatibility.
  -h, --help                Show this message and exit.
"""

# long name -> (key, takes a value, repeatable)
_LONG = {
    "rm": ("rm", False, False), "name": ("name", True, False), "workdir": ("workdir", True, False),
    "user": ("user", True, False), "volume": ("volume", True, True), "novol": ("novol", True, True),
    "env": ("env", True, True), "env-file": ("env_file", True, True), "hostenv": ("hostenv", False, False),
    "hostauth": ("hostauth", False, False), "containerauth": ("containerauth", False, False),
    "nosysdirs": ("nosysdirs", False, False), "nometa": ("nometa", False, False),
    "bindhome": ("bindhome", False, False), "entrypoint": ("entrypoint", True, False),
    "cpuset-cpus": ("cpuset_cpus", True, False), "hostname": ("hostname", True, False),
    "ipc": ("ipc", True, False), "network": ("network", True, False),
    "location": ("location", True, False), "platform": ("platform", True, False), "pull": ("pull", True, False),
    "registry": ("registry", True, False), "index": ("index", True, False), "device": ("device", True, True),
    "publish": ("publish", True, True), "interactive": ("interactive", False, False), "tty": ("tty", False, False),
    "nobanner": ("nobanner", False, False), "help": ("help", False, False),
    "nvidia": ("nvidia", False, False), "no-nvidia": ("no_nvidia", False, False), "ib": ("ib", False, False),
    "no-ib": ("no_ib", False, False), "hostmpi": ("hostmpi", False, False),
    "no-hostmpi": ("no_hostmpi", False, False),
    "detach": ("detach", False, False), "httpproxy": ("httpproxy", True, False),
    "dri": ("dri", False, False), "kernel": ("kernel", True, False), "dns": ("dns", True, True),
    "dns-search": ("dns_search", True, True), "volumes-from": ("volumes_from", True, True),
    "publish-all": ("publish_all", False, False),
}
_SHORT = {"w": "workdir", "u": "user", "v": "volume", "e": "env", "p": "publish", "i": "interactive", "t": "tty",
          "h": "help", "d": "detach", "P": "publish-all"}
PULL_POLICIES = ("missing", "never", "always", "reuse")
IPC_MODES = ("host", "private")
NETWORKS = ("host", "private")


class _Usage(Exception):
    pass


def _store(values, long_name, value):
    key, _, repeatable = _LONG[long_name]
    if repeatable:
        values.setdefault(key, []).append(value)
    else:
        values[key] = value


def _long(values, args, index, arg):
    """Store the long option `arg` (its value from args[index] when not given with '='); the next index."""
    name, sep, value = arg[2:].partition("=")
    if name not in _LONG:
        raise _Usage(f"unknown option: --{name}")
    if name == "pull" and not sep and (index >= len(args) or args[index].startswith("-")):
        _store(values, name, "missing")  # a bare --pull (last, or before another option), as udocker 1.3 reads it
        return index
    if _LONG[name][1]:
        if not sep:
            if index >= len(args):
                raise _Usage(f"option --{name} requires a value")
            value = args[index]
            index += 1
        _store(values, name, value)
    elif sep:
        raise _Usage(f"option --{name} takes no value")
    else:
        _store(values, name, True)
    return index


def parse(args):
    """(values, target, command): options up to the first non-option, then the target, then the command."""
    values = {}
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "-":
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            index = _long(values, args, index, arg)
            continue
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter not in _SHORT:
                raise _Usage(f"unknown option: -{letter}")
            name = _SHORT[letter]
            if not _LONG[name][1]:
                _store(values, name, True)
                continue
            value = letters.lstrip("=") if letters else None
            letters = ""
            if value is None:
                if index >= len(args):
                    raise _Usage(f"option -{letter} requires a value")
                value = args[index]
                index += 1
            _store(values, name, value)
    target = args[index] if index < len(args) and not values.get("location") else None
    command = args[index + 1:] if target is not None else args[index:]
    return values, target, command


_TRISTATES = {"nvidia": ("nvidia", "no_nvidia"), "infiniband": ("ib", "no_ib"), "hostmpi": ("hostmpi", "no_hostmpi")}
_RENAMED = {"volume": "volumes", "env_file": "env_files", "cpuset_cpus": "cpuset", "device": "devices"}
_NOT_ASKED = {"registry", "index", "platform", "httpproxy",  # configuration (see _config)
              "interactive", "tty", "nobanner", "help"}  # accepted for compatibility; -t: stdin decides
_NOT_ASKED.update(name for pair in _TRISTATES.values() for name in pair)


def request(values, target, command, *, tty=False):
    """The RunRequest of parse()'s answer."""
    fields = {_RENAMED.get(key, key): value for key, value in values.items() if key not in _NOT_ASKED}
    for key, (on, off) in _TRISTATES.items():
        fields[key] = False if values.get(off) else True if values.get(on) else None
    return RunRequest(target=target, command=command, tty=tty, **fields)


def _config(general, values, environ):
    from udocker.config import Config

    return Config.load(config_file=general.get("config"), environ=environ,
                       cli={"topdir": general.get("repo"), "insecure": general.get("insecure"),
                            "registry": values.get("registry"), "index": values.get("index"),
                            "platform": values.get("platform"), "http_proxy": values.get("httpproxy")})


class Reporter:
    """Where run's reports go, as for the other commands: warnings unless -q; with -D the engine's command
    line; pull progress unless -q, and the log lines of pulling and creating (logging is set up only then:
    importing it costs ~7 ms that running an existing container does without)."""

    def __init__(self, general):
        self.quiet = bool(general.get("quiet"))
        self.debug = bool(general.get("debug"))

    def warn(self, line):
        if not self.quiet:
            os.write(2, f"warning: {line}\n".encode())

    def launching(self, mode, launch):
        if self.debug:
            from udocker.launch import describe

            sys.stderr.write(f"debug: {describe(mode, launch)}\n")

    def detached(self, container_id):
        sys.stdout.write(container_id + "\n")

    def published(self, ports):
        if not self.quiet:
            for host, container, _, proto in ports:
                sys.stderr.write(f"published: {container}/{proto} on host port {host}\n")

    def progress(self):
        from udocker import log
        from udocker.cli.progress import for_stderr

        log.setup(debug=self.debug, quiet=self.quiet)
        return for_stderr(quiet=self.quiet)


def _run(general, values, target, command):
    from udocker.run import run

    environ = dict(os.environ)
    tty = os.isatty(0) and not values.get("detach")  # -t is ignored off a terminal (udocker 1.3)
    asked = request(values, target, command, tty=tty)
    return run(asked, _config(general, values, environ), environ, reporter=Reporter(general))


def main(general, args):
    """Run and return the exit status."""
    try:
        values, target, command = parse(args)
    except _Usage as exc:
        report(str(exc), "see 'udocker run --help'")
        return 125
    if values.get("help"):
        sys.stdout.write(USAGE)
        return 0
    if target is None and not values.get("location"):
        report("run needs a container or an image", "see 'udocker run --help'")
        return 125
    if values.get("pull", "missing") not in PULL_POLICIES:
        report(f"invalid --pull policy: {values['pull']}", "use " + ", ".join(PULL_POLICIES))
        return 125
    if values.get("ipc", "host") not in IPC_MODES:
        report(f"invalid --ipc: {values['ipc']}", "use " + " or ".join(IPC_MODES))
        return 125
    if values.get("network", "host") not in NETWORKS:
        report(f"invalid --network: {values['network'][:40]}", "use " + " or ".join(NETWORKS))
        return 125
    return guarded(lambda: _run(general, values, target, command), debug=general.get("debug"), failure=125)
