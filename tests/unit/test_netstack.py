"""The private network of R modes (issue 11, item 3): which runs get one, the refusals in P and F modes, the
network namespace and createRuntime hook in config.json, the hook's arguments. Pure: no container runs
(tests/functional/test_network.py runs them)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.fixtures.rootfs import make_container
from udocker.engines import netstack
from udocker.engines.runc import RuncEngine
from udocker.errors import EngineUnavailable, UdockerError
from udocker.paths import Layout
from udocker.runopts import check_network, check_ports, network_of
from udocker.runspec import RunSpec


def _spec(rootfs="/r", publish=(), network=None, **options):
    ports = check_ports(publish)
    return RunSpec(rootfs=rootfs, argv=["sh"], env={"PATH": "/bin"}, ports=ports, network=network_of(ports, network),
                   **options)


def test_a_port_mapped_to_another_or_asked_for_makes_a_private_network():
    assert _spec(publish=["5000:5000", "80"]).network == "host"
    assert _spec().network == "host"
    assert _spec(publish=["8081:5000"]).network == "private"
    assert _spec(network="private").network == "private"
    assert _spec(publish=["5000:5000"], network="private").network == "private"


@pytest.mark.parametrize("mode", ["P1", "P2", "F1", "F2", "F3", "F4"])
def test_p_and_f_modes_refuse_a_private_network_naming_the_modes_that_can(mode):
    with pytest.raises(UdockerError, match=f"cannot map port 5000 to 8081 in mode {mode}") as mapped:
        check_network(_spec(publish=["8081:5000"]), mode)
    assert "R1, R2, R3" in mapped.value.hint and "5000:5000" in mapped.value.hint
    with pytest.raises(UdockerError, match=f"--network=private cannot run in mode {mode}") as asked:
        check_network(_spec(network="private"), mode)
    assert "R1" in asked.value.hint
    check_network(_spec(publish=["5000:5000"]), mode)  # equal ports: every mode


def test_r_modes_take_it_and_host_refuses_a_mapped_port():
    for mode in ("R1", "R2", "R3"):
        check_network(_spec(publish=["8081:5000"]), mode)
        check_network(_spec(network="private"), mode)
    with pytest.raises(UdockerError, match="with --network=host"):
        check_network(_spec(publish=["8081:5000"], network="host"), "R1")


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_config_has_a_network_namespace_and_the_hook(tmp_path):
    container = make_container(tmp_path / "c")
    engine = RuncEngine(None, Layout(str(tmp_path / "repo")))
    spec = _spec(container.rootfs, ["127.0.0.1:8081:5000", "9090:90/udp"], container_dir=container.dir,
                 container_id="c1")
    config = engine.config_json(spec, "R1", kit=str(tmp_path / "nokit"))
    assert {"type": "network"} in config["linux"]["namespaces"]
    hook, = config["hooks"]["createRuntime"]
    assert hook["path"] == sys.executable and hook["args"][:4] == [sys.executable, "-I", "-S", netstack.__file__]
    assert hook["args"][4] == shutil.which("slirp4netns")
    assert hook["args"][5:] == ["127.0.0.1:8081:5000/tcp", "0.0.0.0:9090:90/udp"]
    engine.prepare(container, "R1")
    assert engine.command(spec, "R1").subreaper
    host = _spec(container.rootfs, ["5000:5000"], container_dir=container.dir, container_id="c1")
    assert "hooks" not in engine.config_json(host, "R1", kit="") and not engine.command(host, "R1").subreaper


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_a_tun_device_the_user_cannot_open_is_refused_before_the_runtime(tmp_path, monkeypatch):
    monkeypatch.setattr(netstack, "TUN", str(tmp_path / "tun"))
    with pytest.raises(EngineUnavailable, match="a private network needs .*/tun, which this user cannot open"):
        netstack.oci_hooks(Layout(str(tmp_path / "repo")), [])


def test_forwards_parse_as_slirp4netns_takes_them():
    assert netstack.parse_forward("0.0.0.0:8081:5000/tcp") == {
        "proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8081, "guest_port": 5000}
    assert netstack.parse_forward("127.0.0.1:53:53/udp")["proto"] == "udp"


def test_the_hook_fails_in_one_line_without_a_stack(tmp_path):
    """Run as runc runs it (isolated, the state on stdin): a stack that cannot start fails the hook."""
    done = subprocess.run([sys.executable, "-I", "-S", netstack.__file__, "/bin/false", "0.0.0.0:1:2/tcp"],
                          input=f'{{"pid": {os.getpid()}}}', capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("udocker: private network: the network stack did not start")
    assert len(done.stderr.splitlines()) == 1
