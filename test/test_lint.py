"""Linters, as ROS 2 packages run them (ament_flake8 / ament_pep257 equivalents)."""

from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ['vit_seg_node', 'training', 'experiments', 'test', 'launch', 'setup.py']


def test_flake8_and_pep257():
    # flake8-docstrings runs pydocstyle (pep257) inside flake8; config in setup.cfg
    r = subprocess.run([sys.executable, '-m', 'flake8', *TARGETS], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
