"""Using a trained model: sampling with a KV cache, evaluation (loss, perplexity), attention maps."""
