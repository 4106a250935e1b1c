"""Token plus learned positional embeddings, forward and backward."""
import numpy as np


# --8<-- [start:embedding]
def embedding_forward(idx, p):
    wte, wpe = p["wte.weight"], p["wpe.weight"]  # (V, C), (context_length, C)
    T = idx.shape[1]
    out = wte[idx] + wpe[:T]                     # F1: (B, T, C) + (T, C)
    return out, (idx, wte.shape, wpe.shape)


def embedding_backward(dout, cache):
    idx, wte_shape, wpe_shape = cache
    dwte = np.zeros(wte_shape, dtype=dout.dtype)
    np.add.at(dwte, idx, dout)                   # from F1: each token row collects the gradient of every place it was used
    dwpe = np.zeros(wpe_shape, dtype=dout.dtype)
    dwpe[: idx.shape[1]] = dout.sum(0)           # from F1: position rows past T get zero
    return None, {"wte.weight": dwte, "wpe.weight": dwpe}   # no gradient for integer ids
# --8<-- [end:embedding]
