"""udocker/fastjson.py reads and writes JSON as the json package does (the bytes of a bundle's config.json name
it), without importing it."""

import json
import math
import os
import subprocess
import sys

import pytest

from udocker import fastjson

VALUES = [
    {}, [], "", 0, -1, 10**30, 1.5, -0.0, 1e300, 1e-300, 0.1, True, False, None,
    {"owner": "@vm~5b29~4026531836~6487~2122254", "pid": 6487, "mode": "P1", "detached": False,
     "started": 1764455000.123456, "stop_timeout": 10, "logger": None},
    {"unicode": "caf\u00e9 \u2603 \U0001f600", "control": "a\tb\nc\x00\x1f\"\\/", "nested": [[{"a": [1, {}]}], ()]},
    {"b": 1, "a": {"d": 2, "c": [3, {"z": 0, "y": 1}]}},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    [float("nan"), float("inf"), float("-inf")],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize("sort_keys", [False, True])
def test_dumps_writes_what_json_writes(value, sort_keys):
    if sort_keys and isinstance(value, dict) and len({type(k) for k in value}) > 1:
        pytest.skip("json cannot sort keys of mixed types either")
    assert fastjson.dumps(value, sort_keys=sort_keys) == json.dumps(value, sort_keys=sort_keys)


def test_dumps_refuses_what_json_refuses():
    for value in ({"a": object()}, {(1, 2): 3}, {1, 2}, b"bytes"):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            fastjson.dumps(value)


@pytest.mark.parametrize("text", [json.dumps(v, indent=indent) for v in VALUES for indent in (None, 1)]
                         + [' \n\t{"a": 1} \r\n', '"\\u00e9\\ud83d\\ude00"', "1e5", "-0", "[1, 2.0, -3e-2]"])
def test_loads_reads_what_json_reads(text):
    expected = json.loads(text)
    for given in (text, text.encode(), b"\xef\xbb\xbf" + text.encode()):
        got = fastjson.loads(given)
        assert json.dumps(got) == json.dumps(expected)
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(got)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', '{"a": 1}{}', "[1,]", "{'a': 1}", "tru",
                                  '"a\x01"', b"\xff\xfe", '{"a" 1}', "01"])
def test_loads_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(text)


TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_neither_imports_json():
    """Without site (which may load re itself: an editable install's finder does)."""
    code = ("import sys; from udocker import fastjson; fastjson.loads(fastjson.dumps({'a': [1.5, None]}));"
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=TOP))
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("text", ['{"a": [1, 2', "{", '{"a" 1}', "[", "", "{} x", '{"a": nul}'])
def test_a_bad_document_gets_jsons_own_error(text):
    """_json's scanner alone leaves some errors unset (a SystemError): the bad document goes to json itself."""
    with pytest.raises(json.JSONDecodeError) as caught:
        fastjson.loads(text)
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    assert str(caught.value) == str(expected.value)
