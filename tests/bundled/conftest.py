"""Tests of the self-contained engines on a host whose own engines are hidden (issue 7).

.ci/run builds the bundle as root (`engines/build-bundle.sh -o DIR`: tarball, .sha256, wheel) and runs this
directory as the test user inside utils/hide-engines.sh with UDOCKER_TEST_BUNDLE=DIR. Without that variable
the tests are skipped (or fail under CI); with it, they first check that the host's engines really are
hidden, so that nothing here can pass by using them.
"""

import glob
import os
import shutil

import pytest

BUNDLE_ENV = "UDOCKER_TEST_BUNDLE"
ENGINES = ("proot", "runc", "crun", "patchelf")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(BUNDLE_ENV):
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"{BUNDLE_ENV} is not set: .ci/run runs tests/bundled with the bundle it built")
    skip = pytest.mark.skip(reason=f"set {BUNDLE_ENV}=DIR (engines/build-bundle.sh -o DIR) and run inside "
                                   "utils/hide-engines.sh")
    for item in items:
        if "tests/bundled/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bundle_dir():
    """The directory build-bundle.sh wrote; fails unless the host's engines are hidden."""
    path = os.environ[BUNDLE_ENV]
    search = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    visible = [name for name in ENGINES if shutil.which(name, path=search)]
    visible += glob.glob("/usr/lib/*/fakechroot/libfakechroot.so") + glob.glob("/usr/lib*/fakechroot/*.so")
    assert not visible, f"the host's engines are not hidden (run inside utils/hide-engines.sh): {visible}"
    return path


@pytest.fixture(scope="session")
def tarball(bundle_dir):
    found = glob.glob(os.path.join(bundle_dir, "udocker-engines-*.tar.gz"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="session")
def wheel(bundle_dir):
    found = glob.glob(os.path.join(bundle_dir, "udocker_engines-*.whl"))
    assert len(found) == 1, found
    return found[0]
