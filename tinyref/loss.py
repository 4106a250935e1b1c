"""Next-token cross-entropy: the mean over all B*T positions of -log softmax(logits)[target]."""
from tinygrad import Tensor


# --8<-- [start:loss]
def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """logits (B, T, V), targets (B, T) integer -> scalar mean loss."""
    B, T, V = logits.shape
    logp = logits.reshape(B * T, V).log_softmax(-1)                     # (B*T, V)
    picked = logp.gather(-1, targets.reshape(B * T, 1)).reshape(B * T)  # (B*T,): log p(target)
    return -picked.mean()
# --8<-- [end:loss]
