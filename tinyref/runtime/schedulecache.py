"""Keep tinygrad's kernel schedules on disk, so a second run at the same shapes skips the scheduler.

Before a single kernel compiles, tinygrad's scheduler turns each ``realize`` into a list of kernels
(``get_kernel_graph``): Python that takes 1-3 s for a training step on a small CPU, every run.
tinygrad already memoises that in memory (``schedule_cache``, keyed by the content hash of the
realized graph with its buffers replaced by numbered parameters, so the key names every shape,
dtype, constant and operation). This module backs that dict with a table in tinygrad's cache
database, keyed by the same hash plus the tinygrad version and every tinygrad setting in force.
The stored form is our own: JSON of the schedule's nodes (operation, dtype, argument, sources),
whose arguments may only be of the few types listed in ``CLASSES`` and ``ENUMS``. A graph with
anything else (a Python callback, an unknown type) is neither stored nor looked up, and an entry
is only written when decoding it gives back the very same graph.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import sys
import zlib
from enum import Enum

import tinygrad.schedule as schedule
from tinygrad.codegen.opt import Opt, OptOps
from tinygrad.dtype import DTYPES_DICT, AddrSpace, ConstFloat, DType, Invalid, InvalidType, dtypes
from tinygrad.helpers import CACHELEVEL, SCACHE, ContextVar, db_connection
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import AxisType, CallInfo, KernelInfo, Ops, ParamArg, UOp

from .programcache import TINYGRAD_VERSION

TABLE = "tinyref_schedule_v1"
CLASSES = {c.__name__: c for c in (ParamArg, CallInfo, KernelInfo, Opt, Estimates)}
ENUMS = {e.__name__: e for e in (Ops, AxisType, OptOps, AddrSpace)}
DTYPES = {dt.name: dt for dt in (*DTYPES_DICT.values(), dtypes.void, *dtypes.weaks) if type(dt) is DType}


class Unstorable(Exception):
    """A graph holds something this format does not store (a callback, an unknown type)."""


def encode_arg(a):
    """A UOp argument as JSON, tagged by type; Unstorable for anything outside the known types."""
    if a is None or isinstance(a, (bool, str)) or type(a) is int:
        return a
    if isinstance(a, ConstFloat) or type(a) is float:
        return {"f": float(a).hex(), "c": isinstance(a, ConstFloat)}
    if isinstance(a, InvalidType):
        return {"invalid": True}
    if isinstance(a, tuple):
        return {"t": [encode_arg(x) for x in a]}
    if type(a) is DType and DTYPES.get(a.name) is a:
        return {"d": a.name}
    if isinstance(a, Enum) and ENUMS.get(type(a).__name__) is type(a):
        return {"e": type(a).__name__, "n": a.name}
    if CLASSES.get(type(a).__name__) is type(a):
        if isinstance(a, CallInfo) and (a.grad_fxn is not None or a.aux is not None):
            raise Unstorable("a call with a gradient function or aux data")
        return {"k": type(a).__name__, "v": [encode_arg(getattr(a, f.name)) for f in dataclasses.fields(a)]}
    raise Unstorable(f"argument of type {type(a).__name__}")


def decode_arg(j):
    if not isinstance(j, dict):
        return j
    if "f" in j:
        value = float.fromhex(j["f"])
        return ConstFloat(value) if j["c"] else value
    if "invalid" in j:
        return Invalid
    if "t" in j:
        return tuple(decode_arg(x) for x in j["t"])
    if "d" in j:
        return DTYPES[j["d"]]
    if "e" in j:
        return ENUMS[j["e"]][j["n"]]
    return CLASSES[j["k"]](*[decode_arg(x) for x in j["v"]])


def encode(root: UOp) -> bytes:
    """The graph under ``root`` as compressed JSON: one [op, dtype, arg, sources, tag] row per node."""
    index: dict[UOp, int] = {}
    rows = []
    for u in root.toposort():
        if type(u.dtype) is not DType or DTYPES.get(u.dtype.name) is not u.dtype:
            raise Unstorable(f"dtype {u.dtype!r}")
        rows.append([u.op.name, u.dtype.name, encode_arg(u.arg), [index[s] for s in u.src], encode_arg(u.tag)])
        index[u] = len(index)
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode())


def decode(data: bytes) -> UOp:
    nodes: list[UOp] = []
    for op, dtype, arg, src, tag in json.loads(zlib.decompress(data)):
        nodes.append(UOp(Ops[op], DTYPES[dtype], tuple(nodes[i] for i in src), decode_arg(arg), decode_arg(tag)))
    return nodes[-1]


def storable(function: UOp) -> bool:
    """Whether every argument of the scheduled graph is of a known type (its hash then names it exactly)."""
    try:
        for u in function.toposort():
            encode_arg(u.arg)
            encode_arg(u.tag)
    except Unstorable:
        return False
    return True


def settings_hash() -> str:
    """Every tinygrad setting in force (environment and Context), so none can change under a stored schedule."""
    values = sorted((k, repr(v.value)) for k, v in ContextVar._cache.items())
    return hashlib.sha256(repr(values).encode()).hexdigest()


def disk_key(function: UOp) -> str:
    return hashlib.sha256(b"\0".join([TINYGRAD_VERSION.encode(), TABLE.encode(), settings_hash().encode(),
                                      function.key])).hexdigest()


def read(key: str) -> bytes | None:
    try:
        row = db_connection().execute(f"SELECT val FROM '{TABLE}' WHERE key=?", (key,)).fetchone()
    except sqlite3.OperationalError:   # no table yet
        return None
    return None if row is None else row[0]


def write(key: str, data: bytes) -> None:
    conn = db_connection()
    conn.execute(f"CREATE TABLE IF NOT EXISTS '{TABLE}' (key text PRIMARY KEY, val blob)")
    conn.execute(f"REPLACE INTO '{TABLE}' (key, val) VALUES (?, ?)", (key, data))
    conn.commit()


def lower_sink_to_linear(function: UOp):
    """tinygrad's lower_sink_to_linear (a realized graph -> its kernel list), first asking the disk, then
    storing what the scheduler computed."""
    if isinstance(function.arg, KernelInfo) or not SCACHE or CACHELEVEL.value < 1 or function.key in schedule.schedule_cache \
            or not storable(function):
        return ORIGINAL(function)
    key = disk_key(function)
    if (data := read(key)) is not None:
        schedule.schedule_cache[function.key] = decode(data)
        return ORIGINAL(function)   # now a hit in tinygrad's own cache
    linear = ORIGINAL(function)
    with contextlib.suppress(Unstorable):
        data = encode(linear)
        if decode(data) is linear:   # the stored form must give back this exact graph
            write(key, data)
    return linear


ORIGINAL = schedule.lower_sink_to_linear


def scheduler_pattern(function: UOp):
    """The pattern tinygrad's scheduler calls. tinygrad compiles a pattern's function with a copy of its
    globals, so this one looks the module up at each call: what it calls can still be replaced (tests)."""
    return sys.modules[__name__].lower_sink_to_linear(function)


def enable() -> None:
    """Route tinygrad's scheduler through the disk cache (idempotent)."""
    if schedule.pm_schedule.patterns[0][1] is not scheduler_pattern:
        schedule.pm_schedule = schedule.PatternMatcher([(schedule.UPat(Ops.SINK, name="function"), scheduler_pattern)])
