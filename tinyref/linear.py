"""Linear layers: tinygrad's ``nn.Linear`` (weight (out, in), bias (out,)), y = x W^T + b, computed as matmuls whose
operand streams rows, and how the gradient of a layer's output is stored for the matmul that reads it."""
from math import prod

from tinygrad import Tensor, nn

# A row of floats added to a stored array's rows (64 bytes: one cache line, so rows stay aligned).
ROW_PAD = 16
# Rows narrower than this keep their width: at 128 floats a weight gradient ran as fast unpadded (50 GFLOP/s either
# way), at 512 it went from 50 to 88 GFLOP/s padded, and the padding costs the demo's first step compile time.
PAD_FROM = 256
# Rows of x from which x W^T reads a transposed copy of W. Fewer rows, as in generation's forward passes over a
# window of at most context_length tokens (one token when decoding), read W as it is: copying W^T each pass costs
# more than streaming saves (M's 64-token window, tinyref.runtime.kernelopts' block of dot products: 290 instead of
# 253 tokens/s). A training step has B x T rows (128 at the demo's shape).
STREAM_FROM = 128


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


# --8<-- [start:product]
def product(a: Tensor, b: Tensor, b_t: Tensor) -> Tensor:
    """a @ b for a (..., M, K) and b (..., K, N), given b_t, the same matrix stored transposed (..., N, K), so that each
    of the three products streams rows of an operand along its output's contiguous axis (the CPU's register tile,
    tinyref.runtime.kernelopts: about 100 GFLOP/s a core, where a product of two operands both contiguous along the
    sum runs as dot products at 35-55). The value and b's gradient a^T dy come from a.detach() @ b; a's gradient
    dy b^T reads b_t as stored, through z - z.detach() for z = a b_t^T with b_t detached: a zero, whose gradient is
    z's, and which tinygrad folds away before anything computes it."""
    through_a = a @ b_t.detach().transpose(-2, -1)        # (..., M, N): a's gradient only
    return a.detach() @ b + (through_a - through_a.detach())
# --8<-- [end:product]


# --8<-- [start:linear]
def linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """x W^T + b for W (out, in): a ``product`` with W^T, copied once a step (in x out floats, against rows x in x
    out multiply-adds), and W itself for x's gradient dy W; W's gradient flows through the copy, (x^T dy)^T."""
    if prod(x.shape[:-1]) < STREAM_FROM:
        y = x @ w.T                                           # (..., in) @ (in, out): a short window, nothing copied
    else:
        y = product(x, w.T.contiguous(), w)                   # (..., out)
    return y if b is None else y + b


class Linear(nn.Linear):
    """tinygrad's nn.Linear (the same parameters, names and initialisation) computed by ``linear``."""

    def __call__(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
# --8<-- [end:linear]
