"""Linear layers: tinygrad's ``nn.Linear`` (weight (out, in), bias (out,)), y = x W^T + b, and how the gradient of
a layer's output is stored for the matmul that reads it."""
from tinygrad import Tensor

# A row of floats added to a stored gradient's rows (64 bytes: one cache line, so rows stay aligned).
ROW_PAD = 16


# --8<-- [start:stored_gradient]
def stored_gradient(y: Tensor) -> Tensor:
    """``y`` unchanged, its gradient stored (not recomputed inside every matmul that reads it) in rows of
    ``ROW_PAD`` more floats than it has. The weight gradient dy^T x reads a few columns of dy down all B*T rows:
    rows 2^k floats apart (512 or 1024 wide) fall into the same few cache sets, which evict each other long
    before the cache is full; padded rows spread over every set. The padding is never read."""
    n = y.shape[-1]
    return y.pad(((0, 0),) * (y.ndim - 1) + ((0, ROW_PAD),)).contiguous_backward()[..., :n]
# --8<-- [end:stored_gradient]


# --8<-- [start:stored_padded]
def stored_padded(h: Tensor) -> Tensor:
    """``h`` stored in rows of ``ROW_PAD`` more floats than it has, and its gradient stored as it is: the weight
    gradient dy^T h of the layer that reads h walks column panels of h down all B*T rows, as above."""
    n = h.shape[-1]
    return h.pad(((0, 0),) * (h.ndim - 1) + ((0, ROW_PAD),)).contiguous()[..., :n].contiguous_backward()
# --8<-- [end:stored_padded]
