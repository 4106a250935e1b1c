"""tinyref: a GPT-2 style transformer (and the Llama family: RoPE, RMSNorm, gated MLPs, GQA) in tinygrad,
checked against a NumPy oracle."""
from .attention import MultiHeadSelfAttention, causal_mask
from .block import TransformerDecoderBlock
from .config import GPTConfig
from .embedding import LearnedPositionalEmbeddings, TokenEmbedding
from .errors import CheckpointError, ConfigError, DataError, DeviceError, TinyrefError, UsageError
from .generation.evaluation import evaluate
from .feedforward import PositionWiseFeedForward
from .generation.sampling import generate
from .layernorm import LayerNorm, RMSNorm
from .loss import cross_entropy
from .model import GPTStyleTransformer, check_token_ids
from .rope import RotaryPositionalEmbedding
from .generation.attention_maps import attention_maps

__version__ = "0.1.0"
