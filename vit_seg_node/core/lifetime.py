"""Processes that end with the process that started them, and SIGTERM that runs ``finally``.

The CPU load of ``regimes``, ``tune`` and ``replay --cpu-load`` and the nodes that ``replay``,
``demo`` and ``bench-node`` start are child processes. Stopping them in a ``finally`` block
covers a normal end, an exception, SIGINT and (``terminate_on_sigterm``) SIGTERM, but not
SIGKILL of the parent, or a crash: the children would run on, a busy loop keeping a core busy
forever. So each child ties itself to its parent when it starts (``tie_to_parent``, told whom
by ``child_env``): on Linux with ``prctl(PR_SET_PDEATHSIG)``, which has the kernel send the child
a signal the moment its parent dies, however it dies -- nothing to poll, no delay, and it works
while the child is busy in native code (the busy loop, ONNX Runtime); after the call the child
checks that its parent is still the one that started it, which closes the window between the
fork and the call. Elsewhere a thread polls the parent id every half second. One property of
PR_SET_PDEATHSIG to keep in mind: it fires when the *thread* that started the child ends, so
children are started from the thread that also stops them (the main thread, here).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Iterator

PARENT_ENV = 'VIT_SEG_PARENT'     # "pid:signal", read and removed by ``tie_to_parent``
PR_SET_PDEATHSIG = 1              # linux/prctl.h


def child_env(sig: int = signal.SIGTERM) -> dict[str, str]:
    """Return the environment entry that ties a child started now to this process (``sig``)."""
    return {PARENT_ENV: f'{os.getpid()}:{int(sig)}'}


def tie_to_parent() -> None:
    """In a child: get the signal ``child_env`` named when the parent dies; no-op without it.

    The entry is removed from the environment, so that this child's own children are not tied
    to the wrong process.
    """
    spec = os.environ.pop(PARENT_ENV, '')
    try:
        pid, sig = (int(v) for v in spec.split(':'))
    except ValueError:
        return
    if not _death_signal(sig):
        threading.Thread(target=_watch_parent, args=(pid, sig), daemon=True).start()
    if os.getppid() != pid:       # the parent died before the tie was made
        os.kill(os.getpid(), sig)


def _death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(pid: int, sig: int) -> None:
    while os.getppid() == pid:
        time.sleep(0.5)
    os.kill(os.getpid(), sig)


def busy_loop_command() -> list[str]:
    """Return the command of one busy process (a core spinning) that ends with its parent."""
    return [sys.executable, '-c', 'from vit_seg_node.core.lifetime import tie_to_parent\n'
            'tie_to_parent()\nwhile True:\n    pass\n']


_held = {'depth': 0, 'pending': False}   # ``uninterrupted`` blocks open; a signal held


def terminate_on_sigterm() -> None:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt, held while ``uninterrupted`` runs.

    So that ``finally`` blocks stop started children, and a signal never lands inside the
    creation or the destruction of a DDS participant (one left half made was destroyed at exit
    by C++ static destructors: "terminate called without an active exception").
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum, frame) -> None:
    if _held['depth']:
        _held['pending'] = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGTERM/SIGINT (as set by ``terminate_on_sigterm``) until the block has ended.

    The KeyboardInterrupt comes at the end of the block, once what it made is assigned and can
    be cleaned up. Use it around making and destroying what a signal must not cut in half.
    """
    _held['depth'] += 1
    try:
        yield
    finally:
        _held['depth'] -= 1
    if not _held['depth'] and _held['pending']:
        _held['pending'] = False
        raise KeyboardInterrupt
