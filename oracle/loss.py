"""Mean next-token cross-entropy over all B*T positions, forward and backward."""
import numpy as np


# --8<-- [start:loss]
def cross_entropy_forward(logits, targets):
    B, T, V = logits.shape
    z = logits.reshape(B * T, V)
    z = z - z.max(-1, keepdims=True)                         # F1: stable: the row max does not change softmax
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))      # F2: log softmax, (B*T, V)
    t = np.asarray(targets).reshape(B * T)
    loss = -logp[np.arange(B * T), t].mean()                 # F3: mean of -log p(target)
    return float(loss), (np.exp(logp), t, logits.shape)


def cross_entropy_backward(cache, dloss=1.0):
    probs, t, shape = cache
    N = probs.shape[0]
    dz = probs.copy()                                        # from F2: d(-log softmax)/dz = softmax - onehot ...
    dz[np.arange(N), t] -= 1.0                               # ... the onehot part
    return (dz * (dloss / N)).reshape(shape)                 # from F3: the mean divides by B*T
# --8<-- [end:loss]
