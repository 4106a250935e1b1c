"""A pure-NumPy forward/backward reference for tinyref's GPT (no tinygrad, no tinyref).

Every component has ``<name>_forward(x, p, ...) -> (out, cache)`` and
``<name>_backward(dout, cache) -> (dx, dp)``, where ``p`` holds the component's parameters under
their names relative to the component (e.g. ``c_attn.weight``). It computes in the dtype it is
given; tests use float64.
"""
from .attention import attention_backward, attention_forward, softmax_backward, softmax_forward
from .block import block_backward, block_forward
from .embedding import embedding_backward, embedding_forward
from .feedforward import (ACTIVATIONS, activation_backward, activation_forward, feedforward_backward,
                          feedforward_forward, gated_feedforward_backward, gated_feedforward_forward, gelu_backward,
                          gelu_erf_backward, gelu_erf_forward, gelu_forward, silu_backward, silu_forward)
from .layernorm import (NORMS, layernorm_backward, layernorm_forward, norm_backward, norm_forward, rmsnorm_backward,
                        rmsnorm_forward)
from .linear import linear_backward, linear_forward
from .loss import cross_entropy_backward, cross_entropy_forward
from .model import block_options, gpt_backward, gpt_forward
from .optim import accumulate_gradients, adamw_step, clip_grad_norm, lr_at
from .params import LLAMA_FIELDS, family, init_params, param_shapes, sub_params, variant, with_prefix
from .rope import rope_angles, rope_backward, rope_forward, rope_pairs
from .kvcache import decode_step, empty_cache, incremental_logits, recomputed_logits
