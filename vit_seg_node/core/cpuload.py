"""A synthetic CPU load: busy processes, one spinning core each (a robot's other work)."""

from __future__ import annotations

import subprocess
import sys

from vit_seg_node.core.errors import UserError


class CpuLoad:
    """``workers`` busy processes (one spinning core each) started and stopped on request."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise UserError(f'cpu load needs at least one worker, got {workers}')
        self.workers = workers
        self.procs: list[subprocess.Popen] = []

    @property
    def running(self) -> bool:
        """Return whether the load is on."""
        return bool(self.procs)

    def start(self) -> None:
        """Start the busy processes (no-op when running)."""
        if not self.procs:
            self.procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
                          for _ in range(self.workers)]

    def stop(self) -> None:
        """Stop them (no-op when stopped)."""
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
