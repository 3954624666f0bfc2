"""The fakechroot engine: modes F1-F4 with Debian's stock libfakechroot (2.20) and patchelf, no forks.

libfakechroot is LD_PRELOADed; it prefixes FAKECHROOT_BASE (the rootfs) to every path the program passes
to libc, except paths under FAKECHROOT_EXCLUDE_PATH, and runs exec'd ELF programs through
FAKECHROOT_ELFLOADER when that is set. The dynamic loader itself opens files with raw system calls, which
libfakechroot cannot see, so each mode must keep the loader from using the host's libraries:

  F1  the container's own loader, run as a program: LOADER [--argv0 NAME] PROGRAM ARGS, with
      LD_LIBRARY_PATH = the container's library directories (host paths) and FAKECHROOT_ELFLOADER = LOADER
      for every later exec. A library missing from the container is still looked up in the host's
      /etc/ld.so.cache and /lib, /usr/lib.
  F2  as F1 with a copy of the loader (engine/fakechroot/ld/) whose built-in paths /etc/ld.so.cache,
      /etc/ld.so.preload and default directories are overwritten with same-length non-existent paths
      (elfpatch.patch_loader): nothing is ever taken from the host.
  F3  every dynamic executable in the container gets PT_INTERP = the F2 loader copy and DT_RPATH = its own
      entries moved into the rootfs + the container's library directories (elfpatch.plan_patch), so a
      program is exec'd directly: PROGRAM ARGS. Originals are kept and put back by unprepare().
  F4  as F3, and each prepare() (run.py calls it before every run) also patches ELF files that appeared
      since the last one (status change time newer than the recorded stamp).
  Cost, measured on 2 cores with a copy of a Debian 12 /usr (2609 ELF files, 983 needing a patch): F3
  prepare 8.7 s, each later F4 prepare 0.7 s (one stat per file), unprepare 0.4 s.

Every mode: LD_PRELOAD = libfakechroot.so (then the image's own LD_PRELOAD), FAKECHROOT_BASE = rootfs,
FAKECHROOT_EXCLUDE_PATH = /dev:/proc:/sys + the mount sources, and run.py changes to the host directory of
the working directory first (Launch.cwd). In F3/F4 FAKECHROOT_CMD_SUBST replaces ldconfig (a static
program, see below) by the container's `true`.

Limits, as in udocker 1.3:
- The host's libfakechroot.so runs inside the container's glibc: the container's libc must define every
  GLIBC_x version the library needs (2.34 for Debian 12's): probe(mode, container) and prepare() refuse a
  container whose glibc is older, naming both versions (check_glibc), and auto mode never chooses F1/F2 for
  it (modes.auto_mode probes fakechroot with the container).
  musl containers cannot load it at all. An older-glibc build may be put in $UDOCKER_DIR/engines/lib.
- Static executables ignore LD_PRELOAD and would see the whole host: command() refuses to start one, but a
  static program exec'd later from inside the container (ldconfig, busybox-static) escapes the fake root.
- Identity is not emulated: `id -u` prints the real uid (spec.uid/gid are ignored).
- Mounts: fakechroot has no bind mounts. A mount whose target differs from its source becomes a symbolic
  link rootfs/TARGET -> SOURCE (an existing TARGET is moved aside and put back when no run needs the link
  any more, or by unprepare()), and SOURCE is excluded from translation so the link resolves on the host.
  `readlink` and `ls -l` show the link. Read-only mounts cannot be enforced: a `:ro` mount is accepted only
  when the host denies this user writing to it (e.g. chmod -R a-w, or a read-only file system), otherwise
  command() refuses to start. Concurrent runs of one container with different mounts see each other's links;
  a link is removed only when no live run uses it (links.json names the runs that asked for each link: this
  node's by process id and start time, another node's kept as in use), so a run without --nvidia does not
  take the driver from a concurrent GPU run; the last run needing a link is over when a later run removes it.
"""

import os

