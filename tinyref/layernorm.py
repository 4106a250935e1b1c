"""LayerNorm (zero mean, unit variance, then scale and shift) and RMSNorm (unit root mean square, then scale)."""
from tinygrad import Tensor


# --8<-- [start:layernorm]
class LayerNorm:
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance, as GPT-2).
    ``bias=False`` drops the shift (nanoGPT's bias-free variant): no ``bias`` tensor at all."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        self.eps = eps
        self.weight = Tensor.ones(dim)                    # (C,)
        self.bias = Tensor.zeros(dim) if bias else None   # (C,) or None

    def __call__(self, x: Tensor) -> Tensor:
        mean = x.mean(axis=-1, keepdim=True)                      # (B, T, 1)
        var = ((x - mean) ** 2).mean(axis=-1, keepdim=True)       # (B, T, 1)
        xhat = (x - mean) * (var + self.eps).rsqrt()              # (B, T, C)
        y = xhat * self.weight                                    # (B, T, C)
        return y if self.bias is None else y + self.bias          # (B, T, C)
# --8<-- [end:layernorm]


# --8<-- [start:rmsnorm]
class RMSNorm:
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis: LayerNorm without centring and without a
    bias (the Llama family's normalisation)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        self.eps = eps
        self.weight = Tensor.ones(dim)                            # (C,)

    def __call__(self, x: Tensor) -> Tensor:
        ms = (x * x).mean(axis=-1, keepdim=True)                  # (B, T, 1)
        # stored: it feeds two or three matmuls (q, k, v's or the gate's and the up projection's), forward and
        # backward, that would each recompute it per output column (the math is unchanged)
        return (x * (ms + self.eps).rsqrt() * self.weight).contiguous()   # (B, T, C)
# --8<-- [end:rmsnorm]


# --8<-- [start:make_norm]
def make_norm(dim: int, eps: float, norm: str = "layernorm", bias: bool = True):
    """The normalisation GPTConfig.norm names: LayerNorm (with a bias unless ``bias=False``) or RMSNorm."""
    return RMSNorm(dim, eps) if norm == "rmsnorm" else LayerNorm(dim, eps, bias)
# --8<-- [end:make_norm]
