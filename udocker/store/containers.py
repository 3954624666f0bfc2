"""Containers: containers/<id>/ holding container.json, rootfs/ and engine/<name>/ state."""

import os
import stat

from udocker import fastjson
from udocker.errors import NotFound, StoreError, UdockerError
from udocker.paths import Layout, link_id

# fs (tempfile, shutil), json and uuid are imported where containers are written: `run` of an existing container
# only reads (container.json with fastjson), and every import there is start-up time added to the engine's.


class Container:
    """One container directory. `record` is the parsed container.json:
    {"id", "names": [...], "image": ref, "manifest": digest, "config": image config ("config" object of the
    image configuration: Env, Cmd, Entrypoint, WorkingDir, User...), "platform": {...}, "mode": "P1"|None,
    "created": ISO time, "protected": bool}.

    `broken` says why container.json could not be read ("corrupt container.json"), else None: a broken
    container has the record {"id": id} and can only be listed and removed."""

    def __init__(self, directory, record, broken=None):
        self.dir = directory
        self.record = record
        self.broken = broken

    @property
    def id(self):
        return self.record["id"]

    @property
    def rootfs(self):
        return Layout.container_rootfs(self.dir)

    def engine_dir(self, name):
        """Where engine `name` keeps its state for this container (created on demand by the engine)."""
        return Layout.engine_dir(self.dir, name)

    @property
    def mode(self):
        return self.record.get("mode")

    @property
    def legacy(self):
        """udocker 1.x's record of the container (store/v1containers.py's V1Container), None for udocker 2's."""
        return None


class LegacyContainer(Container):
    """A container made by udocker 1.x (store/v1containers.py): its root is ROOT/, its record read from 1.x's files."""

    def __init__(self, directory, record, v1):
        super().__init__(directory, record)
        self.v1 = v1

    @property
    def rootfs(self):
        return self.v1.root

    @property
    def mode(self):
        """The mode udocker 2 runs it in: its 1.x mode, but F1 for 1.3's F2-F4 (store/v1containers.py's run_mode)."""
        from udocker.store.v1containers import run_mode

        return run_mode(self.v1)

    @property
    def legacy(self):
        return self.v1


