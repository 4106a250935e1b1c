"""The oracle is pure NumPy: importing it (all of it) loads neither tinygrad nor tinyref."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import sys, oracle, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tinygrad', 'tinyref')))"


def imported_after(modules: str) -> str:
    """The tinygrad/tinyref modules loaded in a fresh interpreter after importing ``modules``."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_importing_every_oracle_module_loads_no_tinygrad_or_tinyref():
    modules = ", ".join(f"oracle.{p.stem}" for p in sorted((ROOT / "oracle").glob("*.py")) if p.stem != "__init__")
    assert imported_after(modules) == "[]"


def test_the_import_probe_sees_tinygrad_when_it_is_imported():
    """Negative control: the same probe reports tinygrad once something does import it."""
    assert "'tinygrad'" in imported_after("tinygrad")


def test_the_oracle_computes_in_the_dtype_it_is_given():
    """float32 weights and inputs give float32 logits, gradients, AdamW updates and cached decoding:
    no float64 constant promotes the computation behind the caller's back."""
    import numpy as np

    import oracle
    from helpers import TIED, as_namespace
    cfg = as_namespace(TIED)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in oracle.init_params(cfg, rng).items()}
    idx = rng.integers(0, cfg.vocab_size, (2, 5))
    logits, cache = oracle.gpt_forward(idx, params, cfg)
    _, lcache = oracle.cross_entropy_forward(logits, idx)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(lcache), cache)
    clipped, _ = oracle.clip_grad_norm(grads, 0.1)
    stepped, _ = oracle.adamw_step(params, clipped, None, lr=1e-2)
    decoded = oracle.incremental_logits(list(idx[0]), params, cfg)
    produced = {"logits": logits, "decoded": decoded, **{f"grad {k}": g for k, g in grads.items()},
                **{f"clipped {k}": g for k, g in clipped.items()}, **{f"adamw {k}": p for k, p in stepped.items()}}
    promoted = sorted(name for name, a in produced.items() if a.dtype != np.float32)
    assert not promoted, f"computed in another dtype than float32: {promoted}"


def test_the_exact_gelu_variant_also_computes_in_the_dtype_it_is_given():
    """math.erf works in float64; the exact GELU rounds its result back to the input's dtype."""
    import numpy as np

    import oracle
    from helpers import NANOGPT, as_namespace
    cfg = as_namespace(NANOGPT)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in oracle.init_params(cfg, rng).items()}
    idx = rng.integers(0, cfg.vocab_size, (2, 5))
    logits, cache = oracle.gpt_forward(idx, params, cfg)
    grads = oracle.gpt_backward(np.ones_like(logits), cache)
    assert logits.dtype == np.float32 and {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert set(grads) == set(params) and not [k for k in grads if k.endswith(".bias")]

