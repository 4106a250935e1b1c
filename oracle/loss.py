"""Mean next-token cross-entropy over all B*T positions, forward and backward."""
import numpy as np


# --8<-- [start:loss]
def cross_entropy_forward(logits, targets, out=None):
    """``out=logits`` works over the logits (a caller done with them saves a (B*T, V) array)."""
    B, T, V = logits.shape
    z = logits.reshape(B * T, V)
    z = np.subtract(z, z.max(-1, keepdims=True), out=None if out is None else out.reshape(B * T, V))  # F1: stable: the row max does not change softmax
    t = np.asarray(targets).reshape(B * T)
    z_target = z[np.arange(B * T), t]                        # (B*T,): the targets' shifted logits, for F5
    probs = np.exp(z, out=z)                                 # F2: in place (z is this function's own array, not needed again)
    total = probs.sum(-1, keepdims=True)                     # F3: (B*T, 1)
    probs /= total                                           # F4: softmax, (B*T, V)
    loss = (np.log(total[:, 0]) - z_target).mean()           # F5: mean of -log p(target) = log(total) - z[target]
    return float(loss), (probs, t, logits.shape)


def cross_entropy_backward(cache, dloss=1.0, in_place=False):
    """``in_place=True`` writes the gradient over the cached probabilities (a caller done with the cache saves an array)."""
    probs, t, shape = cache
    N = probs.shape[0]
    dz = np.multiply(probs, dloss / N, out=probs if in_place else None)  # from F1-F5: d(-log softmax)/dz = softmax - onehot, and the mean divides by B*T ...
    dz[np.arange(N), t] -= dloss / N                         # ... the onehot part
    return dz.reshape(shape)
# --8<-- [end:loss]
