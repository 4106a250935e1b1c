"""Linear layers: tinygrad's ``nn.Linear`` (weight (out, in), bias (out,)), y = x W^T + b, and how the gradient of
a layer's output is stored for the matmul that reads it."""
from tinygrad import Tensor

# A row of floats added to a stored array's rows (64 bytes: one cache line, so rows stay aligned).
ROW_PAD = 16
# Rows narrower than this keep their width: at 128 floats a weight gradient ran as fast unpadded (50 GFLOP/s either
# way), at 512 it went from 50 to 88 GFLOP/s padded, and the padding costs the demo's first step compile time.
PAD_FROM = 256


def padded(t: Tensor) -> Tensor:
    """``t`` with ROW_PAD zeros after each row (its last axis)."""
    return t.pad(((0, 0),) * (t.ndim - 1) + ((0, ROW_PAD),))


# --8<-- [start:stored_gradient]
def stored_gradient(y: Tensor) -> Tensor:
    """``y`` unchanged, its gradient stored (not recomputed inside every matmul that reads it), in rows of ``ROW_PAD``
    more floats than it has when they are PAD_FROM or more wide. The weight gradient dy^T x reads a few columns of dy
    down all B*T rows: rows 2^k floats apart (512 or 1024 wide) fall into the same few cache sets, which evict each
    other long before the cache is full; padded rows spread over every set. The padding is never read."""
    n = y.shape[-1]
    return padded(y).contiguous_backward()[..., :n] if n >= PAD_FROM else y.contiguous_backward()
# --8<-- [end:stored_gradient]


# --8<-- [start:stored_padded]
def stored_padded(h: Tensor) -> Tensor:
    """``h`` stored, in rows of ``ROW_PAD`` more floats than it has when they are PAD_FROM or more wide, and its
    gradient stored as it is: the weight gradient dy^T h of the layer that reads h walks column panels of h down all
    B*T rows, as above."""
    n = h.shape[-1]
    return (padded(h).contiguous()[..., :n] if n >= PAD_FROM else h.contiguous()).contiguous_backward()
# --8<-- [end:stored_padded]
