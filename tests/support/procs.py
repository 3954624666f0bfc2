"""Helpers the tests of processes and services share: find a container's processes by a token, poll a
condition, and the DEEPaaS test image's archive. Not imported by udocker itself."""

import os
import time

import pytest

DEEPAAS_ENV = "UDOCKER_TEST_DEEPAAS"


def marked(token):
    """Pids of this user's processes with `token` in their environment or command line (zombies have none)."""
    found = []
    needle = token.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as stream:
                    if needle in stream.read():
                        found.append(int(pid))
                        break
            except OSError:
                continue
    return found


def until(condition, seconds, pause=0.1):
    """Poll `condition` every `pause` seconds for at most `seconds`; its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(pause)


def tun_usable():
    """Whether this user can open /dev/net/tun (slirp4netns needs it for R modes' private network)."""
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
        return True
    except OSError:
        return False


def deepaas_archive():
    """The DEEPaaS test image's archive (UDOCKER_TEST_DEEPAAS): skip without it, fail under CI (.ci/run builds it)."""
    archive = os.environ.get(DEEPAAS_ENV)
    if not archive:
        if os.environ.get("CI"):
            pytest.fail(f"{DEEPAAS_ENV} is not set: .ci/run should have built the DEEPaaS image")
        pytest.skip(f"no DEEPaaS test image ({DEEPAAS_ENV})")
    return archive
