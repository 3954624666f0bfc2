"""The supervisor's subreaper (engines/supervisor.py): an orphan of the engine is reparented to S, not to init,
and becoming one loads neither ctypes nor struct (their CPU is paid by every run longer than 0.1 s: issue 13,
item 4)."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = """
import os, sys, time
from udocker.engines import supervisor
supervisor._become_subreaper()
read, write = os.pipe()
if os.fork() == 0:  # a child that orphans its own child (a daemonising program)
    if os.fork() == 0:
        os.close(read)
        for _ in range(2000):  # reparented once its parent is gone (bounded: 10 s)
            if os.getppid() == {parent}:
                os.write(write, b"reparented to the subreaper")
                break
            time.sleep(0.005)
        else:
            os.write(write, b"reparented to pid %d" % os.getppid())
        os._exit(0)
    os._exit(0)
os.close(write)
print(os.read(read, 100).decode(), "ctypes" in sys.modules, "struct" in sys.modules)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_an_orphan_is_reparented_to_the_supervisor_which_loads_no_ctypes():
    code = f"import os; exec({CHILD!r}.replace('{{parent}}', str(os.getpid())))"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=TOP,
                          env=dict(os.environ, PYTHONPATH=TOP), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reparented", "to", "the", "subreaper", "False", "False"]
