"""The parent an exec'd process exits to: runs `runc exec --detach` as a child subreaper and
exits with that process's status once it has exited, whatever still holds its pipes.

A foreground `runc exec` without a terminal copies the process's output through pipes of its
own and exits only once they reach EOF, so a background child the command leaves (`sleep 1d &`)
keeps runc, and whoever waits for it, until the child ends. Detached, runc hands the process our
pipes and exits at once; the process is then reparented to the nearest subreaper, this program,
which reaps it and exits with its status (128+signal for a signal, as runc reports it). Orphans
of the exec'd process go to the container's init, not here: they live in its PID namespace.

Run as a script, `python -I -S execreaper.py PID_FILE RUNC_ARGV...` (cri_shim.runtime.execproc),
so that it imports nothing of the daemon and starts fast; stdin, stdout and stderr pass to runc
and on to the process.
"""

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36
# A failure of this program itself, before runc ran (as env(1) and runc use 125).
OWN_FAILURE = 125


def _status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: execreaper.py PID_FILE RUNC_ARGV...\n")
        return OWN_FAILURE
    pid_file, runc = argv[0], argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write(f"cannot become a child subreaper: {os.strerror(ctypes.get_errno())}\n")
        return OWN_FAILURE
    runc_pid = os.posix_spawnp(runc[0], runc, os.environ)
    _, wait_status = os.waitpid(runc_pid, 0)
    if wait_status != 0:
        return _status(wait_status)  # runc said why on stderr
    with open(pid_file) as f:
        pid = int(f.read().strip())
    while True:
        try:
            reaped, wait_status = os.wait()
        except ChildProcessError:  # reaped by someone else: its status is lost
            sys.stderr.write(f"exec'd process {pid} was not reparented here\n")
            return OWN_FAILURE
        if reaped == pid:
            return _status(wait_status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
