"""Token embeddings plus (for learned positions) positional embeddings, forward and backward."""
import numpy as np


# --8<-- [start:embedding]
def embedding_forward(idx, p):
    """``p``: ``wte.weight`` and, for learned positions, ``wpe.weight`` (rotary models have no wpe)."""
    wte, wpe = p["wte.weight"], p.get("wpe.weight")  # (V, C), (context_length, C) or None
    T = idx.shape[1]
    out = wte[idx]                               # F1: (B, T, C)
    if wpe is not None:
        out += wpe[:T]                           # F2: + (T, C)
    return out, (idx, wte.shape, None if wpe is None else wpe.shape)


def embedding_backward(dout, cache):
    idx, wte_shape, wpe_shape = cache
    dwte = np.zeros(wte_shape, dtype=dout.dtype)
    np.add.at(dwte, idx, dout)                   # from F1: each token row collects the gradient of every place it was used
    grads = {"wte.weight": dwte}
    if wpe_shape is not None:
        dwpe = np.zeros(wpe_shape, dtype=dout.dtype)
        dwpe[: idx.shape[1]] = dout.sum(0)       # from F2: position rows past T get zero
        grads["wpe.weight"] = dwpe
    return None, grads                           # no gradient for integer ids
# --8<-- [end:embedding]
