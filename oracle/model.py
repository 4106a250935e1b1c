"""The whole GPT: embeddings, blocks, final LayerNorm, output head; forward and backward."""
import numpy as np

from .block import block_backward, block_forward
from .embedding import embedding_backward, embedding_forward
from .layernorm import norm_backward, norm_forward
from .params import family, sub_params, variant, with_prefix


# --8<-- [start:model]
def block_options(cfg):
    """block_forward's keyword arguments for ``cfg``: its activation and Llama-family choices."""
    fam = family(cfg)
    rope = (fam["rope_theta"], fam["rope_style"]) if fam["positions"] == "rope" else None
    return dict(activation=variant(cfg)[0], norm=fam["norm"], gated_mlp=fam["gated_mlp"],
                n_kv_heads=fam["n_kv_heads"], rope=rope)


def gpt_forward(idx, params, cfg):
    """idx (B, T) integers -> logits (B, T, V) and the cache gpt_backward needs. Biases take part
    where ``params`` has them (``cfg.bias=False``: none); the rest of the architecture is ``cfg``'s."""
    idx = np.asarray(idx)
    options, fam = block_options(cfg), family(cfg)
    emb_keys = ("wte.weight", "wpe.weight") if fam["positions"] == "learned" else ("wte.weight",)
    x, emb = embedding_forward(idx, {k: params[k] for k in emb_keys})                      # F1: (B, T, C)
    blocks = []
    for i in range(cfg.n_layers):
        x, c = block_forward(x, sub_params(params, f"h.{i}."), cfg.n_heads, cfg.layer_norm_eps, **options)  # F2
        blocks.append(c)
    xf, ln_f = norm_forward(x, sub_params(params, "ln_f."), cfg.layer_norm_eps, fam["norm"])  # F3: (B, T, C)
    head_key = "wte.weight" if cfg.tie_embeddings else "lm_head.weight"
    head = params[head_key]                                                                 # (V, C)
    logits = xf @ head.T                                                                    # F4: (B, T, V)
    return logits, {"emb": emb, "blocks": blocks, "ln_f": ln_f, "xf": xf, "head": head,
                    "head_key": head_key, "keys": list(params)}


def gpt_backward(dlogits, cache):
    """dlogits (B, T, V) -> a gradient for every parameter key, shaped like the parameter. Consumes
    ``cache`` (the blocks' activations are released as the gradient passes them, as autograd frees what
    it saved), so a second backward needs a second forward."""
    if cache.get("used"):
        raise ValueError("gpt_backward has already used this cache (it frees the activations as it goes): "
                         "run gpt_forward again for a second backward")
    cache["used"] = True
    xf, head, head_key = cache["xf"], cache["head"], cache["head_key"]
    V, C = head.shape
    dxf = dlogits @ head                                               # from F4, w.r.t. xf
    dhead = dlogits.reshape(-1, V).T @ xf.reshape(-1, C)               # from F4, w.r.t. the head
    dx, dln_f = norm_backward(dxf, cache["ln_f"])                      # from F3
    grads = with_prefix("ln_f.", dln_f)
    blocks = cache["blocks"]                   # used up: each block's activations go once its gradient is taken
    for i in reversed(range(len(blocks))):
        dx, dblock = block_backward(dx, blocks.pop())                  # from F2
        grads.update(with_prefix(f"h.{i}.", dblock))
    _, demb = embedding_backward(dx, cache["emb"])                     # from F1
    grads.update(demb)
    dhead += grads.get(head_key, 0)                                    # tied: wte gets both its uses
    grads[head_key] = dhead
    return {k: grads[k] for k in cache["keys"]}
# --8<-- [end:model]