from udocker.engines import elfpatch
from udocker.engines.base import Engine, Launch
from udocker.engines.common import search_path
from udocker.errors import EngineError, EngineUnavailable
from udocker.modetable import engine_modes
from udocker.paths import Layout
from udocker.rootpath import resolve

MODES = engine_modes("fakechroot")
LIBFAKECHROOT = "fakechroot/libfakechroot.so"
EXCLUDED = ("/dev", "/proc", "/sys")
# glibc's built-in search directories after ld.so.conf (ld.so(8)); only those present in the rootfs count.
SYSTEM_LIBDIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                  "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
# Programs whose interpreter names the container's loader (the first dynamic one wins).
PROBE_PROGRAMS = ("/bin/sh", "/usr/bin/env", "/bin/ls", "/usr/bin/ls", "/bin/bash", "/usr/bin/bash")
LDCONFIG = ("/sbin/ldconfig", "/usr/sbin/ldconfig", "/sbin/ldconfig.real")


class FakechrootEngine(Engine):
    name = "fakechroot"
    modes = MODES
    prepare_each_run = ("F4",)

    # --- probe -------------------------------------------------------------------------------------------

    def probe(self, mode, container=None):
        """Raise EngineUnavailable when libfakechroot (or, for F3/F4, patchelf) is missing; with a container,
        also when its loader cannot be found, is not glibc's, or its libc is older than libfakechroot needs."""
        self._host_tools(mode)
        if container is not None:
            self._inspect(container)

    def _host_tools(self, mode):
        from udocker.engines import locate

        if mode not in MODES:
            raise EngineUnavailable(f"unknown fakechroot mode: {mode}")
        library = locate.find_library(LIBFAKECHROOT, self.layout)
        patchelf = locate.find("patchelf", self.layout) if mode in ("F3", "F4") else None
        return library, patchelf

    def _inspect(self, container):
        """{"loader": container path of the glibc loader, "libdirs": [host paths]}; raises EngineUnavailable."""
        from udocker.engines import locate

        rootfs = container.rootfs
        state = read_json(os.path.join(container.engine_dir(self.name), "state.json")) or {}
        loader, static = None, []
        for program in PROBE_PROGRAMS:
            info = elfpatch.read_elf(resolve(rootfs, program))
            if info is not None and info.interp:
                # after F3/F4 the interpreter is the engine's copy of the loader
                loader = state["loader"] if info.interp == state.get("loader_copy") else info.interp
                break
            if info is not None:
                static.append(program)
        if loader is None:
            if static:
                raise EngineUnavailable(f"the container holds only static programs ({static[0]}): fakechroot "
                                        "needs dynamic ones", hint="use a P or R mode (setup --execmode=P1)")
            raise EngineUnavailable("no dynamic loader found in the container (no /bin/sh or /usr/bin/env)",
                                    hint="use a P or R mode (setup --execmode=P1)")
        host_loader = resolve(rootfs, loader)
        if not os.path.isfile(host_loader):
            raise EngineUnavailable(f"the container's dynamic loader {loader} is missing")
        if not os.path.basename(loader).startswith("ld-linux"):
            raise EngineUnavailable(f"the container's loader {loader} is not glibc's: the host's "
                                    "libfakechroot.so cannot be loaded by it", hint="use a P or R mode")
        libdirs = library_dirs(rootfs)
        libc = next((os.path.join(d, "libc.so.6") for d in libdirs
                     if os.path.isfile(os.path.join(d, "libc.so.6"))), None)
        if libc is None:
            raise EngineUnavailable("the container has no libc.so.6 in its library directories")
        check_glibc(locate.find_library(LIBFAKECHROOT, self.layout), libc)
        return {"loader": loader, "libdirs": libdirs}

    # --- prepare / unprepare -------------------------------------------------------------------------------

    def prepare(self, container, mode):
        """F1: record the loader and library directories. F2: also write the patched loader copy.
        F3/F4: also patch the tree (first time), F4 again for files changed since the last prepare.
        Switching from F3/F4 to F1/F2 restores the tree first. Raises EngineUnavailable, EngineError."""
        _library, patchelf = self._host_tools(mode)
        facts = self._inspect(container)
        state_dir = container.engine_dir(self.name)
        os.makedirs(state_dir, exist_ok=True)
        import time

        from udocker import fs

        with fs.locked(os.path.join(state_dir, ".lock"), timeout=3600, what=f"{state_dir} (fakechroot)"):
            state = read_json(os.path.join(state_dir, "state.json")) or {}
            rootfs = container.rootfs
            if state.get("mode") in ("F3", "F4") and mode not in ("F3", "F4"):
                self._restore_tree(state_dir, rootfs)
                state.pop("patched_at", None)
            loader_copy = os.path.join(state_dir, "ld", os.path.basename(facts["loader"]))
            if mode != "F1":
                os.makedirs(os.path.dirname(loader_copy), exist_ok=True)
                if not os.path.isfile(loader_copy):
                    elfpatch.patch_loader(resolve(rootfs, facts["loader"]), loader_copy)
            state.update(mode=mode, loader=facts["loader"], libdirs=facts["libdirs"],
                         loader_copy=loader_copy if mode != "F1" else None,
                         argv0=loader_has_argv0(resolve(rootfs, facts["loader"])))
            if mode in ("F3", "F4") and (state.get("patched_at") is None or mode == "F4"):
                started = time.time()
                since = state.get("patched_at")
                patched, errors = elfpatch.patch_tree(
                    rootfs, store=os.path.join(state_dir, "orig"), patchelf=patchelf,
                    interpreters={facts["loader"]: loader_copy}, libdirs=facts["libdirs"],
                    newer_than=since - 2 if since else None, skip=("proc", "sys", "dev"))
                record = read_json(os.path.join(state_dir, "patched.json")) or {}
                record.update(patched)
                write_json(os.path.join(state_dir, "patched.json"), record)
                state["patched_at"] = started
                state["errors"] = (state.get("errors", []) + [list(e) for e in errors])[-100:]
            write_json(os.path.join(state_dir, "state.json"), state)

    def unprepare(self, container, mode):
        """Put back every original file, remove the mount links (restoring what they covered) and the
        engine's state directory."""
        import shutil

        state_dir = container.engine_dir(self.name)
        if not os.path.isdir(state_dir):
            return
        self._restore_tree(state_dir, container.rootfs)
        self._reconcile_links(state_dir, container.rootfs, [], keep_in_use=False)
        shutil.rmtree(state_dir)

    def _restore_tree(self, state_dir, rootfs):
        patched = read_json(os.path.join(state_dir, "patched.json")) or {}
        elfpatch.restore_tree(rootfs, os.path.join(state_dir, "orig"), patched)
        if os.path.exists(os.path.join(state_dir, "patched.json")):
            os.unlink(os.path.join(state_dir, "patched.json"))

    # --- one run -------------------------------------------------------------------------------------------

    def before_run(self, spec, mode):
        """Make each mount whose target differs from its source a link rootfs/TARGET -> SOURCE, and undo
        the links of earlier runs that this one does not ask for. Raises EngineError for nested mounts."""
        state_dir = Layout.engine_dir(spec.container_dir, self.name)
        os.makedirs(state_dir, exist_ok=True)
        wanted = [m for m in spec.mounts if _norm(m.source) != _norm(m.target)]
        targets = [_norm(m.target) for m in spec.mounts]
        for mount in wanted:
            inner = _norm(mount.target)
            outer = next((t for t in targets if t != inner and inner.startswith(t.rstrip("/") + "/")), None)
            if outer is not None:
                raise EngineError(f"fakechroot cannot place mount {inner} inside mount {outer}",
                                  hint="mount them side by side, or use a P or R mode")
        self._reconcile_links(state_dir, spec.rootfs, wanted)

    def _reconcile_links(self, state_dir, rootfs, wanted, *, keep_in_use=True):
        """Links for `wanted` (this run is recorded as their user), and none left that no live run uses
        (with keep_in_use false: none left at all)."""
        from udocker import fs

        path = os.path.join(state_dir, "links.json")
        with fs.locked(os.path.join(state_dir, ".lock"), timeout=3600, what=f"{state_dir} (fakechroot)"):
            links = read_json(path) or {}
            want = {_norm(m.target): os.path.abspath(m.source) for m in wanted}
            me = run_id()
            for target, entry in sorted(links.items(), reverse=True):
                users = [u for u in entry.get("users", ()) if u != me and keep_in_use and run_alive(u)]
                if want.get(target) == entry["source"]:
                    entry["users"] = users + [me]
                elif users and target not in want:  # a concurrent run uses it
                    entry["users"] = users
                else:
                    _unlink_mount(rootfs, target, entry)
                    del links[target]
            for target, source in sorted(want.items()):
                if target not in links:
                    links[target] = dict(_link_mount(rootfs, target, source, state_dir), users=[me])
            if links:
                write_json(path, links)
            elif os.path.exists(path):
                os.unlink(path)

    def command(self, spec, mode):
        """The Launch for `spec`: reads the engine state and the program's headers, writes nothing.
        Raises EngineError when the program is missing, static, or a read-only mount is writable here."""
        from udocker.engines import locate

        rootfs = os.path.realpath(spec.rootfs)
        state = read_json(os.path.join(Layout.engine_dir(spec.container_dir, self.name), "state.json")) or {}
        check_readonly_mounts(spec.mounts)
        cwd = resolve(rootfs, spec.cwd or "/", spec.mounts)
        if not os.path.isdir(cwd):
            raise EngineError(f"working directory not found in the container: {spec.cwd}")
        start, argv0, info = program_chain(rootfs, spec)
        env = dict(spec.env)
        library = locate.find_library(LIBFAKECHROOT, self.layout)
        env["LD_PRELOAD"] = ":".join(p for p in (library, spec.env.get("LD_PRELOAD", "")) if p)
        env["FAKECHROOT_BASE"] = rootfs
        env["FAKECHROOT_EXCLUDE_PATH"] = exclude_path(spec.mounts)
        user_libs = [rootfs + d for d in spec.env.get("LD_LIBRARY_PATH", "").split(":") if d.startswith("/")]
        rest = start + spec.argv[1:]
        copy = state.get("loader_copy")
        if mode in ("F3", "F4") and copy and info.interp == copy:  # patched: runs without LD_LIBRARY_PATH
            if user_libs:
                env["LD_LIBRARY_PATH"] = ":".join(user_libs)
            true = resolve(rootfs, "/bin/true")
            if os.path.isfile(true):
                env["FAKECHROOT_CMD_SUBST"] = ":".join(f"{p}={true}" for p in LDCONFIG)
            # Started through its interpreter only so that the program sees its own argv[0] (multi-call
            # programs dispatch on it); what it execs later the kernel starts directly.
            prefix = [copy, "--argv0", argv0] if state.get("argv0") else []
            return Launch(prefix + rest, env, cwd=cwd)
        # F1, F2, and an F3 program not patched yet: the loader runs the program
        loader = copy if mode != "F1" and copy and info.interp == state.get("loader") else resolve(rootfs, info.interp)
        env["LD_LIBRARY_PATH"] = ":".join(user_libs + (state.get("libdirs") or library_dirs(rootfs)))
        env["LD_LIBRARY_REAL"] = env["LD_LIBRARY_PATH"]  # what the loader of a udocker 1.3 F2-F4 container reads
        argv = [loader]
        if mode in ("F1", "F2"):
            env["FAKECHROOT_ELFLOADER"] = loader
        if state.get("argv0", True):
            argv += ["--argv0", argv0]
        # Not FAKECHROOT_ELFLOADER_OPT_ARGV0: with it, libfakechroot 2.20 runs a '#!' script exec'd by a
        # child as 'LOADER --argv0 NAME INTERPRETER' and drops the script's path, so `sh -c script` read an
        # empty stdin and printed nothing (found by the run matrix). Children then see argv[0] as a path.
        return Launch(argv + rest, env, cwd=cwd)


