"""Training: the jitted step, the seed's demo and the real-text loop with its data, tokenizers and checkpoints."""
from .demo import train_next_word_predictor
from .loop import TrainResult, train
from .options import TrainOptions
from .step import TrainStep, jit_training_step, make_train_step

__all__ = ["TrainOptions", "TrainResult", "TrainStep", "jit_training_step", "make_train_step", "train",
           "train_next_word_predictor"]
