"""Capture what C libraries print to the process's stderr (libjpeg, libpng, OpenCV).

Decoders report a corrupt frame by printing to file descriptor 2, one line per frame, which
bypasses a node's throttled logging. ``captured_stderr`` points fd 2 at a temporary file for the
duration of a call and hands back what was written, so the caller can log it its own way.
Anything another thread writes in that window is captured too and handed back, not lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Iterator

_LOCK = threading.Lock()
_SINK: list = []   # one temporary file, reused: no file is created per decoded frame


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 to a temporary file; after the block the list holds the captured text."""
    out: list[str] = []
    with _LOCK:
        if not _SINK:
            _SINK.append(tempfile.TemporaryFile(mode='w+b'))
        sink = _SINK[0]
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode('utf-8', 'replace').strip()
            if text:
                out.append(text)
