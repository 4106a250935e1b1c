"""Affine map y = x W^T + b with W in tinygrad's (out, in) layout."""


# --8<-- [start:linear]
def linear_forward(x, p):
    w, b = p["weight"], p.get("bias")     # (out, in), (out,) or None
    out = x @ w.T                         # F1: (..., in) @ (in, out) -> (..., out)
    if b is not None:
        out += b                          # F2 (in place: out is this function's own array)
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    x, w, has_bias = cache
    dx = dout @ w                                                      # from F1: d(x w^T)/dx
    dp = {"weight": dout.reshape(-1, dout.shape[-1]).T @ x.reshape(-1, x.shape[-1])}  # from F1: sum over positions of dout^T x
    if has_bias:
        dp["bias"] = dout.reshape(-1, dout.shape[-1]).sum(0)          # from F2
    return dx, dp
# --8<-- [end:linear]
