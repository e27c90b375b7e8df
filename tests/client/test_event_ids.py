"""Event ids in copies of a process: a fork that runs none of Python's fork hooks (a pre-forking
server's C fork()) must not make the child repeat its parent's ids."""

import subprocess
import sys
import textwrap

from root import ROOT_DIR

# The fork is C's, through ctypes (PyDLL keeps the interpreter lock held across it): none of
# os.register_at_fork's hooks run. Run in a fresh interpreter with a single thread.
PROGRAM = textwrap.dedent(
    """
    import ctypes, os
    from trackerapi import core

    def new_id():
        return core.make_event("job", "info", None, "m", None, None, None).event_id

    new_id()
    reader, writer = os.pipe()
    pid = ctypes.PyDLL(None).fork()
    if pid == 0:
        os.write(writer, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print(new_id(), os.read(reader, 64).decode())
    """
)


def test_a_child_forked_without_pythons_hooks_makes_ids_of_its_own() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    parent, child = finished.stdout.split()
    assert len(child) == 32
    assert parent != child
