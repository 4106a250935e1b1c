"""The seed demo, `tinyref train` with no arguments: its educational output, a falling loss, determinism."""
import math

import pytest

import oracle
from tinyref import GPTConfig
from tinyref.train.data import synthetic_batches
from tinyref.train import train_next_word_predictor


@pytest.fixture(scope="module")
def demo():
    """The demo at its defaults, run once for the module (its kernels compile once per worker)."""
    lines = []
    _, losses = train_next_word_predictor(log=lines.append)
    return lines, losses


def test_the_demo_prints_the_seed_banner_and_its_settings(demo):
    lines, _ = demo
    text = "\n".join(lines)
    for expected in ("Vocabulary size: 52", "Embedding dimension: 32", "Number of layers: 2", "Number of heads: 4",
                     "Input shape: (8, 16)", "Target shape: (8, 16)", "Device: ", "Warm-up (first step"):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    scalars = sum(math.prod(s) for s in oracle.param_shapes(GPTConfig()).values())   # counted from the contract
    assert f"Total parameters to learn: {scalars:,} (" in text
    epochs = [l for l in lines if l.startswith("Epoch ")]
    assert [int(l.split()[1]) for l in epochs] == [1, 5, 10, 15, 20, 25, 30]
    assert lines[-2].startswith("Final loss: ")


def test_the_loss_falls_clearly(demo):
    _, losses = demo
    assert len(losses) == 30 and all(math.isfinite(l) for l in losses)
    assert losses[0] < math.log(52) + 0.5, "the first epoch should start near a uniform guess"
    assert losses[-1] < 0.85 * losses[0], f"the loss did not fall enough: {losses[0]:.4f} -> {losses[-1]:.4f}"


def test_same_seed_same_losses_other_seed_other_losses(demo):
    _, losses = demo
    _, again = train_next_word_predictor(epochs=5, log=lambda *_: None)
    _, other = train_next_word_predictor(epochs=5, seed=1, log=lambda *_: None)
    assert again == losses[:5]
    assert other != again


def test_the_synthetic_data_is_learnable_arithmetic():
    """Every target is the next term of its progression: a model that knows the stride can predict it."""
    for x, y in synthetic_batches(2, 4, 16, 52, seed=3):
        assert (y[:, :-1] == x[:, 1:]).all()
        stride = (x[:, 1:2] - x[:, :1]) % 52
        assert ((x[:, 1:] - x[:, :-1]) % 52 == stride).all() and set(stride.ravel()) <= {1, 2, 3}


def test_the_llama_preset_trains_in_the_demo(capsys):
    """`tinyref train --model llama` at the LLAMA sizes: the preset and the --n-kv-heads flag build that model,
    the output names its architecture, and the loss falls."""
    from helpers import LLAMA, cli
    status, out, err = cli(capsys, "train", "--model", "llama", "--n-kv-heads", 2, "--vocab-size", 11,
                           "--context-length", 8, "--d-model", 16, "--d-ff", 24, "--batch-size", 2, "--epochs", 5)
    assert status == 0, err
    assert "Architecture (llama preset and flags): positions rope (half, theta 10000), rmsnorm, silu gated MLP, " \
           "2 kv heads for 4 query heads, untied head, no biases" in out
    scalars = sum(math.prod(s) for s in oracle.param_shapes(LLAMA).values())
    assert f"Total parameters to learn: {scalars:,} (" in out
    losses = [float(l.split()[-1]) for l in out.splitlines() if l.startswith("Epoch ")]
    assert len(losses) == 2 and losses[-1] < 0.9 * losses[0], out


def test_the_gpt2_demo_names_no_architecture(demo):
    lines, _ = demo
    assert not [l for l in lines if l.startswith("Architecture")]
