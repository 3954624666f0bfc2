"""Containers: containers/<id>/ holding container.json, rootfs/ and engine/<name>/ state."""

import os


class Container:
    """One container directory. `record` is the parsed container.json:
    {"id", "names": [...], "image": ref, "manifest": digest, "config": image config ("config" object of the
    image configuration: Env, Cmd, Entrypoint, WorkingDir, User...), "platform": {...}, "mode": "P1"|None,
    "created": ISO time, "protected": bool}."""

    def __init__(self, directory, record):
        self.dir = directory
        self.record = record

    @property
    def id(self):
        return self.record["id"]

    @property
    def rootfs(self):
        return os.path.join(self.dir, "rootfs")

    def engine_dir(self, name):
        """Where engine `name` keeps its state for this container (created on demand by the engine)."""
        return os.path.join(self.dir, "engine", name)

    @property
    def mode(self):
        return self.record.get("mode")
