"""GPTConfig: every size that defines a model, checked once so the modules can trust it."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError


def _positive_int(name: str, value) -> int:
    """``value`` as a plain int (NumPy integers welcome), or ConfigError naming the field."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
    return int(value)


# The feed-forward activations: GPT-2's tanh approximation (Hugging Face "gelu_new"), the exact erf GELU,
# and SiLU (x * sigmoid(x), the Llama family's gate: SwiGLU with gated_mlp=True).
ACTIVATIONS = ("gelu_tanh", "gelu", "silu")
POSITIONS = ("learned", "rope")      # GPT-2's wpe table, or rotary embeddings applied to q and k
ROPE_STYLES = ("half", "interleaved")   # Hugging Face's rotate_half pairs (j, j + hd/2); Meta's and llama2.c's (2j, 2j + 1)
NORMS = ("layernorm", "rmsnorm")


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ConfigError(f"GPTConfig.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"GPTConfig.{name} must be True or False, got {value!r}")
    return value


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"GPTConfig.{name} must be a finite number > 0, got {value!r}")
    return float(value)


# What GPTConfig.llama() sets apart from the sizes: the Llama family's choice of every variant field.
LLAMA = dict(positions="rope", rope_style="half", norm="rmsnorm", activation="silu", gated_mlp=True, bias=False,
             tie_embeddings=False)


# --8<-- [start:config]
@dataclass
class GPTConfig:
    """The hyper-parameters of a GPT-2 style decoder (defaults: the seed demo's model)."""

    vocab_size: int = 52
    context_length: int = 16
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int | None = None  # None -> 4 * d_model, resolved in __post_init__
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    activation: str = "gelu_tanh"  # GPT-2's tanh GELU, "gelu": the exact erf GELU (PyTorch's nn.GELU(), nanoGPT), or "silu"
    bias: bool = True  # False: no bias in any linear layer or LayerNorm (nanoGPT's bias=False)
    # The Llama family (GPTConfig.llama() sets them all); the defaults keep GPT-2 exactly.
    positions: str = "learned"     # "learned": a wpe table; "rope": q and k rotated by position, no wpe
    rope_theta: float = 10000.0    # pair j of a head turns by p * rope_theta ** (-2j / hd) at position p
    rope_style: str = "half"       # which dimensions pair up: "half" (j, j + hd/2) or "interleaved" (2j, 2j + 1)
    norm: str = "layernorm"        # or "rmsnorm": x / sqrt(mean(x^2) + eps) * weight, never a bias
    gated_mlp: bool = False        # True: c_proj(act(c_gate(x)) * c_fc(x)) (SwiGLU with "silu")
    n_kv_heads: int | None = None  # grouped-query attention: None -> n_heads, resolved in __post_init__

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            setattr(self, name, _positive_int(name, getattr(self, name)))
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"GPTConfig.n_heads={self.n_heads} must divide d_model={self.d_model}: "
                f"choose n_heads among {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        self.d_ff = _positive_int("d_ff", self.d_ff)
        self.layer_norm_eps = _positive_float("layer_norm_eps", self.layer_norm_eps)
        self.tie_embeddings = _flag("tie_embeddings", self.tie_embeddings)
        self.activation = _choice("activation", self.activation, ACTIVATIONS)
        self.bias = _flag("bias", self.bias)
        self.positions = _choice("positions", self.positions, POSITIONS)
        self.rope_theta = _positive_float("rope_theta", self.rope_theta)
        self.rope_style = _choice("rope_style", self.rope_style, ROPE_STYLES)
        self.norm = _choice("norm", self.norm, NORMS)
        self.gated_mlp = _flag("gated_mlp", self.gated_mlp)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        self.n_kv_heads = _positive_int("n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(
                f"GPTConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}: "
                f"choose n_kv_heads among {[k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"positions='rope' turns pairs of dimensions, so the head size d_model / n_heads = "
                              f"{self.head_dim} must be even: change d_model or n_heads")

    @classmethod
    def llama(cls, vocab_size: int, context_length: int, d_model: int, n_heads: int, n_layers: int,
              n_kv_heads: int | None = None, d_ff: int | None = None, rope_theta: float = 10000.0,
              **fields) -> "GPTConfig":
        """A Llama-style config: rotary positions (Hugging Face's "half" pairing), RMSNorm, a SwiGLU MLP,
        no biases, an untied head; ``fields`` sets any other field (e.g. ``rope_style="interleaved"``)."""
        return cls(vocab_size=vocab_size, context_length=context_length, d_model=d_model, n_heads=n_heads,
                   n_layers=n_layers, n_kv_heads=n_kv_heads, d_ff=d_ff, rope_theta=rope_theta, **{**LLAMA, **fields})

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
    # --8<-- [end:config]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        """Build a config from ``to_dict()`` output (e.g. a checkpoint's config.json); fields it lacks
        keep their defaults, so a config saved before ``activation``, ``bias`` or the Llama-family fields
        existed loads as GPT-2."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)


# The fields that choose a variant of the architecture (the others are sizes), and the named presets
# of ``tinyref train --model``: GPT-2 keeps GPTConfig's defaults, llama is GPTConfig.llama()'s choice.
VARIANT_FIELDS = ("activation", "bias", "tie_embeddings", "positions", "rope_theta", "rope_style", "norm", "gated_mlp",
                  "n_kv_heads")
MODEL_PRESETS = {"gpt2": {}, "llama": LLAMA}


def preset_fields(model: str, given: dict | None = None) -> dict:
    """Every variant field of preset ``model``, with each value in ``given`` that is not None in its place."""
    if model not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {model!r}: choose one of {', '.join(MODEL_PRESETS)}")
    defaults = {f.name: f.default for f in fields(GPTConfig) if f.name in VARIANT_FIELDS}
    chosen = {k: v for k, v in (given or {}).items() if k in VARIANT_FIELDS and v is not None}
    return {**defaults, **MODEL_PRESETS[model], **chosen}


def describe_variant(cfg: GPTConfig) -> str | None:
    """One line naming the architecture's choices, what the training commands print beside the sizes;
    None for GPT-2's own (their output stays GPT-2's)."""
    if {**preset_fields("gpt2"), "n_kv_heads": cfg.n_heads} == {k: getattr(cfg, k) for k in VARIANT_FIELDS}:
        return None
    positions = f"rope ({cfg.rope_style}, theta {cfg.rope_theta:g})" if cfg.positions == "rope" else "learned"
    heads = f"{cfg.n_kv_heads} kv heads for {cfg.n_heads} query heads"
    return (f"positions {positions}, {cfg.norm}, {cfg.activation}{' gated' if cfg.gated_mlp else ''} MLP, {heads}, "
            f"{'tied' if cfg.tie_embeddings else 'untied'} head, {'biases' if cfg.bias else 'no biases'}")