# --- pure helpers (module functions so that tests can drive them) -----------------------------------------


def _norm(path):
    """A container path made absolute and normal ('//x' stays '//x' for os.path.normpath)."""
    return os.path.normpath("/" + path.lstrip("/"))


def library_dirs(rootfs):
    """The container's library directories as host paths, in glibc's order: /etc/ld.so.conf (with its
    include lines) then the built-in directories; only existing ones, each resolved once."""
    import glob

    dirs = []

    def read_conf(conf, depth=0):
        try:
            with open(resolve(rootfs, conf)) as stream:
                lines = stream.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include") and depth < 5:
                pattern = line.split(None, 1)[1] if " " in line or "\t" in line else ""
                for match in sorted(glob.glob(rootfs + "/" + pattern.lstrip("/"))):
                    read_conf(match[len(rootfs):], depth + 1)
            elif line.startswith("/"):
                dirs.append(line)

    read_conf("/etc/ld.so.conf")
    out = []
    for directory in dirs + list(SYSTEM_LIBDIRS):
        host = resolve(rootfs, directory)  # no symbolic links left: /lib and /usr/lib merge here
        if os.path.isdir(host) and host not in out:
            out.append(host)
    return out


def glibc_versions(path):
    """The GLIBC_2.x version names in the ELF file `path`, oldest first: for a libc.so.6 those it defines,
    for another library those it needs from libc (both are strings of its dynamic string table)."""
    import re

    with open(path, "rb") as stream:
        names = set(re.findall(rb"GLIBC_2\.[0-9]+(?:\.[0-9]+)?(?=\0)", stream.read()))
    return sorted((n.decode() for n in names), key=lambda n: [int(part) for part in n[6:].split(".")])


