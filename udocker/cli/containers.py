"""Commands on containers: create, ps, rm, name, rmname, rename, clone, export, setup, migrate, run (help
only)."""

import click

from udocker.cli import listing, render
from udocker.cli.listing import container_store
from udocker.errors import UsageError
from udocker.modetable import NAMES as MODES


@click.command()
@click.option("--name", help="Give the container this name.")
@click.option("--force", is_flag=True, help="Take the name even if another container has it.")
@click.argument("image")
@click.pass_obj
def create(state, name, force, image):
    """Create a container from IMAGE (pulled earlier) and print its id."""
    from udocker.cli.progress import for_stderr
    from udocker.create import create as create_container

    containers = container_store(state)
    container = create_container(state.repository(), containers, image, name=name, force=force,
                                 progress=for_stderr(quiet=state.quiet))
    click.echo(container.id)


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Every container (the default: udocker lists them all).")
@click.option("-m", "mode", is_flag=True, help="Show the execution mode set with setup --execmode.")
@click.option("-s", "size", is_flag=True, help="Show the size of each container's own files.")
@click.option("-p", "platform", is_flag=True, help="Show the platform.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ps(state, all_, mode, size, platform, as_json):
    """List containers, running or not, with their status (a broken one is listed as such: remove it with rm).
    PID is the `udocker run` process that supervises the container (the oldest, when it runs several times)."""
    listing.ps(state, all_=all_, mode=mode, size=size, platform=platform, as_json=as_json)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Remove even if protected or running (stopped first).")
@click.argument("names", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def rm(state, force, names):
    """Remove containers (a running one only with -f, which stops it first)."""
    from udocker import services
    from udocker.store import garbage
    from udocker.store.containers import ContainerStore

    repo = state.repository()
    containers = ContainerStore(repo.layout, state.config["lock_timeout"])
    for text in names:
        container = containers.find(text, broken=True)
        services.ensure_stopped(container, force)
        containers.remove(container, force=force)
        click.echo(container.id)
        garbage.collect_orphan_tree(repo, container.record.get("manifest"))


@click.command()
@click.argument("container")
@click.argument("name")
@click.pass_obj
def name(state, container, name):
    """Give CONTAINER the additional NAME."""
    containers = container_store(state)
    containers.add_name(containers.find(container), name)


@click.command()
@click.argument("name")
@click.pass_obj
def rmname(state, name):
    """Remove NAME from its container."""
    container_store(state).remove_name(name)


@click.command()
@click.argument("old")
@click.argument("new")
@click.pass_obj
def rename(state, old, new):
    """Rename a container from name OLD to NEW."""
    container_store(state).rename(old, new)


@click.command()
@click.option("--name", help="Name the copy.")
@click.argument("container")
@click.pass_obj
def clone(state, name, container):
    """Copy CONTAINER into a new container and print its id."""
    from udocker.create import clone as clone_container

    containers = container_store(state)
    click.echo(clone_container(containers, containers.find(container), name=name).id)


@click.command()
@click.option("-o", "--output", metavar="FILE", help="Write to FILE ('-' or default: stdout).")
@click.option("--clone", "as_clone", is_flag=True, help="Include the container's metadata (for import --clone).")
@click.argument("container")
@click.pass_obj
def export(state, output, as_clone, container):
    """Write CONTAINER's root file system as a tarball."""
    from udocker.create import export as export_container

    containers = container_store(state)
    found = containers.find(container)
    if output and output != "-":
        from udocker import fs

        with fs.atomic_output(output) as stream:
            export_container(found, stream, with_record=as_clone, layout=containers.layout)
        return
    stream = click.get_binary_stream("stdout")
    if stream.isatty():
        raise click.UsageError("refusing to write a tarball to a terminal: use -o FILE")
    export_container(found, stream, with_record=as_clone, layout=containers.layout)


@click.command()
@click.option("--execmode", metavar="MODE", help=f"Run the container in this mode ({', '.join(MODES)}).")
@click.option("--force", is_flag=True, help="Prepare the mode again even if it is already set.")
@click.option("--purge", is_flag=True, help="Undo the engine's changes (e.g. F3 patches) and forget the mode.")
@click.option("--fixperm", is_flag=True, help="Make every directory of the container writable by the user.")
@click.option("--nvidia/--no-nvidia", default=None,
              help="Inject the node's NVIDIA driver on every run (found at run time; nothing is copied).")
@click.argument("container")
@click.pass_obj
def setup(state, execmode, force, purge, fixperm, nvidia, container):
    """Set up CONTAINER: its execution mode (P1 P2 F1-F4 R1-R3), NVIDIA injection. With no option: print its
    execution mode and NVIDIA setting (as udocker 1.3: 'execmode: MODE', 'nvidiamode: True|False')."""
    from udocker.provision import ContainerService

    if execmode and execmode.upper() not in MODES:
        what = " (Singularity)" if execmode.upper() == "S1" else ""
        raise UsageError(f"--execmode {execmode[:20]}{what} is not supported by udocker 2: use one of "
                               + ", ".join(MODES))

    state.repository()  # creates the repository and cleans tmp/
    service = ContainerService(state.config, state.layout)
    found = service.find(container)
    if fixperm:
        from udocker.store.containers import _make_removable

        _make_removable(found.rootfs)
    if purge:
        service.purge(found)
    if execmode:
        service.set_mode(found, execmode.upper(), force=force)
    if nvidia is not None:
        service.store.update(found, nvidia=nvidia)
    if not (execmode or purge or fixperm or nvidia is not None):
        click.echo(f"execmode: {found.record.get('mode') or state.config['default_execution_mode']}")
        click.echo(f"nvidiamode: {bool(found.record.get('nvidia'))}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []})
@click.pass_context
def run(ctx):
    """Run a command in a container, or in a new container of an image."""
    from udocker.cli.run import main as run_main

    state = ctx.obj  # the general options, when they reached click (e.g. `udocker -Dq run`)
    general = {"debug": state.debug, "quiet": state.quiet, "config": state.config_file,
               "repo": state.overrides.get("topdir"), "insecure": state.overrides.get("insecure")}
    ctx.exit(run_main(general, ctx.args))


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be converted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def migrate(state, dry_run, as_json):
    """Convert udocker 1.x containers into udocker 2 ones for good (udocker 1.3 cannot use them afterwards)."""
    from udocker.migrate import migrate as migrate_containers

    rows = migrate_containers(container_store(state), dry_run=dry_run)
    if as_json:
        render.as_json(rows)
    else:
        render.table(["CONTAINER ID", "NAMES", "MODE", "RESULT"],
                     [[r["id"], ",".join(r["names"]) or "-", r["mode"], r["result"]] for r in rows])
    skipped = [r["id"] for r in rows if r["result"].startswith("skipped")]
    if skipped:
        from udocker.errors import UdockerError

        raise UdockerError(f"{len(skipped)} udocker 1 container(s) not converted: {', '.join(skipped)}",
                           hint="see the RESULT column above")


COMMANDS = [run, create, ps, rm, name, rmname, rename, clone, export, setup, migrate]
