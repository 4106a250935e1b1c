"""The whole GPT: embeddings, blocks, final LayerNorm, output head; forward and backward."""
import numpy as np

from .block import block_backward, block_forward
from .embedding import embedding_backward, embedding_forward
from .layernorm import layernorm_backward, layernorm_forward
from .params import sub_params, variant, with_prefix


# --8<-- [start:model]
def gpt_forward(idx, params, cfg):
    """idx (B, T) integers -> logits (B, T, V) and the cache gpt_backward needs. Biases take part
    where ``params`` has them (``cfg.bias=False``: none); the MLP's GELU is ``cfg.activation``'s."""
    idx = np.asarray(idx)
    activation, _ = variant(cfg)
    x, emb = embedding_forward(idx, {k: params[k] for k in ("wte.weight", "wpe.weight")})   # F1: (B, T, C)
    blocks = []
    for i in range(cfg.n_layers):
        x, c = block_forward(x, sub_params(params, f"h.{i}."), cfg.n_heads, cfg.layer_norm_eps, activation)  # F2
        blocks.append(c)
    xf, ln_f = layernorm_forward(x, sub_params(params, "ln_f."), cfg.layer_norm_eps)        # F3: (B, T, C)
    head_key = "wte.weight" if cfg.tie_embeddings else "lm_head.weight"
    head = params[head_key]                                                                 # (V, C)
    logits = xf @ head.T                                                                    # F4: (B, T, V)
    return logits, {"emb": emb, "blocks": blocks, "ln_f": ln_f, "xf": xf, "head": head,
                    "head_key": head_key, "keys": list(params)}


def gpt_backward(dlogits, cache):
    """dlogits (B, T, V) -> a gradient for every parameter key, shaped like the parameter."""
    xf, head, head_key = cache["xf"], cache["head"], cache["head_key"]
    V, C = head.shape
    dxf = dlogits @ head                                               # from F4, w.r.t. xf
    dhead = dlogits.reshape(-1, V).T @ xf.reshape(-1, C)               # from F4, w.r.t. the head
    dx, dln_f = layernorm_backward(dxf, cache["ln_f"])                 # from F3
    grads = with_prefix("ln_f.", dln_f)
    for i in reversed(range(len(cache["blocks"]))):
        dx, dblock = block_backward(dx, cache["blocks"][i])            # from F2
        grads.update(with_prefix(f"h.{i}.", dblock))
    _, demb = embedding_backward(dx, cache["emb"])                     # from F1
    grads.update(demb)
    dhead += grads.get(head_key, 0)                                    # tied: wte gets both its uses
    grads[head_key] = dhead
    return {k: grads[k] for k in cache["keys"]}
# --8<-- [end:model]
