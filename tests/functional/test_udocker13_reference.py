"""The reference itself: udocker 1.3.17 pulls the Debian image from the local registry and runs it in P1, F1 and
R1 on this host's engines (tests/support/udocker13). If this fails, every 1.x interop test would be meaningless."""

import os


def test_udocker13_makes_a_repository_and_runs_its_containers(debian_image, udocker13, udocker):
    v13 = udocker13()
    pulled = v13("pull", f"--registry=http://{debian_image.registry.host}", debian_image.name)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert os.path.isdir(os.path.join(v13.topdir, "repos", "test", "debian", "12"))
    for mode in ("P1", "F1", "R1"):
        name = mode.lower()
        created = v13("create", f"--name={name}", debian_image.name)
        assert created.returncode == 0, created.stdout + created.stderr
        if mode != "P1":
            setup = v13("setup", f"--execmode={mode}", name)
            assert setup.returncode == 0, setup.stdout + setup.stderr
        ran = v13("run", "--nobanner", name, "cat", "/etc/debian_version")
        if mode != "R1":  # 1.3's R1 returns 1 whatever the program's status (it loses runc's)
            assert ran.returncode == 0, ran.stdout + ran.stderr
        assert any(line.startswith("12.") for line in ran.stdout.splitlines()), ran.stdout
    listed = v13("ps")
    assert all(f"['{name}']" in listed.stdout for name in ("p1", "f1", "r1")), listed.stdout
