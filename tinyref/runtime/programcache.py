"""Keep tinygrad's lowered kernels on disk, so a second run at the same shapes skips code generation.

tinygrad caches the *compiled binary* of each kernel on disk, but not the work before it: turning
each kernel's graph into optimised source (``to_program``) is Python that takes ~0.1-0.3 s per
kernel on a small CPU, and a training step has ~250 kernels. This module backs tinygrad's
in-memory program cache with its own on-disk cache (the same sqlite file, a table of its own),
keyed by what tinygrad keys it by in memory: the kernel graph's hash, the renderer and the
code-generation settings, plus the tinygrad version and whether tinyref's choice of matmul opts
(tinyref.runtime.kernelopts) made it. It respects tinygrad's switches: nothing
is read or written when ``CACHELEVEL=0`` or ``CCACHE=0`` (as when ``tinyref check`` probes a
device and must see a fresh compile).
"""
from __future__ import annotations

import hashlib
import os
from importlib.metadata import version

import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize
from tinygrad.helpers import CACHELEVEL, CCACHE, diskcache_get, diskcache_put

from . import kernelopts

TABLE = "tinyref_program"
TINYGRAD_VERSION = version("tinygrad")


def disk_key(key: tuple) -> str:
    """A stable text key for tinygrad's in-memory key (ast hash, renderer class, target, settings)."""
    parts = [f"{k.__module__}.{k.__qualname__}" if isinstance(k, type) else repr(k) for k in key]
    rule = kernelopts.RULE if kernelopts.installed() else ""   # tinyref's choice of opts, or tinygrad's
    return hashlib.sha256("\0".join([TINYGRAD_VERSION, rule, *parts]).encode()).hexdigest()


class DiskBackedPrograms(dict):
    """tinygrad's ``to_program_cache`` dict, falling back to (and filling) the disk cache."""

    def _use_disk(self) -> bool:
        return CACHELEVEL.value >= 1 and bool(CCACHE.value)

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        if self._use_disk() and (program := diskcache_get(TABLE, disk_key(key))) is not None:
            dict.__setitem__(self, key, program)
            return True
        return False

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __setitem__(self, key, program) -> None:
        dict.__setitem__(self, key, program)
        if self._use_disk():
            diskcache_put(TABLE, disk_key(key), program)


def enable() -> None:
    """Install the disk-backed cache in tinygrad (idempotent; keeps what is already in memory)."""
    if not isinstance(codegen.to_program_cache, DiskBackedPrograms):
        cache = DiskBackedPrograms(codegen.to_program_cache)
        codegen.to_program_cache = realize.to_program_cache = cache


def keep_compile_workers() -> None:
    """Keep each of tinygrad's compile processes for the whole run: by default tinygrad replaces a worker after
    16 kernels with a fresh interpreter that re-imports tinygrad and re-builds its pattern matchers, which costs
    a cold demo step (~130 kernels) about 15% more CPU time. Set before tinygrad starts its pool."""
    os.environ.setdefault("BEAM_MAX_TASKS_PER_CHILD", str(10**9))