class ContainerStore:
    """containers/<id>/ directories and containers/.names/<name> symlinks (-> id); in a repository that udocker
    1.x still uses, names are 1.x's containers/<name> symlinks instead (store/v1names.py).

    A container directory is assembled in tmp/ and renamed into place, so it is either complete or
    absent; a name is a symlink, created atomically and exclusively, so two creates can never take one
    name. container.json is rewritten atomically under the container's lock.
    """

    def __init__(self, layout, lock_timeout):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self.names_dir = layout.names
        self._v1 = None

    @property
    def v1_repository(self):
        """True in a repository that udocker 1.x still uses: names are written as 1.x's (store/v1names.py).
        Asked only by what writes names or containers: `run` pays nothing for it."""
        if self._v1 is None:
            from udocker.store.v1names import is_v1_repository

            self._v1 = is_v1_repository(self.layout)
        return self._v1

    def _v1_prepare(self):
        """In a 1.x repository, before a name is written: an earlier udocker 2's containers/.names/ moved to 1.x's
        links (store/v1names.py). Returns whether names are 1.x's here."""
        if not self.v1_repository:
            return False
        from udocker import log
        from udocker.store.v1names import move_dot_names

        move_dot_names(self.layout, self.lock_timeout, log.get("containers").warning)
        return True

    # -- reading ---------------------------------------------------------------------------------------
    def load(self, container_id):
        """The container `container_id`; NotFound if absent, StoreError naming it if its record is broken.
        A udocker 1.x container (ROOT/, its container.json the image's config) is read only when container.json
        is no udocker 2 record: a run of a udocker 2 container pays no look for ROOT/."""
        directory = self.layout.container(container_id)
        try:
            record = fastjson.loads(_read_record(directory))
        except FileNotFoundError:
            if self._legacy(directory):
                return self._load_legacy(container_id, directory)
            if not os.path.isdir(directory):
                raise NotFound(f"container not found: {container_id}", hint="see 'udocker ps'") from None
            raise _broken(container_id, "no container.json") from None
        except (ValueError, UnicodeDecodeError):
            if self._legacy(directory):
                return self._load_legacy(container_id, directory)
            raise _broken(container_id, "corrupt container.json") from None
        except OSError as exc:
            raise _broken(container_id, f"unreadable container.json ({exc.strerror})") from None
        if not isinstance(record, dict) or record.get("id") != container_id:
            if self._legacy(directory):
                return self._load_legacy(container_id, directory)
            raise _broken(container_id, "corrupt container.json")
        return Container(directory, record)

    @staticmethod
    def _legacy(directory):
        return os.path.isdir(Layout.legacy_root(directory)) and not os.path.islink(directory)

    def _load_legacy(self, container_id, directory):
        from udocker.store import v1containers as v1

        if not v1.is_v1_container(directory):
            raise _broken(container_id, "both ROOT/ (udocker 1) and rootfs/")
        try:
            legacy = v1.read_v1_container(directory, self.names_of(container_id))
        except ValueError as exc:
            raise _broken(container_id, str(exc)) from None
        overlay = None
        try:
            with open(Layout.legacy_overlay(directory), "rb") as stream:
                overlay = fastjson.loads(stream.read())
        except (OSError, ValueError):
            pass
        return LegacyContainer(directory, v1.v1_record(legacy, overlay if isinstance(overlay, dict) else None),
                               legacy)

    def load_any(self, container_id):
        """Like load(), but a broken container is returned (with `broken` set) instead of raised."""
        try:
            return self.load(container_id)
        except StoreError as exc:
            return Container(self.layout.container(container_id), {"id": container_id},
                             broken=getattr(exc, "reason", None) or exc.message)

    def list(self):
        """Every container, broken ones included (see Container.broken)."""
        found = []
        for name in sorted(os.listdir(self.layout.containers)):
            path = self.layout.container(name)
            if not name.startswith(".") and os.path.isdir(path) and not os.path.islink(path):
                try:
                    found.append(self.load_any(name))
                except NotFound:  # removed meanwhile
                    pass
        return found

    def names(self):
        """{name: id} of every name: udocker 2's containers/.names/<name>, and udocker 1.x's containers/<name>
        links (store/v1containers.py), which 1.x still reads."""
        own = {}  # read first: a name moved to containers/ (store/v1names.py) is linked there before unlinked here
        try:
            entries = os.listdir(self.names_dir)
        except FileNotFoundError:
            entries = ()
        for name in entries:
            try:
                own[name] = os.readlink(self.layout.name(name))
            except OSError:  # removed or moved meanwhile
                pass
        found = {}
        if self._has_legacy_names():
            from udocker.store.v1containers import v1_names  # dataclasses, inspect: only for udocker 1.x's names

            found = v1_names(self.layout.containers)
        found.update(own)
        return found

    def _has_legacy_names(self):
        try:
            return any(not e.startswith(".") and os.path.islink(os.path.join(self.layout.containers, e))
                       for e in os.listdir(self.layout.containers))
        except FileNotFoundError:
            return False

    def names_of(self, container_id):
        return sorted(name for name, cid in self.names().items() if cid == container_id)

    def find(self, text, *, broken=False):
        """A container by name, id, or unique id prefix. A broken one raises StoreError naming it, or is
        returned (with `broken` set) when `broken` is True: for rm."""
        load = self.load_any if broken else self.load
        if _valid_name(text):
            try:
                return load(os.readlink(self.layout.name(text)))
            except (FileNotFoundError, NotFound):
                pass
        path = self.layout.container(text)
        plain = "/" not in text and not text.startswith(".")
        if plain and os.path.islink(path):  # udocker 1.x's name (any it allowed): containers/<name> -> <uuid>
            try:
                return load(link_id(os.readlink(path)))
            except (OSError, NotFound):
                pass
        if plain and os.path.isdir(path) and not os.path.islink(path):
            return load(text)
        if len(text) >= 4:
            matches = [c for c in os.listdir(self.layout.containers) if c.startswith(text) and not c.startswith(".")
                       and not os.path.islink(self.layout.container(c))]
            if len(matches) == 1:
                return load(matches[0])
            if len(matches) > 1:
                raise UdockerError(f"container id {text} is ambiguous", hint="give more characters or a name")
        raise NotFound(f"container not found: {text}", hint="see 'udocker ps'")

    # -- writing ---------------------------------------------------------------------------------------
    def create(self, record, populate, *, name=None, force=False):
        """Make a new container: `populate(rootfs)` fills its rootfs, `record` (without id) becomes its
        container.json. Returns the Container. On failure nothing is left but tmp/ leftovers.

        The name is taken first, pointing at the id still being assembled in tmp/, and the container is
        published last by one rename: a kill at any moment leaves either a named container or a name that
        points at nothing, which add_name() reclaims, never a container without the name it was given."""
        import uuid

        from udocker import fs

        if name is not None:
            check_name(name)
        container_id = str(uuid.uuid4())
        record = dict(record, id=container_id, protected=False)
        target = self.layout.container(container_id)
        v1 = self._v1_prepare()
        with fs.scratch_dir(self.layout.tmp, prefix=_STAGING) as scratch:
            staging = os.path.join(scratch, container_id)
            os.mkdir(staging, 0o755)
            try:
                if name is not None:
                    self._link_name(container_id, name, force=force, v1=v1)
                rootfs = Layout.container_rootfs(staging)
                os.mkdir(rootfs, 0o755)
                populate(rootfs)
                if v1:  # what udocker 1.3 needs to list, run and remove it
                    from udocker.store.v1names import v1_view

                    v1_view(staging, record)
                _write_json(Layout.container_record(staging), record)
                try:
                    os.rename(staging, target)
                except OSError as exc:
                    raise fs.store_error("write", self.layout.containers, exc) from None
            except BaseException:
                if name is not None:
                    self._unlink_name(name, container_id)
                raise
        return Container(target, record)

    def update(self, container, **fields):
        """Change fields of container.json (atomically, under the container's lock)."""
        import json

        from udocker import fs

        with fs.locked(self.layout.lock("container", container.id), timeout=self.lock_timeout,
                       what=f"container {container.id}"):
            if container.legacy is not None:
                return self._update_legacy(container, fields)
            current = self.load(container.id).record
            current.update(fields)
            fs.atomic_write(Layout.container_record(container.dir),
                            json.dumps(current, indent=1, sort_keys=True).encode(), tmpdir=self.layout.tmp)
            if "protected" in fields and self.v1_repository:  # udocker 1.3 refuses to rm it too
                from udocker.store.v1names import mark_protected

                mark_protected(container.dir, fields["protected"])
            container.record = current
        return container

    def _update_legacy(self, container, fields):
        """update() of a udocker 1.x container: the mode and the protection as udocker 1.3 records them (execmode,
        PROTECT), the rest in udocker 2's own file beside them (Layout.legacy_overlay)."""
        from udocker import fs
        from udocker.store import v1containers as v1

        fs.ensure_dir(self.layout.tmp)  # `run` of a 1.x repository udocker 2 never opened: no tmp/ yet
        current = self.load(container.id)
        if fields.get("mode") and fields["mode"] != current.record["mode"]:  # None (setup --purge): 1.3's mode stays
            v1.check_mode_change(current.legacy, fields["mode"])
            fs.atomic_write(os.path.join(container.dir, "execmode"), fields["mode"].encode(), tmpdir=self.layout.tmp)
        if "protected" in fields:
            from udocker.store.v1names import mark_protected

            mark_protected(container.dir, fields["protected"])
        overlay = {k: v for k, v in current.record.items() if k in ("prepared", "nvidia")}
        overlay.update((k, v) for k, v in fields.items() if k in ("prepared", "nvidia"))
        if overlay:
            fs.atomic_write(Layout.legacy_overlay(container.dir), fastjson.dumps(overlay, sort_keys=True).encode(),
                            tmpdir=self.layout.tmp)
        fresh = self.load(container.id)
        container.record, container.v1 = fresh.record, fresh.legacy
        return container

    def add_name(self, container, name, *, force=False):
        """A 1.x container's names, and every name in a repository 1.x still uses, are 1.x's containers/<name>
        links, as 1.3 writes them (store/v1names.py): 1.3 sees them too."""
        check_name(name)
        v1 = self._v1_prepare() or container.legacy is not None
        self._link_name(container.id, name, force=force, v1=v1)

    def _refuse_used(self, name, force):
        used = self.names().get(name)
        if used is not None and not force and os.path.isdir(self.layout.container(used)):
            raise UdockerError(f"container name already in use: {name}",
                               hint="choose another name or remove it with 'udocker rmname'")

    def _link_name(self, container_id, name, *, force=False, v1=False):
        """Take `name` for `container_id`, exclusively (one symlink creation): udocker 2's containers/.names/<name>,
        or with `v1` udocker 1.x's containers/<name> (store/v1names.py); a name used in the other place is
        refused too."""
        from udocker import fs

        if v1:
            link, other = self.layout.container(name), self.layout.name(name)
        else:
            fs.ensure_dir(self.names_dir)
            link, other = self.layout.name(name), self.layout.container(name)
        if os.path.islink(other) and not force:
            self._refuse_used(name, force)
        while True:
            try:
                os.symlink(container_id, link)
                return
            except FileExistsError:
                if not os.path.islink(link) or not force and not self._stale(link):  # not a link: a container's id
                    raise UdockerError(f"container name already in use: {name}",
                                       hint="choose another name or remove it with 'udocker rmname'") from None
                try:
                    os.unlink(link)
                except FileNotFoundError:
                    pass
            except OSError as exc:
                raise fs.store_error("write", self.names_dir, exc) from None

    def _stale(self, link):
        """True when the name `link` points at a container that is neither published nor being created
        (a create killed between taking the name and publishing). Staging is looked at before the
        published directory: a create renames the one into the other."""
        try:
            container_id = link_id(os.readlink(link))
        except FileNotFoundError:
            return True
        if not container_id or container_id.startswith("."):
            return True
        for entry in os.listdir(self.layout.tmp):
            if entry.startswith(_STAGING) and os.path.lexists(os.path.join(self.layout.tmp, entry, container_id)):
                return False
        return not os.path.lexists(self.layout.container(container_id))

    def _unlink_name(self, name, container_id):
        """Remove the name `name` of `container_id`, udocker 2's or udocker 1.x's (not one another container took)."""
        for link in (self.layout.name(name), self.layout.container(name)):
            try:
                if link_id(os.readlink(link)) == container_id:
                    os.unlink(link)
            except OSError:
                pass

    def remove_name(self, name):
        from udocker.store.v1containers import remove_v1_name

        self._v1_prepare()
        try:
            os.unlink(self.layout.name(name))
        except FileNotFoundError:
            if remove_v1_name(self.layout.containers, name):
                return
            raise NotFound(f"container name not found: {name}", hint="see 'udocker ps'") from None

    def rename(self, old, new):
        container = self.find(old)
        if old not in self.names_of(container.id):
            raise NotFound(f"container name not found: {old}", hint="see 'udocker ps'")
        self.add_name(container, new)
        self.remove_name(old)

    def remove(self, container, *, force=False):
        """Remove directory and names. A protected container needs unprotect first (or force).

        The directory goes first, by one rename into tmp/: a kill at any moment leaves the container
        whole with its names, or gone with names that point at nothing (reclaimed by add_name())."""
        from udocker import fs

        protected = container.record.get("protected") or (  # or by udocker 1.3's protect (its PROTECT file)
            self.v1_repository and os.path.exists(os.path.join(container.dir, "PROTECT")))
        if protected and not force:
            raise UdockerError(f"container is protected: {container.id}", hint="run 'udocker unprotect' first")
        self._v1_prepare()
        names = self.names_of(container.id)
        with fs.scratch_dir(self.layout.tmp, prefix="remove-") as scratch:
            moved = os.path.join(scratch, container.id)
            try:
                os.rename(container.dir, moved)
            except FileNotFoundError:
                moved = None
            except OSError as exc:
                raise fs.store_error("remove", container.dir, exc) from None
            for name in names:
                self._unlink_name(name, container.id)
            if moved:
                _make_removable(moved)


_STAGING = "create-"
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")
_HEX = frozenset("0123456789abcdef")


def _read_record(directory):
    """container.json's bytes; when it is missing from an existing container, read again for a moment (another
    node's replacement of it may be two renames on NFS or FUSE: fs.read_replaced)."""
    path = Layout.container_record(directory)
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        if not os.path.isdir(directory):
            raise
    from udocker import fs  # not on the fast path of `run`

    return fs.read_replaced(path)


def _valid_name(name):
    """A letter or digit, then up to 127 letters, digits, '_', '.' or '-'; not shaped like a container id.
    (Without re: `run` finds its container by name, and re costs ~3 ms of its start.)"""
    return (0 < len(name) <= 128 and name[0] in _ALNUM and _NAME_CHARS.issuperset(name)
            and not _is_uuid(name))


def _is_uuid(text):
    """Shaped like a container id: 8-4-4-4-12 lowercase hex digits."""
    parts = text.split("-")
    return [len(part) for part in parts] == [8, 4, 4, 4, 12] and _HEX.issuperset("".join(parts))


def check_name(name):
    if not _valid_name(name):
        raise UdockerError(f"invalid container name: {name!r}",
                           hint="use letters, digits, '_', '.' and '-', starting with a letter or digit")


def _broken(container_id, reason):
    error = StoreError(f"container {container_id} is broken: {reason}",
                       hint=f"remove it with 'udocker rm {container_id}'")
    error.reason = reason
    return error


def _write_json(path, data):
    import json

    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())


def _make_removable(top):
    """Give the user write permission on every directory so that the tree can be deleted."""
    for parent, dirs, _ in os.walk(top):
        for name in dirs:
            path = os.path.join(parent, name)
            try:
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
            except OSError:
                pass
