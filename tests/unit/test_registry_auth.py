import pytest

from udocker.errors import AuthError
from udocker.registry.auth import Authenticator, Challenge, parse_challenges
from udocker.registry.credentials import registry_host


@pytest.mark.parametrize("header, expected", [
    (('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
      'scope="repository:library/ubuntu:pull"'),
     [Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                           "scope": "repository:library/ubuntu:pull"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('Bearer realm="a,b", scope="repository:x:pull,push", Basic realm="r"',
     [Challenge("bearer", {"realm": "a,b", "scope": "repository:x:pull,push"}), Challenge("basic", {"realm": "r"})]),
    ('Basic', [Challenge("basic", {})]),
    ('', []),
])
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


@pytest.mark.parametrize("text, host", [
    ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"), ("docker.io", "docker.io"),
    ("http://127.0.0.1:5000/", "127.0.0.1:5000"), ("Quay.IO", "quay.io"),
])
def test_registry_host(text, host):
    assert registry_host(text) == host


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_token_cached_until_expiry():
    clock, calls = Clock(), []

    def fetch(realm, params, headers):
        calls.append((realm, params, headers))
        return 200, {"access_token": f"t{len(calls)}", "expires_in": 100}

    auth = Authenticator(lambda host: ("u", "p"), fetch, clock=clock)
    challenge = 'Bearer realm="https://auth/token",service="svc"'
    assert auth.answer("reg", "repository:a:pull", challenge, cred_host="reg")
    assert calls[0][1] == {"service": "svc", "scope": "repository:a:pull"}
    assert calls[0][2]["Authorization"].startswith("Basic ")
    assert auth.header("reg", "repository:a:pull") == "Bearer t1"
    assert auth.header("reg", "repository:b:pull") is None
    clock.now += 89
    assert auth.header("reg", "repository:a:pull") == "Bearer t1"
    clock.now += 2
    assert auth.header("reg", "repository:a:pull") is None


def test_default_expiry_and_refusal():
    clock = Clock()
    auth = Authenticator(lambda host: None, lambda *a: (200, {"token": "x"}), clock=clock)
    auth.answer("reg", None, 'Bearer realm="https://auth/token"', cred_host="reg")
    clock.now += 53  # 60 s by default, renewed after 90% of it
    assert auth.header("reg", None) == "Bearer x"
    clock.now += 2
    assert auth.header("reg", None) is None
    assert auth.answer("reg", None, 'Basic realm="r"', cred_host="reg") is False
    refusing = Authenticator(lambda host: ("u", "bad"), lambda *a: (401, None), clock=clock)
    with pytest.raises(AuthError) as caught:
        refusing.answer("reg", None, 'Bearer realm="https://auth/token"', cred_host="reg")
    assert caught.value.message == "the auth server for reg refused the username or password"
