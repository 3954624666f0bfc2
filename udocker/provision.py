"""The container service of `udocker run` and `udocker setup`: it finds a container, or creates one from an
image (pulled as the pull policy says), and prepares it for the mode it runs in.

Preparation (and its undoing by `setup --purge`) happens under the container's prepare lock
(Layout.lock("prepare", id)), so that concurrent runs prepare once and a purge never meets a half-done
preparation. The image store, the registry client and udocker.fs are imported only when a container is
created, pulled or prepared: running a prepared container reads its container.json and nothing else."""

import os

from udocker.engines import modes
from udocker.errors import NotFound, UdockerError
from udocker.store.containers import ContainerStore


class Located:
    """A root file system directory run with --location, as if it were a container."""

    def __init__(self, directory):
        if not os.path.isdir(directory):
            raise UdockerError(f"not a directory: {directory}")
        self.rootfs = os.path.abspath(directory)
        self.dir = self.rootfs + ".udocker"
        self.record = {"id": "location-" + str(os.getpid()), "config": {}, "mode": None}
        self.id = self.record["id"]
        self.mode = None

    def engine_dir(self, name):
        return os.path.join(self.dir, "engine", name)


def _no_progress():
    return None


class ContainerService:
    """Containers of one repository (`layout`) under `config`. `progress()` is called when the image store is
    first needed (a container is created, an image pulled) and returns where pull progress goes (the
    protocol of udocker/pull.py) or None: the command line reports there, and sets up its logging then."""

    def __init__(self, config, layout, *, progress=_no_progress):
        self.config = config
        self.layout = layout
        self.store = ContainerStore(layout, config["lock_timeout"])
        self.progress = progress

    # -- finding and creating --------------------------------------------------------------------------
    def find(self, text):
        """The container named (or with the id or id prefix) `text`; NotFound if none."""
        try:
            return self.store.find(text)
        except FileNotFoundError:  # a new repository has no containers/ to list
            raise NotFound(f"container not found: {text}", hint="see 'udocker ps'") from None

    def for_run(self, target, *, name=None, pull="missing", location=None):
        """The container to run: the directory `location`, else the container `target`, else a new container
        of image `target` (pulled as `pull` says; "reuse": the container `name` if it exists)."""
        if location:
            return Located(location)
        if pull == "reuse" and name:
            try:
                return self.find(name)
            except NotFound:
                return self._reuse(target, name)
        try:
            return self.find(target)
        except NotFound:
            return self._from_image(target, pull, name)

    def _reuse(self, target, name):
        """Container `name`, made from image `target` by the first of several processes asking at once (the
        tasks of a job preparing one container per node): the others wait for it instead of failing with
        'container name already in use'."""
        with self._locked("name", name, f"container name {name}"):
            try:
                return self.find(name)
            except NotFound:
                return self._from_image(target, "missing", name)

    def _from_image(self, target, policy, name):
        from udocker.create import create
        from udocker.store import Repository

        progress = self.progress()
        repo = Repository.open(self.layout, lock_timeout=self.config["lock_timeout"],
                               max_layer_size=self.config["max_layer_size"])
        try:
            local = repo.images.find(target) if policy != "always" else None
        except NotFound:
            local = None
            if policy == "never":
                raise NotFound(f"no container or image named {target}", hint="pull it or use --pull=missing") from None
        if local is None:
            self._pull(repo, target, progress)
        return create(repo, self.store, target, name=name, mode=None, progress=progress)

    def _pull(self, repo, target, progress):
        from udocker import pull as pulling
        from udocker.oci import platform as platforms
        from udocker.reference import parse
        from udocker.registry.client import RegistryClient

        config = self.config
        wanted = platforms.parse(config["platform"]) if config["platform"] else platforms.host()
        client = RegistryClient(config, repo.layout)
        try:
            pulling.pull(repo, client, parse(target), platform=wanted, concurrency=config["pull_concurrency"],
                         progress=progress, unpack=True)
        finally:
            client.close()

    def remove(self, container):
        """--rm: remove `container` (even if protected), unless it is a --location directory."""
        if not isinstance(container, Located):
            self.store.remove(container, force=True)

    # -- modes -----------------------------------------------------------------------------------------
    def engine_for(self, container):
        """The mode to run in (the container's, else the configured default, else probed) and its engine,
        prepared for this container (once per mode switch, under the container's lock)."""
        prepared = container.record.get("prepared")
        mode = container.mode or self.config["default_execution_mode"]
        if not mode or mode == "auto":
            # the mode auto chose at the first run is kept: probing again costs a PRoot or runc start per run
            mode = prepared or modes.auto_mode(self.config, self.layout, container)
        engine = modes.get_engine(mode, self.config, self.layout)
        if isinstance(container, Located):
            engine.probe(mode, container)
            engine.prepare(container, mode)
        elif prepared != mode:
            # once per mode switch (a prepared container has shown the mode works here), before the previous
            # mode is undone: a mode that cannot run this container (fakechroot: too old a glibc) changes nothing
            engine.probe(mode, container)
            self.prepare(container, mode, engine)
        elif mode in engine.prepare_each_run:
            self.prepare(container, mode, engine)
        return mode, engine

    def prepare(self, container, mode, engine):
        """Switch `container` to `mode`: undo the previous mode's preparation, make shared files private
        when the engine may write them in place (R modes: root in a user namespace overrides permissions),
        then prepare. Serialised per container so that concurrent runs prepare once."""
        with self._locked("prepare", container.id, f"container {container.id}"):
            record = self.store.load(container.id).record
            previous = record.get("prepared")
            if previous == mode and mode not in engine.prepare_each_run:
                container.record = record
                return
            if previous and previous != mode:
                modes.get_engine(previous, self.config, self.layout).unprepare(container, previous)
            if mode.startswith("R") and record.get("shared"):
                from udocker.store import rootfs as rootfs_store

                rootfs_store.materialize(container.rootfs)
                self.store.update(container, shared=False)
            engine.prepare(container, mode)
            self.store.update(container, prepared=mode)

    def set_mode(self, container, mode, *, force=False):
        """`setup --execmode`: run `container` in `mode` from now on, prepared now (again with `force`). The
        mode is probed before anything changes: a refused mode is not recorded."""
        if container.legacy is not None:
            from udocker.store.v1containers import check_runnable

            check_runnable(container.legacy, "set up")
        engine = modes.get_engine(mode, self.config, self.layout)
        engine.probe(mode, container)
        if force:
            self.store.update(container, prepared=None)
        self.store.update(container, mode=mode)
        self.prepare(container, mode, engine)

    def purge(self, container):
        """`setup --purge`: undo the engine's changes to `container` and forget its mode and every setting,
        under the container's prepare lock (a run preparing it meanwhile is waited for)."""
        with self._locked("prepare", container.id, f"container {container.id}"):
            container.record = self.store.load(container.id).record
            previous = container.record.get("prepared")
            if previous:
                modes.get_engine(previous, self.config, self.layout).unprepare(container, previous)
                self.store.update(container, prepared=None, mode=None)
            self.store.update(container, nvidia=None)

    def _locked(self, kind, name, what):
        from udocker import fs  # not needed to run a prepared container

        fs.ensure_dir(self.layout.locks)
        return fs.locked(self.layout.lock(kind, name), timeout=self.config["lock_timeout"], what=what)
