"""What a timing depends on: the CPU model, its ISA flags, cores and library versions.

Every timing report carries this record: the CPU changes between machines (an Intel Xeon with
AMX, an AMD EPYC without), and a plan or a latency measured on one does not hold on the other.
Torch-free, so the runtime's reports (bench-node, replay) record it too.
"""

from __future__ import annotations

from importlib import metadata
import os
import platform
from typing import Any


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """Return the CPU model name and its flags, from ``/proc/cpuinfo`` where there is one."""
    cpu, flags = platform.processor(), []
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                if line.startswith('flags'):
                    flags = line.split(':', 1)[1].split()
                    break
    except OSError:
        pass
    return cpu, flags


def version(package: str) -> str | None:
    """Return an installed distribution's version, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_record(threads: int = 0) -> dict[str, Any]:
    """Return the CPU, its vector ISA flags, cores, ``threads`` and the runtime's versions."""
    cpu, flags = cpu_model_and_flags()
    isa = [f for f in flags if f.startswith(('avx', 'amx', 'fma')) or f in ('f16c',)]
    return {'cpu': cpu, 'cores': os.cpu_count(), 'threads': threads, 'isa': isa,
            'onnxruntime': version('onnxruntime') or version('onnxruntime-gpu'),
            'tensorrt': version('tensorrt'),
            'python': platform.python_version(), 'machine': platform.machine()}


def machine_line(record: dict[str, Any] | None) -> str:
    """Return a record as one line for a Markdown report: CPU, cores, runtime version."""
    if not record:
        return 'machine not recorded'
    return (f'{record.get("cpu") or "unknown CPU"}, {record.get("cores")} cores, ONNX Runtime '
            f'{record.get("onnxruntime") or "-"}')
