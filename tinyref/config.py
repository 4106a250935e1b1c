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


# The feed-forward activations: GPT-2's tanh approximation (Hugging Face "gelu_new") and the exact erf GELU.
ACTIVATIONS = ("gelu_tanh", "gelu")


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
    activation: str = "gelu_tanh"  # GPT-2's tanh GELU, or "gelu": the exact erf GELU (PyTorch's nn.GELU(), nanoGPT)
    bias: bool = True  # False: no bias in any linear layer or LayerNorm (nanoGPT's bias=False)

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
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
            raise ConfigError(f"GPTConfig.layer_norm_eps must be a finite number > 0, got {eps!r}")
        self.layer_norm_eps = float(eps)
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError(f"GPTConfig.tie_embeddings must be True or False, got {self.tie_embeddings!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"GPTConfig.activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                              f"got {self.activation!r}")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"GPTConfig.bias must be True or False, got {self.bias!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
    # --8<-- [end:config]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        """Build a config from ``to_dict()`` output (e.g. a checkpoint's config.json); fields it lacks
        keep their defaults, so a config saved before ``activation`` and ``bias`` existed loads as GPT-2."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)
