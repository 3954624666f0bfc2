"""JSON for the start of `udocker run`: loads() and dumps() of udocker's records with the C parts of CPython's
json package (_json's scanner and string encoder) without importing the package itself. `import json`
compiles json.decoder's regular expressions and so loads re and enum (~6 ms of every run here, more on a
busy node); every run reads container.json and writes its run record (store/runs.py), and R modes write
the bundle's config.json. Elsewhere udocker uses json as usual.

Same results as json.loads() (bad input is handed to json.loads itself, whose JSONDecodeError says why) and
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


def _scanner():
    """_json's scanner, or None where it is missing or does not read a sample as json does (another version)."""
    try:
        scan = _json.make_scanner(_Options)
        sample = '{"a": [1, 2.5, "\\u00e9", null, true]}'
        if scan(sample, 0) == ({"a": [1, 2.5, "\u00e9", None, True]}, len(sample)):
            return scan
    except Exception:  # noqa: BLE001 - any surprise of a private module means: use json
        pass
    return None


_scan = _scanner() if _json else None


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
    except (StopIteration, ValueError, SystemError):  # _json alone leaves some errors unset: SystemError
        end = None
    if end is None or text[end:].strip(_WHITESPACE):
        import json

        return json.loads(text)  # a bad document: json says what is wrong, in its words (a ValueError)
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
