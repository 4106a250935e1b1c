"""Golden vectors: the float64 oracle's weights, inputs, logits, loss, gradients and one AdamW step,
as safetensors files with a ``manifest.json``, for implementations that cannot import Python.

Deterministic by construction: NumPy's seeded PCG64 generator, tensors in the safetensors package's sorted order,
JSON with sorted keys, no timestamps. Two exports with the same arguments are byte-identical.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

import oracle

from . import tolerances
from ..config import GPTConfig
from ..errors import CheckpointError, UsageError

FORMAT = "tinyref-golden-1"
MANIFEST = "manifest.json"
# One AdamW step as tinyref trains: decoupled weight decay on matrices only (tinyref.optim.decayed_keys).
ADAMW = {"lr": 1e-2, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.1}


@dataclass(frozen=True)
class GoldenCase:
    """A model config and the (batch, seq_len) of its inputs."""

    config: GPTConfig
    batch: int = 2
    seq_len: int | None = None    # None -> config.context_length

    @property
    def T(self) -> int:
        return self.seq_len or self.config.context_length


# "small" and "untied" are also tinyref.testing's reference cases (and the test suite's fixed shapes);
# "nanogpt" is "small" as nanoGPT's bias=False model: exact-erf GELU (PyTorch's nn.GELU()), no biases;
# "llama" is "small" as a Llama-family model.
SMALL = GPTConfig(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2, d_ff=24)
PRESETS = {
    "small": GoldenCase(SMALL),
    "untied": GoldenCase(GPTConfig(vocab_size=7, context_length=8, d_model=8, n_heads=1, n_layers=1, d_ff=16,
                                   tie_embeddings=False), seq_len=5),
    "demo": GoldenCase(GPTConfig()),
    "nanogpt": GoldenCase(replace(SMALL, activation="gelu", bias=False)),
    # "small" as a Llama: rotary positions, RMSNorm, SwiGLU, no biases, an untied head, 2 kv heads for 4 query heads
    "llama": GoldenCase(GPTConfig.llama(vocab_size=11, context_length=8, d_model=16, n_heads=4, n_layers=2,
                                        n_kv_heads=2, d_ff=24)),
}


# what the safetensors format can name; anything else is refused before a file is written
SAFETENSORS_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_)


# --8<-- [start:safetensors]
def write_safetensors(path, tensors: dict) -> None:
    """NumPy arrays to a safetensors file, by the format's reference package (tensors in its sorted
    order, so the bytes depend only on the arrays); a 0-d array keeps its shape ()."""
    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}   # 0-d stays 0-d
    for k, a in arrays.items():
        if a.dtype.type not in SAFETENSORS_DTYPES:
            raise UsageError(f"{k}: dtype {a.dtype} has no safetensors name here; use one of "
                             f"{', '.join(np.dtype(d).name for d in SAFETENSORS_DTYPES)}")
    safetensors.numpy.save_file(arrays, str(path))


def read_safetensors(path) -> dict:
    """A safetensors file as a dict of NumPy arrays."""
    try:
        return safetensors.numpy.load_file(str(path))
    except (safetensors.SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read safetensors file {path} ({type(e).__name__}: {e}); "
                              "check the path and that the file is complete") from None
# --8<-- [end:safetensors]


@contextlib.contextmanager
def replacing_directory(out: Path, overwrite: bool):
    """Yield an empty temporary sibling of ``out`` to write into; on success it replaces ``out``.

    A failure leaves ``out`` as it was. An existing non-empty ``out`` needs ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory: choose another output directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already exists and is not empty: choose a new directory or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise UsageError(f"cannot create {out} ({e.strerror}): choose a writable directory") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --8<-- [start:case]
def golden_tensors(case: GoldenCase, seed: int = 0) -> dict:
    """Every tensor of one golden case, float64 from the oracle (ids int64), in a fixed order.

    Parameters are rounded to float32 values, so a float32 implementation sees exactly the oracle's
    weights and measures only its own rounding."""
    cfg, B, T = case.config, case.batch, case.T
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in oracle.init_params(cfg, rng).items()}
    idx = rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int64)
    targets = rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int64)
    logits, cache = oracle.gpt_forward(idx, params, cfg)                 # (B, T, V)
    loss, loss_cache = oracle.cross_entropy_forward(logits, targets)
    dlogits = oracle.cross_entropy_backward(loss_cache)                  # (B, T, V)
    grads = oracle.gpt_backward(dlogits, cache)
    decayed = {k: v for k, v in params.items() if v.ndim >= 2}           # matrices decay, vectors do not
    after, state = {}, {"m": {}, "v": {}}
    for group, wd in ((decayed, ADAMW["weight_decay"]), ({k: v for k, v in params.items() if k not in decayed}, 0.0)):
        new, s = oracle.adamw_step(group, grads, None, **{**ADAMW, "weight_decay": wd})
        after.update(new)
        state["m"].update(s["m"])
        state["v"].update(s["v"])
    return {"inputs.idx": idx, "inputs.targets": targets,
            **oracle.with_prefix("params.", params),
            "outputs.logits": logits, "outputs.loss": np.array(loss, dtype=np.float64),
            "outputs.dlogits": dlogits,
            **oracle.with_prefix("grads.", grads),
            **oracle.with_prefix("adamw.params.", {k: after[k] for k in params}),
            **oracle.with_prefix("adamw.m.", {k: state["m"][k] for k in params}),
            **oracle.with_prefix("adamw.v.", {k: state["v"][k] for k in params})}
