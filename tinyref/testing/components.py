"""The model's components as ``tinyref.testing.assert_component_matches`` checks them: each one's oracle pair, its
parameters, its extra arguments for a config, and the input it is drawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import oracle

from ..config import GPTConfig
from ..verify.tolerances import round_to


# --8<-- [start:components]
@dataclass(frozen=True)
class Component:
    """An oracle pair, which of a model's parameters it uses (local names), its extra arguments, its input."""

    forward: Callable
    backward: Callable
    params: Callable    # full params -> the component's, under local names
    args: Callable      # cfg -> extra arguments of the oracle pair
    input: str          # "tokens" (B, T) ids, "hidden" (B, T, C), "wide" (B, T, d_ff) activation input,
                        # or "heads" (B, H, T, hd) queries or keys


def _attention_args(cfg) -> tuple:
    """attention_forward's arguments after (x, p): heads, kv heads, and (theta, style) when rotary."""
    options = oracle.block_options(cfg)
    return cfg.n_heads, options["n_kv_heads"], options["rope"]


def _feedforward_args(cfg) -> tuple:
    options = oracle.block_options(cfg)
    return options["activation"], options["gated_mlp"]


def _block_args(cfg) -> tuple:
    """block_forward's arguments after (x, p), in order."""
    options = oracle.block_options(cfg)
    return (cfg.n_heads, cfg.layer_norm_eps, options["activation"], options["norm"], options["gated_mlp"],
            options["n_kv_heads"], options["rope"])


COMPONENTS = {
    "embedding": Component(oracle.embedding_forward, oracle.embedding_backward,
                           lambda p: {k: p[k] for k in ("wte.weight", "wpe.weight") if k in p}, lambda cfg: (), "tokens"),
    "layernorm": Component(oracle.layernorm_forward, oracle.layernorm_backward,
                           lambda p: oracle.sub_params(p, "h.0.ln_1."), lambda cfg: (cfg.layer_norm_eps,), "hidden"),
    "rmsnorm": Component(oracle.rmsnorm_forward, oracle.rmsnorm_backward,
                         lambda p: {"weight": p["h.0.ln_1.weight"]}, lambda cfg: (cfg.layer_norm_eps,), "hidden"),
    "rope": Component(oracle.rope_forward, oracle.rope_backward, lambda p: {},
                      lambda cfg: (oracle.family(cfg)["rope_theta"], oracle.family(cfg)["rope_style"]), "heads"),
    "attention": Component(oracle.attention_forward, oracle.attention_backward,
                           lambda p: oracle.sub_params(p, "h.0.attn."), _attention_args, "hidden"),
    "gelu": Component(oracle.activation_forward, oracle.activation_backward, lambda p: {},
                      lambda cfg: (oracle.variant(cfg)[0],), "wide"),
    "feedforward": Component(oracle.feedforward_forward, oracle.feedforward_backward,
                             lambda p: oracle.sub_params(p, "h.0.mlp."), _feedforward_args, "hidden"),
    "block": Component(oracle.block_forward, oracle.block_backward, lambda p: oracle.sub_params(p, "h.0."),
                       _block_args, "hidden"),
}
# --8<-- [end:components]


def component_input(rng: np.random.Generator, component: Component, cfg: GPTConfig, B: int, T: int):
    """Float32-exact inputs: token ids; (B, H, T, hd) N(0, 1) queries for RoPE; activation inputs N(0, 2^2),
    where the tanh and exact-erf GELUs differ most (|x| ~ 2) and no larger row inflates the tolerance, which
    scales with the tensor's largest value; or hidden activations whose rows have scales 1e-2, 1 and 10: a wrong
    LayerNorm eps only shows on low-variance rows. Each row's mean stays on the scale of its spread (float32
    LayerNorm loses |mean|/std digits to cancellation, a property of the input, not of your code)."""
    if component.input == "tokens":
        return rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int64)
    if component.input == "wide":
        return round_to(rng.standard_normal((B, T, cfg.d_ff)) * 2, "float32")
    if component.input == "heads":
        return round_to(rng.standard_normal((B, cfg.n_heads, T, cfg.d_model // cfg.n_heads)), "float32")
    shape = (B, T, cfg.d_model)
    rows = shape[:-1] + (1,)
    return round_to((rng.standard_normal(shape) + rng.standard_normal(rows)) * rng.choice([1e-2, 1.0, 10.0], size=rows),
                    "float32")
