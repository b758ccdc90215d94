"""The daemon's event loop, set up for many requests at once.

Every RPC is served on one asyncio loop; what blocks (mounts, unmounts, fsyncs, rmtree) runs on
the loop's default thread pool, and every runtime, monitor and CNI plugin it runs is a child
process asyncio waits for. Two defaults of Python 3.11 cost the loop time when ten pods start
at once on a small node:

- the default pool has min(32, cores + 4) threads, six on two cores: a few unmounts and syncs
  in flight and the next pod's bind mount queues behind them, though each thread mostly waits
  on the kernel. The pool here grows up to WORKERS threads, made only as work arrives.
- the default child watcher starts a thread per child process to block in waitpid(); starting
  it runs on the loop, and a pod start runs about ten children. A pidfd (Linux 5.3) makes the
  child's exit a readable file descriptor the loop itself watches: no thread at all. Python 3.12
  picks that watcher by itself where the kernel has pidfds, and deprecates choosing one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

# Threads of the default pool. Each is made only when a job finds none idle; they wait on the
# kernel far more than they hold the GIL.
WORKERS = 32


def prepare(loop: asyncio.AbstractEventLoop) -> None:
    """Gives loop the thread pool above and, before Python 3.12, the pidfd child watcher when
    the kernel offers pidfds (otherwise the default watcher stays)."""
    loop.set_default_executor(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="asyncio"))
    if sys.version_info < (3, 12) and _pidfds():
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)  # the daemon's one loop; no other thread runs children through asyncio
        asyncio.set_child_watcher(watcher)


def _pidfds() -> bool:
    """Whether this kernel makes pidfds (pidfd_open of this process works)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True
