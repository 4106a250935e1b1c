"""Numeric flags with their ranges: argparse types, so a value out of range is one usage line before any work.

Every ``type=`` of a numeric flag is one of these (tests/test_fuzz.py checks every command's parser);
the Python API checks the same values again where they are used.
"""
from __future__ import annotations

import argparse
import math

from ..errors import SEED_MAX

INT32_MAX = 2**31 - 1      # token ids and thread counts reach C code as 32-bit integers


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    low = f"{'>' if lo_open else '>='} {lo}" if lo is not None else ""
    high = f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""
    return " and ".join(s for s in (low, high) if s)


def integer(lo: int, hi: int | None = None):
    """An argparse type: an int in [lo, hi] (hi None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_bounds(lo, hi, False, False)}, got {value}")
        return value
    parse.range = (lo, hi)
    return parse


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite float between lo and hi (each bound closed unless its *_open is set)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        ok = math.isfinite(value) and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number {_bounds(lo, hi, lo_open, hi_open)}, got {text!r}")
        return value
    parse.range = (lo, hi)
    return parse


COUNT = integer(0)                 # how many of something, 0 allowed
POSITIVE = integer(1)              # a size or a count that must be at least 1
SEED = integer(0, SEED_MAX)        # NumPy and tinygrad (a uint32) both take it
