"""install: report the engines this host can use, or install an engine bundle from a local file.

Without options it prints two tables on stdout (or one JSON object with --json):

  ENGINE      VERSION    FOUND IN        PATH
  proot       5.1.0      engines folder  /home/u/.udocker/engines/bin/proot
  crun        -          -               crun not found

  MODE  ENGINES     STATUS  DETAIL
  P1    proot       usable
  R1    runc        found   not probed

FOUND IN is 'configured' (engine_paths), 'engines folder', 'PATH' or 'system' (a system library directory);
for an engine not found, PATH says why. STATUS is usable/unusable when each mode's engine was probed, or
found/missing when the engine modules are not available to probe. Nothing is ever downloaded.
"""

import click

from udocker.cli import render
from udocker.errors import UsageError


@click.command("install")
@click.option("--from", "source", metavar="PATH",
              help="Install the engine bundle in PATH (a .tar.gz from engines/build-bundle.sh, or its directory).")
@click.option("--force", is_flag=True, help="Replace installed engines; skip the host glibc check.")
@click.option("--purge", is_flag=True, help="Remove the engines installed in the repository.")
@click.option("--trust-bundle-manifest", is_flag=True,
              help="Accept files whose sums are not in udocker's shipped engines list (a site-built bundle);"
                   " each file is still checked against the bundle's own manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def install(state, source, force, purge, trust_bundle_manifest, as_json):
    """Report usable engines per execution mode, or install engines from a local bundle (--from)."""
    from udocker.engines import install as provision

    if purge and source:
        raise UsageError("--purge and --from cannot be combined", hint="purge first, then install")
    state.repository()
    layout, timeout = state.layout, state.config["lock_timeout"]
    if purge:
        count = provision.purge(layout, lock_timeout=timeout)
        click.echo(f"removed {count} files from {layout.engines}")
        return
    if source:
        done = provision.install_from(source, layout, force=force, trust_bundle_manifest=trust_bundle_manifest,
                                      lock_timeout=timeout)
        _print_installed(done, as_json)
        return
    engines = provision.find_engines(state.config, layout)
    modes = provision.check_modes(state.config, layout, engines)
    if as_json:
        render.as_json({"engines": [row.__dict__ for row in engines], "modes": [row.__dict__ for row in modes]})
        return
    render.table(["ENGINE", "VERSION", "FOUND IN", "PATH"],
                 [(r.name, r.version or "-", r.origin or "-", r.path or r.problem) for r in engines])
    click.echo()
    render.table(["MODE", "ENGINES", "STATUS", "DETAIL"], [(r.mode, r.engine, r.status, r.detail) for r in modes])


def _print_installed(done, as_json):
    verified = done.verified
    manifest = verified.manifest
    if as_json:
        render.as_json({"directory": done.directory, "changed": done.changed, "checked_by": verified.checked_by,
                        "differs_from_shipped": verified.differs_from_shipped,
                        "engines": {k: v.get("version") for k, v in manifest.engines.items()}})
        return
    versions = ", ".join(f"{name} {info.get('version')}" for name, info in manifest.engines.items())
    if not done.changed:
        click.echo(f"engines already installed in {done.directory}: {versions}")
        return
    click.echo(f"installed {len(manifest.files)} files into {done.directory}: {versions}")
    by_shipped = sum(1 for how in verified.checked_by.values() if how == "shipped list")
    if by_shipped == len(manifest.files):
        click.echo(f"verified: all {by_shipped} files against the shipped engines list")
        return
    click.echo(f"verified: {by_shipped} files against the shipped engines list, "
               f"{len(manifest.files) - by_shipped} against the bundle's manifest only (--trust-bundle-manifest)")
    for name in verified.differs_from_shipped:
        click.echo(f"differs from the shipped engines list: {name}")


COMMANDS = [install]
