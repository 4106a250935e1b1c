"""Where a model first leaves the oracle: the oracle's intermediate values at the submodules a GPT-2
is built of (each block's ``ln_1``, ``attn``, ``ln_2``, ``mlp``, and ``ln_f``), and the first of a
model's captured inputs and outputs that differs from them. NumPy only; tinyref.testing.torch
captures a PyTorch model's values with forward hooks.
"""
from __future__ import annotations

import oracle

from ..config import GPTConfig
from ..verify.tolerances import Tolerance, compare


def oracle_trace(idx, params: dict, cfg: GPTConfig) -> dict:
    """name -> (input, output, what the input is) of each hooked submodule, from the oracle's component forwards."""
    trace = {}

    def point(name, x, out, source):
        trace[name] = (x, out, source)
        return out

    x, _ = oracle.embedding_forward(idx, {k: params[k] for k in ("wte.weight", "wpe.weight")})   # (B, T, C)
    source = "the embeddings wte[idx] + wpe[:T]"
    for i in range(cfg.n_layers):
        p, h = oracle.sub_params(params, f"h.{i}."), f"h.{i}"
        a = point(f"{h}.ln_1", x, oracle.layernorm_forward(x, oracle.sub_params(p, "ln_1."), cfg.layer_norm_eps)[0],
                  source)
        att = point(f"{h}.attn", a, oracle.attention_forward(a, oracle.sub_params(p, "attn."), cfg.n_heads)[0],
                    f"{h}.ln_1's output")
        x1 = x + att                                                                             # residual
        m = point(f"{h}.ln_2", x1, oracle.layernorm_forward(x1, oracle.sub_params(p, "ln_2."), cfg.layer_norm_eps)[0],
                  f"the residual x + attn(ln_1(x)) after {h}.attn")
        f = oracle.feedforward_forward(m, oracle.sub_params(p, "mlp."), cfg.activation)[0]
        x = x1 + point(f"{h}.mlp", m, f, f"{h}.ln_2's output")                                   # residual
        source = f"{h}'s output x + mlp(ln_2(x))"
    point("ln_f", x, oracle.layernorm_forward(x, oracle.sub_params(params, "ln_f."), cfg.layer_norm_eps)[0], source)
    return trace


def first_divergence(captured: dict, prefix: str, trace: dict, tol: Tolerance) -> list[str]:
    """Report lines naming the first hooked submodule whose input or output differs from the oracle's."""
    agree, unseen = [], []
    for name, (x, out, source) in trace.items():
        got = captured.get(name, {})
        for part, want in (("input", x), ("output", out)):
            if part not in got:
                unseen.append(f"{prefix}{name} {part}")
                continue
            mismatch = compare(f"{prefix}{name} {part}", got[part], want, tol)
            if mismatch is not None:
                what = f", which should be {source}" if part == "input" else ""
                upstream = f" ({', '.join(agree[-2:])} {'agree' if len(agree) > 1 else 'agrees'})" if agree else ""
                return [f"first divergence: {prefix}{name} {part}{what}{upstream}", f"  {mismatch}",
                        *_unseen(unseen)]
        if got:
            agree.append(prefix + name)
    if len(unseen) == 2 * len(trace):
        return ["cannot localise: the model calls none of h.{i}.ln_1/attn/ln_2/mlp, ln_f as submodules"]
    return ["first divergence: the output head (lm_head or wte.weight.T), after every hooked input and output agrees",
            *_unseen(unseen)]


def _unseen(unseen: list) -> list[str]:
    return [f"not compared (never called): {', '.join(unseen)}"] if unseen else []
