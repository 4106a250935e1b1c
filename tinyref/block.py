"""One pre-norm transformer decoder block (LayerNorm or RMSNorm before each sub-layer)."""
from tinygrad import Tensor

from .attention import MultiHeadSelfAttention
from .config import GPTConfig
from .feedforward import PositionWiseFeedForward
from .layernorm import make_norm
from .rope import RotaryPositionalEmbedding


# --8<-- [start:block]
class TransformerDecoderBlock:
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)): normalise before each sub-layer, add its output back."""

    def __init__(self, cfg: GPTConfig):
        rope = RotaryPositionalEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_style) if cfg.positions == "rope" else None
        self.ln_1 = make_norm(cfg.d_model, cfg.layer_norm_eps, cfg.norm, cfg.bias)
        self.attn = MultiHeadSelfAttention(cfg.d_model, cfg.n_heads, cfg.bias, cfg.n_kv_heads, rope)
        self.ln_2 = make_norm(cfg.d_model, cfg.layer_norm_eps, cfg.norm, cfg.bias)
        self.mlp = PositionWiseFeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias, cfg.gated_mlp)

    def __call__(self, x: Tensor) -> Tensor:
        # contiguous_backward(): store the residual stream's gradient (the sum of its two paths) once, rather than
        # recompute that sum inside every matmul that reads it (the math is unchanged)
        x = (x + self.attn(self.ln_1(x))).contiguous_backward()    # (B, T, C)
        x = (x + self.mlp(self.ln_2(x))).contiguous_backward()     # (B, T, C)
        return x
# --8<-- [end:block]
