"""LayerNorm: normalise each position's features to zero mean and unit variance, then scale and shift."""
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
