"""One pre-norm decoder block (LayerNorm or RMSNorm before each sub-layer), forward and backward."""
from .attention import attention_backward, attention_forward
from .feedforward import feedforward_backward, feedforward_forward
from .layernorm import norm_backward, norm_forward
from .params import sub_params, with_prefix


# --8<-- [start:block]
def block_forward(x, p, n_heads, eps=1e-5, activation="gelu_tanh", norm="layernorm", gated_mlp=False,
                  n_kv_heads=None, rope=None):
    a, ln_1 = norm_forward(x, sub_params(p, "ln_1."), eps, norm)                             # F1
    att, attn = attention_forward(a, sub_params(p, "attn."), n_heads, n_kv_heads, rope)     # F2
    x1 = x + att                                                     # F3: residual
    m, ln_2 = norm_forward(x1, sub_params(p, "ln_2."), eps, norm)                            # F4
    f, mlp = feedforward_forward(m, sub_params(p, "mlp."), activation, gated_mlp)           # F5
    out = x1 + f                                                     # F6: residual
    return out, (ln_1, attn, ln_2, mlp)


def block_backward(dout, cache):
    ln_1, attn, ln_2, mlp = cache
    dx1 = dout                                   # from F6: the residual passes the gradient straight through ...
    dm, dmlp = feedforward_backward(dout, mlp)   # from F5
    dx1_ln, dln_2 = norm_backward(dm, ln_2)      # from F4
    dx1 = dx1 + dx1_ln                           # ... and adds the branch's gradient (F6 + F4)
    dx = dx1                                     # from F3: the residual again
    da, dattn = attention_backward(dx1, attn)    # from F2
    dx_ln, dln_1 = norm_backward(da, ln_1)       # from F1
    dx = dx + dx_ln                              # F3 + F1
    dp = {**with_prefix("ln_1.", dln_1), **with_prefix("attn.", dattn),
          **with_prefix("ln_2.", dln_2), **with_prefix("mlp.", dmlp)}
    return dx, dp
# --8<-- [end:block]
