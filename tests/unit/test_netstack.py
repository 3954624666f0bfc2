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
from udocker.errors import EngineUnavailable, UdockerError, UsageError
from udocker.paths import Layout
from udocker.runopts import check_network, check_ports, network_of
from udocker.runspec import Mount, RunSpec


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


# --- DNS in the private network (the host's loopback resolvers answer only in the host's network namespace) ---


def test_loopback_nameservers_become_the_stacks_forwarder():
    systemd = "# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n"
    assert netstack.container_resolv(systemd) == (
        "# managed by systemd-resolved\nnameserver 10.0.2.3\noptions edns0 trust-ad\nsearch example.org\n")
    # several loopback ones: one forwarder (it asks the host's first nameserver); other nameservers stay, in order
    assert netstack.container_resolv("nameserver 127.0.0.1\nnameserver ::1\nnameserver 192.0.2.53\n") == (
        "nameserver 10.0.2.3\nnameserver 192.0.2.53\n")
    assert netstack.container_resolv("nameserver 192.0.2.53\n") == "nameserver 192.0.2.53\n"
    assert netstack.container_resolv("") == "nameserver 10.0.2.3\n"  # none: the forwarder (libslirp's defaults)


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_the_container_gets_a_rewritten_resolv_conf_and_the_hosts_stays(tmp_path, monkeypatch, runtime):
    """runc and crun share the private network's code (ocirt.OciEngine): crun, which refuses this CI host's
    cgroups, gets exactly runc's configuration, so test_network.py's runs in runc cover it."""
    from udocker.engines.crun import CrunEngine

    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 127.0.0.53\nsearch lan\n")
    monkeypatch.setattr(netstack, "HOST_RESOLV", str(host))
    container = make_container(tmp_path / "c")
    engine = (RuncEngine if runtime == "runc" else CrunEngine)(None, Layout(str(tmp_path / "repo")))
    mounts = [Mount(str(host), "/etc/resolv.conf"), Mount("/etc/hosts", "/etc/hosts")]
    spec = _spec(container.rootfs, ["8081:5000"], container_dir=container.dir, container_id="c1", mounts=mounts)
    config = engine.config_json(spec, "R1", kit="")
    resolv, = [m for m in config["mounts"] if m["destination"] == "/etc/resolv.conf"]
    assert resolv["source"].startswith(container.dir + "/") and resolv["type"] == "bind"
    assert open(resolv["source"]).read() == "nameserver 10.0.2.3\nsearch lan\n"
    assert host.read_text() == "nameserver 127.0.0.53\nsearch lan\n"  # never touched
    other = RuncEngine(None, Layout(str(tmp_path / "repo"))).config_json(spec, "R1", kit="")
    assert config["hooks"] == other["hooks"] and other["mounts"] == [
        dict(m, source=m["source"].replace("/engine/crun/", "/engine/runc/")) for m in config["mounts"]]
    on_host = _spec(container.rootfs, ["5000:5000"], container_dir=container.dir, container_id="c1", mounts=mounts)
    resolv, = [m for m in engine.config_json(on_host, "R1", kit="")["mounts"]
               if m["destination"] == "/etc/resolv.conf"]
    assert resolv["source"] == str(host)  # the host's network: the host's file, as it is


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_a_host_without_loopback_resolvers_keeps_its_own_file(tmp_path, monkeypatch):
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 192.0.2.53\n")
    monkeypatch.setattr(netstack, "HOST_RESOLV", str(host))
    container = make_container(tmp_path / "c")
    spec = _spec(container.rootfs, network="private", container_dir=container.dir, container_id="c1",
                 mounts=[Mount(str(host), "/etc/resolv.conf")])
    config = RuncEngine(None, Layout(str(tmp_path / "repo"))).config_json(spec, "R1", kit="")
    assert [m["source"] for m in config["mounts"] if m["destination"] == "/etc/resolv.conf"] == [str(host)]


# --- IPv6 -------------------------------------------------------------------------------------------------------


def test_an_ipv6_address_is_given_in_brackets():
    assert check_ports(["[::1]:5000:5000"]) == [(5000, 5000, "::1", "tcp")]
    assert check_ports(["[fd00::1]:8081:5000/udp"]) == [(8081, 5000, "fd00::1", "udp")]
    for bad in ("::1:8081:5000", "[::1]8081:5000", "[::1:8081:5000", "[]:8081:5000"):
        with pytest.raises(UsageError, match="invalid port mapping"):
            check_ports([bad])


@pytest.mark.skipif(not shutil.which("slirp4netns"), reason="slirp4netns is not installed")
def test_publishing_on_an_ipv6_address_is_refused_in_one_line(tmp_path):
    """Debian 12's slirp4netns (1.2.0) forwards IPv4 only (its API refuses an IPv6 host_addr and proto tcp6):
    -p [::1]:H:C in a private network is refused before the runtime, naming what works."""
    with pytest.raises(UdockerError, match=r"cannot publish port 8083 on \[::1\]: .*IPv4 only") as refused:
        netstack.oci_hooks(Layout(str(tmp_path / "repo")), check_ports(["[::1]:8083:5000"]))
    assert "127.0.0.1:8083:5000" in refused.value.hint and "\n" not in str(refused.value.message)
    check_network(_spec(publish=["[::1]:5000:5000"]), "P1")  # the host's network: equal ports, nothing to forward
