"""The execution modes, in one table: each mode's engine and the engines (programs, libraries) it needs.

P1 P2     PRoot (engines/proot.py): P1 lets PRoot use its seccomp filter, P2 sets PROOT_NO_SECCOMP=1
F1 - F4   fakechroot (engines/fakechroot.py): F1 LD_PRELOAD only, F2 with a patched copy of the loader, F3 and
          F4 patch the container's executables with patchelf (F4 again before every run)
R1 R2 R3  a rootless OCI runtime (engines/ocirt.py): runc or crun as the `oci_runtime` setting says; R2 and
          R3 run PRoot inside it (R3 without seccomp)

Everything else derives from this table: engines.modes (which class runs a mode), each engine's `modes`,
the engine report of `udocker install` / `udocker info`, the configuration's and the CLI's list of choices.
A leaf: it imports nothing, so that the configuration can read it without importing any engine.
"""

# mode -> (engine: "proot", "fakechroot", or "oci" for runc/crun; the engines it needs, "runc|crun": either)
TABLE = {
    "P1": ("proot", ("proot",)),
    "P2": ("proot", ("proot",)),
    "F1": ("fakechroot", ("fakechroot",)),
    "F2": ("fakechroot", ("fakechroot",)),
    "F3": ("fakechroot", ("fakechroot", "patchelf")),
    "F4": ("fakechroot", ("fakechroot", "patchelf")),
    "R1": ("oci", ("runc|crun",)),
    "R2": ("oci", ("runc|crun", "proot")),
    "R3": ("oci", ("runc|crun", "proot")),
}
NAMES = tuple(TABLE)  # in the order udocker lists them


def engine_of(mode):
    """The engine key of `mode` (a name from NAMES)."""
    return TABLE[mode][0]


def needs(mode):
    """The engines `mode` needs; "a|b" means either."""
    return TABLE[mode][1]


def engine_modes(engine):
    """The modes an engine key ("proot", "fakechroot", "oci") runs, in table order."""
    return tuple(mode for mode, (key, _) in TABLE.items() if key == engine)
