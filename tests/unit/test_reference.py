import pytest

from udocker.errors import InvalidReference
from udocker.reference import is_loopback, parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, full, familiar",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/img:tag", "docker.io/user/img:tag", "user/img:tag"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("127.0.0.1:5000/a/b/c:tag", "127.0.0.1:5000/a/b/c:tag", "127.0.0.1:5000/a/b/c:tag"),
        ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
        ("quay.io/org/img", "quay.io/org/img:latest", "quay.io/org/img:latest"),
        ("[::1]:5000/img:v1", "[::1]:5000/img:v1", "[::1]:5000/img:v1"),
        (f"img@{D}", f"docker.io/library/img@{D}", f"img@{D}"),
        (f"img:tag@{D}", f"docker.io/library/img:tag@{D}", f"img:tag@{D}"),
        ("deephdc/deep-oc-generic:cpu-test", "docker.io/deephdc/deep-oc-generic:cpu-test", None),
        ("a__b.c-d:1.0_rc-2", "docker.io/library/a__b.c-d:1.0_rc-2", None),
    ],
)
def test_parse_normalises(text, full, familiar):
    ref = parse(text)
    assert str(ref) == full
    if familiar:
        assert ref.familiar() == familiar


def test_parts():
    ref = parse(f"127.0.0.1:5000/a/b:t@{D}")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("127.0.0.1:5000", "a/b", "t", D)
    assert ref.manifest_ref == D
    assert parse("x:9").manifest_ref == "9"


@pytest.mark.parametrize(
    "text",
    ["", " busybox", "Busybox", "img:", "img:-x", "img@sha256:abc", "img@sha256:" + "A" * 64, "a//b",
     "-a/b", "a/b-", "img:" + "x" * 129, "host:port/x", "a" * 256, "img@", "busy box"],
)
def test_parse_rejects(text):
    with pytest.raises(InvalidReference):
        parse(text)


@pytest.mark.parametrize(
    "domain, loop",
    [("127.0.0.1:5000", True), ("localhost", True), ("localhost:1", True), ("[::1]:5000", True),
     ("127.9.9.9", True), ("docker.io", False), ("10.0.0.1:5000", False), ("localhost.example.com", False)],
)
def test_is_loopback(domain, loop):
    assert is_loopback(domain) is loop


@pytest.mark.parametrize("text", ["127.0.0.1:99999/x", "127.0.0.1:0/x", "localhost:99999999999999999999/x",
                                  "[::1]:65536/x:tag", "example.com:" + "9" * 5000 + "/x"])
def test_registry_port_out_of_range_is_an_invalid_reference(text):
    with pytest.raises(InvalidReference, match="invalid registry port in reference"):
        parse(text)


@pytest.mark.parametrize("text, domain", [("127.0.0.1:65535/x", "127.0.0.1:65535"), ("[::1]:1/x", "[::1]:1"),
                                          ("localhost:05000/x", "localhost:05000")])
def test_registry_ports_in_range_are_kept(text, domain):
    assert parse(text).domain == domain
