"""The values of udocker 1.3's run options that udocker 2 added (issue 12, item 3): the parser's bare --pull,
--dri's paths, the resolv.conf of --dns/--dns-search, -P's ports, --kernel's check."""

import pytest

from udocker.cli.run import parse
from udocker.errors import UsageError
from udocker.runopts import check_kernel, dri, exposed_ports, publish_all, resolv_conf
from udocker.runspec import Mount, RunRequest


@pytest.mark.parametrize("args, pull, target, command", [
    (["--pull", "img", "cmd"], "img", "cmd", []),  # as 1.3 and docker: the word is the policy (refused later)
    (["--pull", "always", "img"], "always", "img", []),
    (["--pull=never", "img"], "never", "img", []),
    (["--pull", "--rm", "img"], "missing", "img", []),
    (["--pull", "reuse"], "reuse", None, []),
    (["--pull"], "missing", None, []),
])
def test_bare_pull(args, pull, target, command):
    values, found, rest = parse(args)
    assert (values["pull"], found, rest) == (pull, target, command)


def test_new_options_reach_the_request():
    values, target, command = parse(["-P", "--dri", "--dns=192.0.2.1", "--dns", "192.0.2.2", "--dns-search=a.org",
                                     "--volumes-from=x:ro", "--kernel=6.1.0", "img", "sh"])
    from udocker.cli.run import request

    asked = request(values, target, command)
    assert isinstance(asked, RunRequest) and asked.publish_all and asked.dri
    assert (asked.dns, asked.dns_search, asked.volumes_from, asked.kernel) == (
        ["192.0.2.1", "192.0.2.2"], ["a.org"], ["x:ro"], "6.1.0")


def test_dri_binds_what_exists(tmp_path):
    assert dri(str(tmp_path)) == ([], [])
    (tmp_path / "usr/lib/dri").mkdir(parents=True)
    (tmp_path / "dev/dri").mkdir(parents=True)
    mounts, devices = dri(str(tmp_path))
    assert mounts == [Mount(str(tmp_path / "usr/lib/dri"), "/usr/lib/dri")]
    assert devices == [str(tmp_path / "dev/dri")]


HOST = "# generated\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch site.example\noptions ndots:2\n"


def test_resolv_conf_replaces_only_what_is_given():
    both = resolv_conf(["192.0.2.53"], ["a.example", "b.example"], HOST)
    assert both == "nameserver 192.0.2.53\n# generated\noptions ndots:2\nsearch a.example b.example\n"
    servers = resolv_conf(["2001:db8::1"], [], HOST)
    assert "search site.example" in servers and "10.0.0.1" not in servers and "nameserver 2001:db8::1" in servers
    search = resolv_conf([], ["x.example"], HOST)
    assert "nameserver 10.0.0.1" in search and "site.example" not in search and search.endswith("search x.example\n")
    with pytest.raises(UsageError, match="invalid --dns"):
        resolv_conf(["8.8.8"], [], HOST)
    with pytest.raises(UsageError, match="invalid --dns-search"):
        resolv_conf([], ["a b"], HOST)


def test_publish_all():
    config = {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "bogus": {}, "8080": {}}}
    exposed = exposed_ports(config)
    assert exposed == [(80, "tcp"), (53, "udp"), (8080, "tcp")]
    same, added = publish_all([(8000, 80, "", "tcp")], exposed, free=False)
    assert same == [(8000, 80, "", "tcp"), (53, 53, "", "udp"), (8080, 8080, "", "tcp")]
    assert added == same[1:]
    free, added = publish_all([], exposed, free=True)
    assert [(c, p) for _, c, _, p in free] == exposed and all(0 < h < 65536 for h, _, _, _ in free)
    assert exposed_ports({}) == []


@pytest.mark.parametrize("text", ["6.1.0", "5.4.0-150-generic", "4.18.0-477.el8.x86_64"])
def test_kernel_release_accepted(text):
    assert check_kernel(text) == text


@pytest.mark.parametrize("text", ["", "abc", "6.1 0", "6" * 80, "-6.1"])
def test_kernel_release_refused(text):
    with pytest.raises(UsageError):
        check_kernel(text)
