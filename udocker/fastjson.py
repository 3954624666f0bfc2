"""JSON for the start of `udocker run`: loads() and dumps() of udocker's records with the C parts of CPython's
json package (_json's scanner and string encoder) without importing the package itself. `import json`
compiles json.decoder's regular expressions and so loads re and enum (~6 ms of every run here, more on a
busy node); every run reads container.json and writes its run record (store/runs.py), and R modes write
the bundle's config.json. Elsewhere udocker uses json as usual.

Same results as json.loads() (a ValueError for bad input, json.JSONDecodeError where _json reports it) and
json.dumps() with its default separators, ensure_ascii and sort_keys: the bytes of a bundle's config.json
name it (engines/ocirt.py), so both must write the same. Without _json (another Python implementation),
json itself does the work."""

try:
    import _json
except ImportError:  # pragma: no cover - CPython has it
    _json = None

_WHITESPACE = " \t\n\r"  # json's: JSON's insignificant whitespace


class _Options:
    """What _json's scanner reads from a json.JSONDecoder: json.loads()'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads() accepts them


_scan = _json.make_scanner(_Options) if _json else None


def loads(text):
    """The value of the JSON document `text` (str, or UTF-8 bytes)."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
        if text.startswith("\ufeff"):  # json.loads() of bytes accepts a UTF-8 byte order mark
            text = text[1:]
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError(f"Expecting value: char {start}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def dumps(value, *, sort_keys=False):
    """`value` (dicts, lists, tuples, str, int, float, bool, None) as json.dumps(value, sort_keys=...) writes
    it; TypeError for anything else."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, sort_keys=sort_keys)
    return "".join(_encode(value, sort_keys))


def _encode(value, sort_keys):
    if isinstance(value, str):
        yield _json.encode_basestring_ascii(value)
    elif value is None or value is True or value is False:
        yield {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, int):
        yield int.__repr__(value)
    elif isinstance(value, float):
        yield _float(value)
    elif isinstance(value, dict):
        yield "{"
        items = sorted(value.items()) if sort_keys else value.items()
        for number, (key, item) in enumerate(items):
            yield f"{', ' if number else ''}{_key(key)}: "
            yield from _encode(item, sort_keys)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for number, item in enumerate(value):
            if number:
                yield ", "
            yield from _encode(item, sort_keys)
        yield "]"
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _float(value):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key(key):
    """A dict key as json writes it: strings quoted, numbers, booleans and None as strings."""
    if isinstance(key, str):
        return _json.encode_basestring_ascii(key)
    if key is None or key is True or key is False:
        return {None: '"null"', True: '"true"', False: '"false"'}[key]
    if isinstance(key, int):
        return f'"{int.__repr__(key)}"'
    if isinstance(key, float):
        return f'"{_float(key)}"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
