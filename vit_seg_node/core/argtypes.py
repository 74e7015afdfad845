"""Range-checked numbers for command-line arguments (argparse ``type=``), and their bounds.

Every numeric argument of ``vit-seg`` goes through one of these, so that ``--runs 0``,
``--gap nan`` or ``--threads 100000`` is one line and exit code 2 before anything runs.
"""

from __future__ import annotations

import argparse
from typing import Callable

from vit_seg_node.core.card import MAX_THREADS
from vit_seg_node.core.schema import integer, number, SchemaError, shorten

MAX_DOMAIN_ID = 232     # the largest ROS_DOMAIN_ID rmw accepts


def int_in(low: int, high: int) -> Callable[[str], int]:
    """Return an argparse type: an integer in ``low..high``."""
    def parse(text: str) -> int:
        try:
            return integer(int(text), '', low, high)
        except (ValueError, SchemaError):
            raise argparse.ArgumentTypeError(
                f'must be an integer in {low}..{high}, got {shorten(text)}') from None
    parse.__name__ = 'integer'
    return parse


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """Return an argparse type: a finite number in [low, high] (``(low, high]`` if open)."""
    def parse(text: str) -> float:
        try:
            return number(float(text), '', low, high, low_open)
        except (ValueError, SchemaError):
            lo = '(' if low_open else '['
            raise argparse.ArgumentTypeError(
                f'must be a finite number in {lo}{low:g}, {high:g}], got {shorten(text)}') from None
    parse.__name__ = 'number'
    return parse


THREADS = int_in(0, MAX_THREADS)            # 0: the backend's (or a tuned card's) default
DOMAIN_ID = int_in(0, MAX_DOMAIN_ID)
COUNT = int_in(1, 1_000_000)                # frames, runs, pairs: at least one
BUDGET = float_in(0.0, 1.0)                 # an mIoU budget (0.005 = 0.5 points)
SECONDS = float_in(0.0, 60.0)               # a gap between frames
RATE = float_in(0.0, 1000.0, low_open=True)   # frames per second or a playback factor
