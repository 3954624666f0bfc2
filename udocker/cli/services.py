"""Commands on running containers (services): logs, stop, kill, wait. Started with `udocker run -d`."""

import click


def _find(state, text):
    from udocker.store.containers import ContainerStore

    state.repository()  # creates the repository and cleans tmp/
    return ContainerStore(state.layout, state.config["lock_timeout"]).find(text)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Go on printing what is written while the container runs.")
@click.option("-n", "--tail", type=click.IntRange(min=0), metavar="N", help="Only the last N lines.")
@click.argument("container")
@click.pass_obj
def logs(state, follow, tail, container):
    """Print the output of CONTAINER's detached runs (run -d)."""
    from udocker import services

    found = _find(state, container)
    out = click.get_binary_stream("stdout")

    def write(data):
        out.write(data)
        out.flush()

    if follow:
        services.follow(found, write, tail)
    else:
        write(services.log_tail(found, tail))


@click.command()
@click.option("-t", "--time", "seconds", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Grace period before everything is killed (default: the run's stop_timeout, which also bounds it).")
@click.argument("names", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def stop(state, seconds, names):
    """Stop running containers: SIGTERM to the program, then after the grace period SIGKILL to every process
    of the container. Prints each container's id."""
    from udocker import services

    for text in names:
        found = _find(state, text)
        services.stop(found, seconds)
        click.echo(found.id)


@click.command()
@click.option("-s", "--signal", "name", default="KILL", show_default=True, metavar="SIGNAL",
              help="KILL (every process of the container), or TERM, INT, HUP, QUIT, USR1, USR2 (to the program).")
@click.argument("names", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_obj
def kill(state, name, names):
    """Send a signal to running containers."""
    from udocker import services

    for text in names:
        found = _find(state, text)
        services.kill(found, name)
        click.echo(found.id)


def _address(text):
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"not a port or HOST:PORT: {text}")
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port)


@click.command()
@click.option("--until-port", "address", metavar="[HOST:]PORT",
              help="Wait until something listens on HOST:PORT (default host 127.0.0.1), not for the end.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60, show_default=True, metavar="SECONDS",
              help="With --until-port: fail after SECONDS.")
@click.argument("container")
@click.pass_obj
def wait(state, address, timeout, container):
    """Wait until CONTAINER stops and print its exit status; or, with --until-port, until it listens (exit status
    1 with one error line on timeout or when it stops first)."""
    from udocker import services

    found = _find(state, container)
    if address:
        host, port = _address(address)
        services.wait_port(found, port, host=host, timeout=timeout)
        return
    click.echo(services.wait(found))


COMMANDS = [logs, stop, kill, wait]