# --8<-- [end:case]


def _tolerance(tol: tolerances.Tolerance) -> dict:
    return {"rtol": tol.rtol, "atol": tol.atol, "floor": tol.floor, "why": tol.why}


def manifest(cases: dict, files: dict, seed: int) -> dict:
    """The manifest: what each file holds, how it was made, and how to compare against it."""
    from .. import __version__
    return {
        "format": FORMAT,
        "tinyref_version": __version__,
        "generator": "tinyref's float64 NumPy oracle (package 'oracle'), oracle.init_params weights rounded to float32 values",
        "seed": seed,
        "layout": ("tinyref state-dict keys; linear weights (out, in); Hugging Face GPT-2 Conv1D weights are the "
                   "transpose (tinyref.verify.hf); tied models have no lm_head.weight (the head is wte.weight); "
                   "rotary models (positions 'rope') have no wpe.weight; c_attn.weight is ((n_heads + 2 n_kv_heads) "
                   "* head size, d_model), rows [q | k | v]; gated MLPs add mlp.c_gate.weight (d_ff, d_model)"),
        "tensors": {
            "inputs.idx, inputs.targets": "int64 (B, T) token ids and next-token targets",
            "params.<key>": "float64 weights",
            "outputs.logits": "float64 (B, T, V)",
            "outputs.loss": "float64 scalar, mean cross-entropy over B*T positions",
            "outputs.dlogits": "float64 (B, T, V), d loss / d logits",
            "grads.<key>": "float64 d loss / d params.<key> (tied: wte gets both its uses)",
            "adamw.params.<key>, adamw.m.<key>, adamw.v.<key>": "after one AdamW step from zero moments",
        },
        "adamw": {**ADAMW, "decayed": "keys whose parameter has ndim >= 2; the others use weight_decay 0",
                  "rule": "m=b1*m+(1-b1)*g; v=b2*v+(1-b2)*g^2; p -= lr*(m/(1-b1^t) / (sqrt(v/(1-b2^t))+eps) + wd*p)"},
        "tolerances": {
            "rule": "|actual-expected| <= atol*max|expected| + rtol*|expected| + floor, per tensor",
            "float32_forward": _tolerance(tolerances.FLOAT32),
            "float32_gradients": _tolerance(tolerances.FLOAT32_GRAD),
            "float64": _tolerance(tolerances.FLOAT64),
        },
        "cases": [{"name": name, "config": case.config.to_dict(), "batch": case.batch, "seq_len": case.T,
                   **files[name]} for name, case in cases.items()],
    }


def export_golden(out, cases: dict | None = None, seed: int = 0, overwrite: bool = False) -> dict:
    """Write ``<name>.safetensors`` per case and ``manifest.json`` into ``out`` (atomically); returns the manifest."""
    cases = PRESETS if cases is None else cases
    files = {}
    with replacing_directory(Path(out), overwrite) as tmp:
        for name, case in cases.items():
            tensors = golden_tensors(case, seed)
            path = tmp / f"{name}.safetensors"
            write_safetensors(path, tensors)
            files[name] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "dtypes": {k: str(v.dtype) for k, v in tensors.items()},
                           "shapes": {k: list(v.shape) for k, v in tensors.items()}}
        data = manifest(cases, files, seed)
        (tmp / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def load_golden(directory, name: str) -> tuple[GPTConfig, dict]:
    """(cfg, tensors) of one case of an export, checked against the manifest's sha256."""
    directory = Path(directory)
    try:
        data = json.loads((directory / MANIFEST).read_text())
        entry = next(c for c in data["cases"] if c["name"] == name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot read {directory / MANIFEST} ({e}); is it a 'tinyref export-golden' directory?") from None
    except StopIteration:
        raise UsageError(f"no case {name!r} in {directory / MANIFEST}; it has "
                         f"{[c['name'] for c in data['cases']]}") from None
    path = directory / entry["file"]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path} is missing or does not match the manifest's sha256; export again")
    return GPTConfig.from_dict(entry["config"]), read_safetensors(path)
