"""Where a model first leaves the oracle: the oracle's intermediate values at the submodules a GPT is
built of (each block's ``ln_1``, ``attn``, ``ln_2``, ``mlp``, and ``ln_f``; RMSNorm, rotary attention
and gated MLPs for the Llama family), and the first of a model's captured inputs and outputs that
differs from them. NumPy only; tinyref.testing.torch captures a PyTorch model's values with forward
hooks and says which of its modules plays each part (``names``).
"""
from __future__ import annotations

import oracle

from ..config import GPTConfig
from ..verify.tolerances import Tolerance, compare


def oracle_trace(idx, params: dict, cfg: GPTConfig, names: dict | None = None) -> dict:
    """tinyref module -> (input, output, what the input is) of each hooked submodule, from the oracle's
    component forwards; ``names`` (tinyref module -> the model's) words the descriptions in the model's names."""
    trace, options = {}, oracle.block_options(cfg)
    name = (lambda module: module) if names is None else names.get
    eps, norm = cfg.layer_norm_eps, options["norm"]

    def point(module, x, out, source):
        trace[module] = (x, out, source)
        return out

    learned = options["rope"] is None
    x, _ = oracle.embedding_forward(idx, {k: params[k] for k in (("wte.weight", "wpe.weight") if learned else ("wte.weight",))})
    source = "the embeddings wte[idx] + wpe[:T]" if learned else f"the embeddings {name('wte')}[idx]"   # (B, T, C)
    for i in range(cfg.n_layers):
        p, h = oracle.sub_params(params, f"h.{i}."), f"h.{i}"
        a = point(f"{h}.ln_1", x, oracle.norm_forward(x, oracle.sub_params(p, "ln_1."), eps, norm)[0], source)
        att = point(f"{h}.attn", a, oracle.attention_forward(a, oracle.sub_params(p, "attn."), cfg.n_heads,
                                                             options["n_kv_heads"], options["rope"])[0],
                    f"{name(h + '.ln_1')}'s output")
        x1 = x + att                                                                             # residual
        m = point(f"{h}.ln_2", x1, oracle.norm_forward(x1, oracle.sub_params(p, "ln_2."), eps, norm)[0],
                  f"the residual x + attn(ln_1(x)) after {name(h + '.attn')}")
        f = oracle.feedforward_forward(m, oracle.sub_params(p, "mlp."), options["activation"], options["gated_mlp"])[0]
        x = x1 + point(f"{h}.mlp", m, f, f"{name(h + '.ln_2')}'s output")                        # residual
        source = f"{name(h)}'s output x + mlp(ln_2(x))"
    point("ln_f", x, oracle.norm_forward(x, oracle.sub_params(params, "ln_f."), eps, norm)[0], source)
    return trace


def first_divergence(captured: dict, names: dict, trace: dict, tol: Tolerance,
                     casts: tuple[Tolerance, Tolerance] | None = None) -> list[str]:
    """Report lines naming the first hooked submodule whose input or output differs from the oracle's.

    ``captured`` and ``trace`` are keyed by tinyref module, ``names`` gives the model's name of each.
    With ``casts = (first, after)``: a first difference within ``first`` (one value computed in
    float32) is taken for a float32 cast inside the model and the search goes on within ``after``
    (float32 rounding grown downstream); if nothing beyond ``after`` follows, that first difference
    is the answer after all."""
    agree, unseen, lost, strict = [], [], None, None
    for module, (x, out, source) in trace.items():
        got, shown = captured.get(module, {}), names[module]
        for part, want in (("input", x), ("output", out)):
            if part not in got:
                unseen.append(f"{shown} {part}")
                continue
            mismatch = compare(f"{shown} {part}", got[part], want, tol)
            if mismatch is None:
                continue
            what = f", which should be {source}" if part == "input" else ""
            upstream = f" ({', '.join(agree[-2:])} {'agree' if len(agree) > 1 else 'agrees'})" if agree else ""
            lines = [f"first divergence: {shown} {part}{what}{upstream}", f"  {mismatch}", *_unseen(unseen)]
            if strict is None and casts is not None and compare(shown, got[part], want, casts[0]) is None:
                lost, strict, tol = f"{shown} {part}", lines, casts[1]
                continue
            cast = [f"note: from {lost} on the values agree only to float32 precision (a float32 cast inside?)"]
            return lines[:2] + (cast if lost else []) + lines[2:]
        if got:
            agree.append(shown)
    if strict:
        return strict
    if len(unseen) == 2 * len(trace):
        return ["cannot localise: the model calls none of its blocks' norms, attention and MLP, or its final norm, "
                "as submodules"]
    return ["first divergence: the output head (lm_head or wte.weight.T), after every hooked input and output agrees",
            *_unseen(unseen)]


def _captured_values(captured: dict, trace: dict):
    """(module, part, tinyref's value, the oracle's) for every hooked input and output captured, in the model's order."""
    for module, (x, out, _) in trace.items():
        got = captured.get(module, {})
        for part, want in (("input", x), ("output", out)):
            if part in got:
                yield module, part, got[part], want


def _first_disagreement(captured: dict, trace: dict, tol: Tolerance) -> tuple[int, tuple | None]:
    """How many captured values agree with the oracle's within ``tol`` before the first that does not, and that
    one's (module, part), or None when all agree."""
    count = 0
    for module, part, got, want in _captured_values(captured, trace):
        if compare(part, got, want, tol) is not None:
            return count, (module, part)
        count += 1
    return count, None


def agreeing_values(captured: dict, trace: dict, tol: Tolerance) -> int:
    """How many hooked inputs and outputs, in the model's order, agree with the oracle's before the first that does not."""
    return _first_disagreement(captured, trace, tol)[0]


def first_precision_loss(captured: dict, names: dict, trace: dict, tol: Tolerance) -> str | None:
    """The first hooked input or output (in the model's names) that differs from the oracle's beyond ``tol``."""
    _, found = _first_disagreement(captured, trace, tol)
    return None if found is None else f"{names[found[0]]} {found[1]}"


def _unseen(unseen: list) -> list[str]:
    return [f"not compared (never called): {', '.join(unseen)}"] if unseen else []
