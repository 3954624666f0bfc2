"""`udocker info`: what this node offers (architecture, kernel features, engine modes, GPUs, Infiniband)."""

import click

from udocker.cli import render


def _yes(value):
    return "unknown" if value is None else "yes" if value else "no"


def text_lines(report):
    """The report as `key: value` lines, in the order of the JSON."""
    arch, kern, userns = report["architecture"], report["kernel"], report["user_namespaces"]
    trace, sec, gpu, ib = report["ptrace"], report["seccomp"], report["gpu"], report["infiniband"]
    lines = [f"architecture: {arch['machine']} ({arch['platform']})",
             f"kernel: {kern['system']} {kern['release']}",
             f"user namespaces: {_yes(userns['available'])} (unshare -U: {_yes(userns['unshare_works'])},"
             f" max_user_namespaces: {userns['max_user_namespaces']},"
             f" unprivileged_userns_clone: {userns['unprivileged_userns_clone']})",
             f"ptrace: {_yes(trace['available'])} (yama ptrace_scope: {trace['yama_ptrace_scope']},"
             f" {trace['meaning']})",
             f"seccomp: {_yes(sec['available'])} (this process: mode {sec['mode']}, {sec['filters']} filters)",
             "engines:"]
    for engine in report["engines"]:
        where = f"{engine['origin']}, {engine['path']}" if engine["path"] else engine["problem"]
        where += f": {engine['problem']}" if engine["path"] and engine["problem"] else ""
        lines.append(f"  {engine['name']}: {engine['version'] or '-'} ({where})")
    lines.append("modes:")
    for mode, state in report["modes"].items():
        lines.append(f"  {mode}: {state['status']}" + (f" ({state['reason']})" if state["reason"] else ""))
    if gpu["devices"]:
        lines.append(f"gpus: driver {gpu['driver']}, cuda {gpu['cuda'] or 'unknown'}")
        for device in gpu["devices"]:
            memory = f", {device['memory_total'] // 2**20} MiB" if device.get("memory_total") else ""
            lines.append(f"  {device['index']}: {device['name']} ({device['uuid']}{memory})")
    else:
        lines.append("gpus: none" + (f" (driver {gpu['driver']})" if gpu["driver"] else ""))
    if ib["ports"] or ib["devices"]:
        lines.append("infiniband:")
        for port in ib["ports"]:
            lines.append(f"  {port['device']} port {port['port']}: {port['state']}, {port['rate']},"
                         f" {port['link_layer']}")
    else:
        lines.append("infiniband: none")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def info(state, as_json):
    """Show what this node offers: architecture, kernel features, engine modes, GPUs, Infiniband."""
    from udocker import hostinfo

    report = hostinfo.collect(state.config, state.layout)
    if as_json:
        render.as_json(report)
        return
    for line in text_lines(report):
        click.echo(line)


COMMANDS = [info]
