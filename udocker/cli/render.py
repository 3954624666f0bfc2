"""Output of results on stdout: aligned text tables or JSON (without click: cli/listing.py runs without it)."""

import sys


def table(headers: list, rows: list) -> None:  # no typing: `ps` loads none
    """Print rows under headers, columns left-aligned and separated by two spaces."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    sys.stdout.write("".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in cells))
    sys.stdout.flush()


def as_json(data: object) -> None:
    import json  # only for --json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def size(num: int) -> str:
    """Human sizes as docker prints them (decimal units)."""
    value = float(num)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{num}B"