def glibc_version(path):
    """The newest GLIBC_2.x version in `path` as '2.36', or None: for a libc.so.6 the glibc it is, for
    libfakechroot.so the oldest glibc it can be loaded by."""
    versions = glibc_versions(path)
    return versions[-1][len("GLIBC_"):] if versions else None


def missing_versions(library, libc):
    """The GLIBC_x version names that `library` needs and `libc` does not define (oldest first)."""
    defined = set(glibc_versions(libc))
    return [v for v in glibc_versions(library) if v not in defined]


def check_glibc(library, libc):
    """Raise EngineUnavailable, naming the container's glibc and the minimum, when the container's `libc`
    lacks a GLIBC_x version that `library` (libfakechroot.so) needs."""
    if not missing_versions(library, libc):
        return
    have = glibc_version(libc) or "(of unknown version)"  # the failure path: both files are read again
    raise EngineUnavailable(f"the container's glibc {have} is older than {os.path.basename(library)} needs "
                            f"(glibc {glibc_version(library)} or newer)",
                            hint="use a P or R mode (setup --execmode=P1), or put a libfakechroot.so built for "
                            "an older glibc in $UDOCKER_DIR/engines/lib/fakechroot/")


def loader_has_argv0(loader):
    """Whether this ld.so accepts --argv0 (glibc 2.33 and later)."""
    try:
        with open(loader, "rb") as stream:
            return b"--argv0\0" in stream.read()
    except OSError:
        return False


