"""A synthetic CPU load: busy processes, one spinning core each (a robot's other work).

Each busy process ends with the process that started it, however that one ends (SIGKILL
included): ``core.lifetime``.
"""

from __future__ import annotations

import os
import signal
import subprocess

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.lifetime import busy_loop_command, child_env


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
            env = {**os.environ, **child_env(signal.SIGKILL)}
            self.procs = [subprocess.Popen(busy_loop_command(), env=env)
                          for _ in range(self.workers)]

    def stop(self) -> None:
        """Stop them (no-op when stopped)."""
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []
