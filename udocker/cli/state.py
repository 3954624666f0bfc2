"""What every command needs: the effective configuration and the repository, built on first use."""

from __future__ import annotations  # no typing: `images` and `ps` load none

from udocker.config import Config
from udocker.paths import Layout


class State:
    def __init__(self, *, config_file: str | None, overrides: dict, debug: bool, quiet: bool):
        self.config_file = config_file
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.debug = debug
        self.quiet = quiet
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = Config.load(config_file=self.config_file, cli=self.overrides)
        return self._config

    def override(self, **values: object) -> None:
        """Command options that are also config keys (e.g. pull --registry) win over everything else."""
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self._config = None

    @property
    def layout(self) -> Layout:
        return Layout(self.config["topdir"], self.config["tmpdir"])

    def repository(self, *, create: bool = True):
        """Open (and by default create) the repository; cleans leftovers of dead processes in tmp/."""
        from udocker.store import Repository

        return Repository.open(self.layout, create=create, lock_timeout=self.config["lock_timeout"],
                               max_layer_size=self.config["max_layer_size"])


def from_general(general: dict) -> State:
    """The State of a command run without click (cli/listing.py, cli/fastpull.py), from the general options as
    cli.split_general() read them; logging set up as the click group does."""
    from udocker import log

    debug, quiet = bool(general.get("debug")), bool(general.get("quiet"))
    log.setup(debug=debug, quiet=quiet)
    return State(config_file=general.get("config"), debug=debug, quiet=quiet,
                 overrides={"topdir": general.get("repo"), "insecure": general.get("insecure")})
