"""Authentication on 401: anonymous first, then what the registry's WWW-Authenticate asks for.

Bearer follows Docker's token authentication spec (distribution docs, "Token Authentication
Specification"): GET realm?service=S&scope=SCOPE, with Basic credentials when known, and take `token` or
`access_token`; tokens are cached per (host, scope) until `expires_in` (default 60 s) runs out. Basic sends
the credentials on every request. Tokens and passwords are never logged nor put into messages.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable

from udocker import log
from udocker.errors import AuthError
from udocker.record import Record

LOG = log.get("registry.auth")
DEFAULT_EXPIRES_IN = 60
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?\s*,?')


class Challenge(Record):
    """One challenge of a WWW-Authenticate header: `scheme` lower-cased, `params` (a dict) as given."""

    __slots__ = FIELDS = ("scheme", "params")


def parse_challenges(header: str) -> list:
    """Parse a WWW-Authenticate header (RFC 7235): `Bearer realm="...",service="...",scope="..."`,
    `Basic realm="..."`, or several challenges separated by commas."""
    challenges: list = []
    for match in _PARAM.finditer(header or ""):
        name, value = match.group(1), match.group(2)
        if value is None:
            challenges.append(Challenge(name.lower(), {}))
        elif challenges:
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            challenges[-1].params[name.lower()] = value
    return challenges


def basic_header(credentials: tuple) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode("utf-8")).decode("ascii")


class Authenticator:
    """Keeps the Authorization header for each (host, scope) and answers 401 challenges.

    `credentials(host)` returns (user, password) or None; `fetch_token(realm, params, headers)` performs the
    token request and returns (status, json body or None) - the client provides it so that one
    requests.Session (TLS settings, timeouts) serves both.
    """

    def __init__(self, credentials: Callable[[str], tuple | None],
                 fetch_token: Callable[[str, dict, dict], tuple], *, clock: Callable[[], float] = time.monotonic):
        self._credentials = credentials
        self._fetch_token = fetch_token
        self._clock = clock
        self._headers: dict = {}  # (host, scope) -> (Authorization value, expiry or None)
        self._lock = threading.Lock()

    def header(self, host: str, scope: str | None) -> str | None:
        """The Authorization value to send, if a previous challenge told us one and it has not expired."""
        with self._lock:
            value, expiry = self._headers.get((host, scope), (None, None))
            if expiry is not None and self._clock() >= expiry:
                del self._headers[(host, scope)]
                return None
            return value

    def answer(self, host: str, scope: str | None, challenge_header: str, *, cred_host: str) -> bool:
        """Prepare credentials for a 401 carrying `challenge_header`; False when there is nothing to try
        (Basic asked and no credentials known). Raises AuthError when the token server refuses."""
        challenges = {c.scheme: c for c in parse_challenges(challenge_header)}
        credentials = self._credentials(cred_host)
        if "bearer" in challenges and challenges["bearer"].params.get("realm"):
            value, expires_in = self._token(challenges["bearer"].params, scope, credentials, cred_host)
            self._remember(host, scope, value, self._clock() + expires_in * 0.9)
            return True
        if "basic" in challenges and credentials:
            self._remember(host, scope, basic_header(credentials), None)
            return True
        return False

    def forget(self, host: str) -> None:
        """Drop every cached header for `host` (credentials changed)."""
        with self._lock:
            for key in [key for key in self._headers if key[0] == host]:
                del self._headers[key]

    def has_credentials(self, cred_host: str) -> bool:
        return self._credentials(cred_host) is not None

    def _remember(self, host: str, scope: str | None, value: str, expiry: float | None) -> None:
        with self._lock:
            self._headers[(host, scope)] = (value, expiry)

    def _token(self, params: dict, scope: str | None, credentials: tuple | None, cred_host: str) -> tuple:
        query = {"service": params["service"]} if params.get("service") else {}
        scope = scope or params.get("scope")
        if scope:
            query["scope"] = scope
        headers = {"Authorization": basic_header(credentials)} if credentials else {}
        LOG.debug("requesting a token from %s for %s", params["realm"], scope or "no scope")
        status, body = self._fetch_token(params["realm"], query, headers)
        if status in (401, 403):
            raise AuthError(f"the auth server for {cred_host} refused the "
                            + ("username or password" if credentials else "anonymous request"),
                            hint=f"run 'udocker login --registry={cred_host}'", status=status)
        token = (body or {}).get("token") or (body or {}).get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str):
            raise AuthError(f"the auth server for {cred_host} gave no token (HTTP {status})", status=status)
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRES_IN
        return "Bearer " + token, expires_in