def program_chain(rootfs, spec):
    """(start, argv0, info): the host argv that starts spec.argv[0] before its arguments, the name the
    program should see as argv[0], and the ElfInfo of start[0]. A '#!' script starts as its interpreter
    (host path), the interpreter's argument, and the script's container path (the interpreter opens it
    through libfakechroot). Raises EngineError when the program is missing, not an ELF program, or static."""
    name = spec.argv[0] if spec.argv else ""
    if not name:
        raise EngineError("no command given and the image has none")
    candidate = _find(rootfs, name, spec)
    host = resolve(rootfs, candidate, spec.mounts)
    with open(host, "rb") as stream:
        head = stream.read(256)
    start, argv0, program, shown = [host], name, host, candidate
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape").split(None, 1)
        if not words:
            raise EngineError(f"empty interpreter line in {candidate}")
        shown = argv0 = words[0]
        program = resolve(rootfs, words[0], spec.mounts)
        start = [program] + words[1:] + [candidate]
    info = elfpatch.read_elf(program)
    if info is None:
        raise EngineError(f"cannot execute {shown}: not an ELF program")
    if not info.interp:
        raise EngineError(f"static program {shown} cannot run under fakechroot (it ignores LD_PRELOAD and "
                          "would see the host)", hint="use a P or R mode (setup --execmode=P1)")
    return start, argv0, info


