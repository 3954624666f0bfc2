"""install: put the self-contained engines into the repository, and say which engines and modes this host has.

  udocker install                      from the installed udocker-engines wheel, else from engines_url
  udocker install --from FILE|DIR|URL  a bundle tarball (or its directory) from engines/build-bundle.sh, or an
                                       http(s) URL of one (sha256 from URL.sha256, or --sha256)

Then it prints two tables on stdout (or one JSON object with --json):

  ENGINE      VERSION    FROM    PATH
  proot       5.1.0      wheel   /home/u/.udocker/engines/bin/proot
  crun        -          -       crun not found

  MODE  ENGINES     STATUS    DETAIL
  P1    proot       usable

FROM is 'bundle' or 'wheel' (installed in the repository's engines folder from a tarball or URL, or from the
wheel), 'configured' (engine_paths), 'PATH' or 'system' (a system library directory); for an engine not
found, PATH says why. With nothing to install from (no wheel, no engines_url, no --from) and no engines
installed, it says so on stderr and reports the engines of the host (as udocker 1.3 skips the install then);
it fails only when no mode can run. Every bundle is verified against sha256 pins before anything is installed, and a
failed or killed install leaves the previous engines as they were.
"""

import os
import sys

import click

from udocker.cli import render
from udocker.errors import EngineError, UsageError


@click.command("install")
@click.option("--from", "source", metavar="FILE|URL",
              help="Install the engine bundle in FILE (a .tar.gz from engines/build-bundle.sh, or its directory) "
                   "or at an http(s) URL.")
@click.option("--sha256", metavar="HEX", help="The bundle tarball's sha256 (default: read from URL.sha256).")
@click.option("--force", is_flag=True, help="Replace engines installed from another bundle.")
@click.option("--purge", is_flag=True, help="Remove the engines installed in the repository.")
@click.option("--trust-bundle-manifest", is_flag=True,
              help="Accept files whose sums are not in udocker's shipped engines list (a site-built bundle);"
                   " each file is still checked against the bundle's own manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def install(state, source, sha256, force, purge, trust_bundle_manifest, as_json):
    """Install the self-contained engines (from the udocker-engines wheel, engines_url, or --from FILE|URL)
    and report the engines and execution modes this host can use."""
    from udocker.engines import install as provision

    if purge and (source or sha256):
        raise UsageError("--purge cannot be combined with --from or --sha256", hint="purge first, then install")
    state.repository()
    layout, timeout = state.layout, state.config["lock_timeout"]
    if purge:
        count = provision.purge(layout, lock_timeout=timeout)
        click.echo(f"removed {count} files from {layout.engines}")
        return
    options = {"force": force, "trust_bundle_manifest": trust_bundle_manifest, "lock_timeout": timeout}
    done = _install(state, source, sha256, options, quiet=as_json)
    if done is _NOTHING:  # udocker 1.3 skips the install then ("installation skipped") and goes on
        click.echo("note: nothing to install (no udocker-engines wheel next to udocker, no engines_url): "
                   "the engines found on this host follow", err=True)
        if not any(row.status == "usable" for row in _report(state, None, as_json)):
            raise EngineError("no execution mode can run here and there is no engine bundle to install",
                              hint="pip install udocker-engines, set engines_url, or use --from FILE|URL")
        return
    _report(state, done, as_json)


_NOTHING = object()  # _install's answer when there is nothing to install from and no engines installed


def _install(state, source, sha256, options, *, quiet):
    """Install from --from, the wheel or engines_url; None when there is nothing to install from but the
    repository already has engines, _NOTHING when it has none either."""
    from udocker.engines import fetch, locate
    from udocker.engines import install as provision

    layout = state.layout
    source = source or locate.wheel_bundle()
    if source is not None and not fetch.is_url(source):
        if sha256:
            raise UsageError("--sha256 applies to an http(s) URL", hint="files are checked against their manifest")
        origin = provision.Origin(provision.WHEEL if source == locate.wheel_bundle() else provision.BUNDLE,
                                  os.path.abspath(source))
        return provision.install_from(source, layout, origin=origin, **options)
    url = source or state.config["engines_url"]
    if url is None:
        return None if os.path.isfile(os.path.join(layout.engines, provision.MANIFEST)) else _NOTHING
    with _scratch(layout) as directory:
        path, digest = fetch.fetch(state.config, url, directory, sha256=sha256,
                                   progress=None if quiet or state.quiet else _progress(url))
        # pinned by the sha256 the user or the site published: trusted as the site's own build
        return provision.install_from(path, layout, origin=provision.Origin(provision.BUNDLE, url, digest),
                                      **dict(options, trust_bundle_manifest=True))


def _scratch(layout):
    from udocker import fs

    os.makedirs(layout.tmp, exist_ok=True)
    return fs.scratch_dir(layout.tmp, prefix="engines-download-")


def _progress(url):
    """A line redrawn on a terminal (stderr) while the bundle downloads; nothing in batch logs."""
    if not sys.stderr.isatty():
        return None
    import time

    name, last = url.rsplit("/", 1)[-1], [0.0]

    def show(done, total):
        now = time.monotonic()
        if done != total and now - last[0] < 0.1:  # at most 10 redraws a second
            return
        last[0] = now
        of = f"/{render.size(total)}" if total else ""
        sys.stderr.write(f"\rdownloading {name}: {render.size(done)}{of}" + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show


def _report(state, done, as_json):
    from udocker.engines import report

    engines = report.find_engines(state.config, state.layout)
    modes = report.check_modes(state.config, state.layout, engines)
    if as_json:
        render.as_json({"installed": None if done is None else _installed_json(done),
                        "engines": report.engine_paths(engines), "modes": [row.__dict__ for row in modes]})
        return modes
    if done is not None:
        _print_installed(done)
        click.echo()
    render.table(["ENGINE", "VERSION", "FROM", "PATH"],
                 [(r.name, r.version or "-", r.origin or "-", _where(r)) for r in engines])
    click.echo()
    render.table(["MODE", "ENGINES", "STATUS", "DETAIL"], [(r.mode, r.engine, r.status, r.detail) for r in modes])
    return modes


def _where(row):
    return f"{row.path} ({row.problem})" if row.path and row.problem else row.path or row.problem


def _installed_json(done):
    verified = done.verified
    return {"directory": done.directory, "changed": done.changed, "checked_by": verified.checked_by,
            "differs_from_shipped": verified.differs_from_shipped,
            "engines": {k: v.get("version") for k, v in verified.manifest.engines.items()}}


def _print_installed(done):
    verified = done.verified
    manifest = verified.manifest
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
               f"{len(manifest.files) - by_shipped} against the bundle's manifest only")
    for name in verified.differs_from_shipped:
        click.echo(f"differs from the shipped engines list: {name}")


COMMANDS = [install]
