"""Token and learned positional embeddings: x = wte[idx] + wpe[0:T]."""
from tinygrad import Tensor, nn


# --8<-- [start:embedding]
class TokenEmbedding(nn.Embedding):
    """wte: one learned C-vector per vocabulary entry; also the output head when embeddings are tied."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__(vocab_size, d_model)           # weight: (V, C)


class LearnedPositionalEmbeddings:
    """wpe: one learned C-vector per position, added to the token embeddings (GPT-2 has no sinusoids)."""

    def __init__(self, context_length: int, d_model: int):
        self.weight = Tensor.glorot_uniform(context_length, d_model)   # (context_length, C)

    def __call__(self, tok: Tensor) -> Tensor:
        T = tok.shape[1]
        return tok + self.weight[:T]                    # (B, T, C) + (T, C) -> (B, T, C)
# --8<-- [end:embedding]
