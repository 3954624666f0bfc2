"""`udocker images` and `udocker ps` without click (~15-40 ms of imports on a busy node, more than the listing):
cli/__init__.py sends them here when every argument is one of the command's flags (FLAGS); anything else (help,
a mistyped or combined option) goes through click, whose commands (cli/images.py, cli/containers.py) call the
same functions. tests/unit/test_cli_commands.py checks FLAGS against the click commands' options."""

from udocker.cli import render
from udocker.errors import UdockerError

# flag -> parameter, as the click commands declare them
FLAGS = {"images": {"-l": "long_", "-p": "platform", "--no-trunc": "no_trunc", "-a": "all_", "--all": "all_",
                    "--json": "as_json"},
         "ps": {"-a": "all_", "--all": "all_", "-m": "mode", "-s": "size", "-p": "platform", "--json": "as_json"}}


def fast(general, command, args):
    """`command`'s exit status when every argument in `args` is one of its flags, else None (click's turn).
    `general`: the general options as cli.split_general() read them."""
    flags = FLAGS[command]
    if not all(arg in flags for arg in args):
        return None
    from udocker.cli.boundary import guarded
    from udocker.cli.state import from_general

    state = from_general(general)
    options = {flags[arg]: True for arg in args}
    run = images if command == "images" else ps
    return guarded(lambda: run(state, **options) or 0, debug=state.debug)


def _created(config):
    return (config.get("created") or "")[:19].replace("T", " ")


def images(state, *, long_=False, platform=False, no_trunc=False, all_=False, as_json=False):
    """`udocker images`: list the images in the repository (a broken one is listed as such)."""
    repo = state.repository()
    rows, data = [], []
    for image in repo.images.list():
        try:
            manifest, config = repo.images.details(image, repo.blobs)
        except UdockerError as exc:
            data.append({"reference": image.ref, "id": None, "digest": image.descriptor.digest, "size": None,
                         "created": None, "platform": None, "protected": image.protected, "layers": [],
                         "broken": exc.message})
            rows.append([image.ref, "(broken)", "-", "-"] + (["-"] if platform else []))
            continue
        plat = "/".join(x for x in (config.get("os"), config.get("architecture"), config.get("variant")) if x)
        item = {"reference": image.ref, "id": manifest.config.digest, "digest": image.descriptor.digest,
                "size": manifest.size, "created": config.get("created"), "platform": plat,
                "protected": image.protected, "layers": [layer.digest for layer in manifest.layers]}
        data.append(item)
        row = [image.ref + (" (protected)" if image.protected else ""),
               manifest.config.digest if no_trunc else manifest.config.short_id,
               _created(config), render.size(manifest.size)]
        rows.append(row + ([plat] if platform else []))
        if long_ and not as_json:
            rows += [["  " + layer.digest, "", "", render.size(layer.size)] + ([""] if platform else [])
                     for layer in manifest.layers]
    if as_json:
        render.as_json(data)
    else:
        render.table(["REPOSITORY", "IMAGE ID", "CREATED", "SIZE"] + (["PLATFORM"] if platform else []), rows)


def container_store(state):
    """The container store of the repository (created if missing, tmp/ cleaned)."""
    from udocker.store.containers import ContainerStore

    state.repository()  # creates the repository and cleans tmp/
    return ContainerStore(state.layout, state.config["lock_timeout"])


def _platform(platform):
    return "/".join(platform[k] for k in ("os", "architecture", "variant") if platform.get(k))


def _row(containers, container, *, size):
    from udocker.store import runs

    names = containers.names_of(container.id)
    state = runs.summary(container.dir)
    row = {"id": container.id, "names": names, "image": container.record.get("image"),
           "mode": state.pop("mode") or container.record.get("mode") or "",
           "protected": bool(container.record.get("protected")),
           "platform": _platform(container.record.get("platform") or {}),
           "created": container.record.get("created"), **state}
    if container.broken:
        row["broken"] = container.broken  # its record is {"id"}: the other fields are empty
    if size:
        from udocker.store.rootfs import private_size

        row["size"] = private_size(container.rootfs)
    return row


def _since(seconds):
    if seconds < 60:
        return f"{int(seconds)} seconds"
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit if seconds >= 2 * size else unit[:-1]}"
    return ""


def _status(row):
    """STATUS as docker words it: Up 3 minutes (on HOST, 2 runs), Exited (N) 5 seconds ago, Created."""
    import time

    now = time.time()
    if row["status"] == "running":
        extra = [f"on {row['host']}"] if row.get("host") else []
        extra += [f"{row['runs']} runs"] if row["runs"] > 1 else []
        return f"Up {_since(now - row['started'])}" + (f" ({', '.join(extra)})" if extra else "")
    if row["status"] == "exited":
        when = f" {_since(now - row['finished'])} ago" if row.get("finished") else " (lost)" if row.get("lost") else ""
        return f"Exited ({row['exit']}){when}"
    return "Created"


def ps(state, *, all_=False, mode=False, size=False, platform=False, as_json=False):
    """`udocker ps`: list the containers with their status (a broken one is listed as such)."""
    containers = container_store(state)
    listed = containers.list()
    rows = [_row(containers, c, size=size) for c in listed]
    if as_json:
        render.as_json(rows)
        return
    headers = ["CONTAINER ID", "P"] + (["M"] if mode else []) + ["NAMES", "IMAGE", "STATUS", "PID", "MODE"]
    headers += (["SIZE"] if size else []) + (["PLATFORM"] if platform else [])
    table = []
    for container, row in zip(listed, rows):
        line = [row["id"], "R" if row["protected"] else "W"] + ([container.record.get("mode") or "-"] if mode else [])
        image = f"(broken: {row['broken']})" if row.get("broken") else row["image"] or "-"
        line += [",".join(row["names"]) or "-", image, _status(row), row["pid"] or "-", row["mode"] or "-"]
        line += ([render.size(row["size"])] if size else []) + ([row["platform"]] if platform else [])
        table.append(line)
    render.table(headers, table)