def _find(rootfs, name, spec):
    """The container path of the program `name`: made absolute from the working directory when it holds a
    slash, else searched in the container's PATH. EngineError when it is not an executable file."""
    if "/" not in name:
        candidate = search_path(rootfs, name, spec.env, spec.mounts)
    else:
        candidate = name if name.startswith("/") else os.path.join(spec.cwd or "/", name)
        host = resolve(rootfs, candidate, spec.mounts)
        candidate = candidate if os.path.isfile(host) and os.access(host, os.X_OK) else None
    if candidate is None:
        raise EngineError(f"executable file not found in the container: {name}")
    return candidate


def exclude_path(mounts):
    """FAKECHROOT_EXCLUDE_PATH: the kernel's file systems and every mount source (so that the links to
    them resolve on the host); a mount at its own path is simply excluded."""
    paths = list(EXCLUDED)
    for mount in mounts:
        source = os.path.abspath(mount.source)
        if source not in paths:
            paths.append(source)
    return ":".join(paths)


def check_readonly_mounts(mounts):
    """Refuse a read-only mount that this user could write to: fakechroot cannot enforce it."""
    for mount in mounts:
        if mount.readonly and _writable_somewhere(mount.source):
            raise EngineError(f"fakechroot cannot make mount {mount.source}:{mount.target} read-only",
                              hint="remove write permission on the host (chmod -R a-w), or use a P or R mode")


def _writable_somewhere(path, limit=10000):
    if os.access(path, os.W_OK):
        return True
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    seen = 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            seen += 1
            full = os.path.join(directory, name)
            if seen > limit or (not os.path.islink(full) and os.access(full, os.W_OK)):
                return True
    return False


def run_id(pid=None):
    """The token naming a run (its udocker process, `pid` or this one) in links.json: lockfile's owner token
    (host, boot, PID namespace, pid, start time), whose start time tells a live process from a later one that
    reuses the pid."""
    from udocker import lockfile

    if pid is None:
        return lockfile.me().token()
    mine = lockfile.me()
    return mine.replace(pid=pid, start=lockfile.process_start(pid) or 0).token()


def run_alive(user):
    """Whether the run named by run_id() `user` may still be going: lockfile.provably_dead decides (a process
    of another node or PID namespace cannot be checked and counts as alive); a token it cannot read, not."""
    from udocker import lockfile

    owner = lockfile.Owner.parse(user)
    return owner is not None and not lockfile.provably_dead(owner)


def _link_mount(rootfs, target, source, state_dir):
    link = resolve(rootfs, os.path.dirname(target)) + "/" + os.path.basename(target)
    covered = None
    if os.path.lexists(link):
        covered = os.path.join(state_dir, "covered", target.strip("/").replace("/", "%"))
        os.makedirs(os.path.dirname(covered), exist_ok=True)
        os.rename(link, covered)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(source, link)
    return {"source": source, "link": link, "covered": covered}


def _unlink_mount(rootfs, target, entry):
    link = entry["link"]
    if os.path.islink(link) and os.readlink(link) == entry["source"]:
        os.unlink(link)
    if entry.get("covered") and os.path.lexists(entry["covered"]) and not os.path.lexists(link):
        os.rename(entry["covered"], link)


def read_json(path):
    import json

    try:
        with open(path) as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None


def write_json(path, data):
    import json

    from udocker import fs

    with fs.atomic_output(path) as stream:
        stream.write(json.dumps(data, indent=1, sort_keys=True).encode())
