"""The checkpoint's tensor files: safetensors (written and read by the format's reference package)
under tinyref's checks: the header before any tensor is read, every value for NaN and infinity after."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from ..errors import CheckpointError

MAX_HEADER = 100 * 2**20   # a header is ~100 bytes per tensor; anything near this is not a checkpoint
DTYPE = "F32"              # tinyref stores float32 master weights and optimizer state


# --8<-- [start:safetensors]
def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """float32 arrays in the safetensors format (written by the format's reference package), synced to disk."""
    blob = safetensors.numpy.save({k: np.asarray(a, dtype="<f4", order="C") for k, a in arrays.items()})
    with open(path, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
# --8<-- [end:safetensors]


def check_safetensors(path: Path, expected: dict[str, tuple] | None = None):
    """Check the header of ``path`` against ``expected`` {key: shape} (None: take the keys from the
    header, still checking dtypes and byte ranges); returns (header, data offset, data size)."""
    name = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise CheckpointError(f"{name} is missing: the checkpoint is incomplete; save it again or pick another")
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 2 <= n <= min(size - 8, MAX_HEADER):
            raise CheckpointError(f"{name} is not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise CheckpointError(f"{name} has a corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} has a corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    if expected is None:
        expected = {k: tuple(v.get("shape") or ()) if isinstance(v, dict) else () for k, v in header.items()}
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{name} does not match config.json: missing {missing[:3]}, unexpected {extra[:3]}")
    data_size, spans = size - 8 - n, []
    for k, shape in expected.items():
        info = header[k]
        want = 4 * math.prod(shape)
        ok = isinstance(info, dict) and info.get("dtype") == DTYPE and info.get("shape") == list(shape)
        offsets = info.get("data_offsets") if ok else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        start, end = offsets if ok else (None, None)
        if not (ok and 0 <= start and end - start == want and end <= data_size):
            raise CheckpointError(f"{name}: tensor {k} should be {DTYPE} {tuple(shape)} ({want} bytes inside the "
                                  f"{data_size}-byte data), header says {info}")
        spans.append((start, end, k))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{name}: tensors {a} and {b} overlap")
    return {k: (s, e, expected[k]) for s, e, k in spans}, 8 + n, data_size


def read_safetensors(path: Path, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The tensors of ``path``; nothing beyond the header is read until check_safetensors() passes."""
    check_safetensors(path, expected)
    try:
        with safetensors.safe_open(path, framework="np") as f:
            arrays = {k: f.get_tensor(k) for k in expected}
    except (safetensors.SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.parent.name}/{path.name} cannot be read as safetensors ({e})") from None
    for k, a in arrays.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path.parent.name}/{path.name}: tensor {k} holds {a.size - np.isfinite(a).sum()} NaN "
                                  "or infinite values: the run that saved it had diverged; use an earlier checkpoint")
    return arrays
