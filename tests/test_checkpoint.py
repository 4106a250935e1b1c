"""Checkpoints: exact round trips, one-line errors for every kind of damage, and crash safety."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import oracle
from helpers import UNTIED, as_namespace, load_params
from tinyref import GPTConfig, GPTStyleTransformer
from tinyref.train.checkpoint import (MODEL_FILE, OPTIMIZER_FILE, load_checkpoint, load_config, optimizer_arrays,
                                save_checkpoint)
from tinyref.errors import CheckpointError
from tinyref.optim import make_optimizer
from tinyref.train.tokenizer import train_tokenizer


def weights(model) -> dict:
    return {k: t.numpy() for k, t in get_state_dict(model).items()}


def untied_model(seed: int) -> GPTStyleTransformer:
    model = GPTStyleTransformer(UNTIED)
    load_params(model, oracle.init_params(as_namespace(UNTIED), np.random.default_rng(seed)))
    return model


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A checkpoint with every file: model, two-group optimizer with non-zero moments, tokenizer, state."""
    model = untied_model(0)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    rng = np.random.default_rng(1)
    for o in opt.optimizers:
        for t in (*o.m, *o.v, o.b1_t, o.b2_t):
            t.assign(Tensor(rng.random(t.shape).astype(np.float32), device=t.device))
    Tensor.realize(*[t for o in opt.optimizers for t in (*o.m, *o.v, o.b1_t, o.b2_t)])
    tok = train_tokenizer("char", ["abcdefg"])
    path = save_checkpoint(tmp_path_factory.mktemp("original") / "ckpt", model, opt, tok,
                           {"step": 7, "rng": {"state": 2**70}})
    return path, model, opt, tok


@pytest.fixture
def saved(original, tmp_path):
    """A fresh copy of the original checkpoint, free to damage."""
    path, *rest = original
    shutil.copytree(path, tmp_path / "ckpt")
    return (tmp_path / "ckpt", *rest)


def test_round_trip_is_exact(saved):
    path, model, opt, tok = saved
    ckpt = load_checkpoint(path)
    assert ckpt.config == UNTIED and ckpt.state == {"step": 7, "rng": {"state": 2**70}}
    assert ckpt.tokenizer.symbols == tok.symbols
    before, after = weights(model), weights(ckpt.model)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    fresh = make_optimizer(ckpt.model, lr=1e-3, weight_decay=0.1)
    ckpt.restore_optimizer(fresh)
    want, got = optimizer_arrays(opt, model), optimizer_arrays(fresh, ckpt.model)
    assert set(got) == set(want) and len(want) == 2 * len(before) + 4
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_save_replaces_an_existing_checkpoint_and_leaves_no_temporaries(saved):
    path, model, opt, tok = saved
    save_checkpoint(path, model, None, None, {"step": 8})
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "state.json"]
    assert load_checkpoint(path).state == {"step": 8}


def corrupt_header_shape(path):
    raw = (path / MODEL_FILE).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["wte.weight"]["shape"] = [8, 7]     # bytes still fit: only the shape check can see it
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    (path / MODEL_FILE).write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n:])


def header_offsets_not_a_list(path):
    """Found by tests/test_fuzz.py: a string where [start, end] belongs crashed the unpacking."""
    raw = (path / MODEL_FILE).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["wpe.weight"]["data_offsets"] = "0"
    blob = json.dumps(header).encode()
    (path / MODEL_FILE).write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n:])


DAMAGE = {
    "offsets not a list": header_offsets_not_a_list,
    "truncated weights": lambda p: (p / MODEL_FILE).write_bytes((p / MODEL_FILE).read_bytes()[:-10]),
    "huge header length": lambda p: (p / MODEL_FILE).write_bytes((2**62).to_bytes(8, "little") + b"{}"),
    "tiny file": lambda p: (p / MODEL_FILE).write_bytes(b"abc"),
    "header not json": lambda p: (p / MODEL_FILE).write_bytes((8).to_bytes(8, "little") + b"not json" + b"0" * 64),
    "wrong shape": corrupt_header_shape,
    "weights missing": lambda p: (p / MODEL_FILE).unlink(),
    "config missing": lambda p: (p / "config.json").unlink(),
    "config garbage": lambda p: (p / "config.json").write_text("{oops"),
    "config of another model": lambda p: (p / "config.json").write_text(json.dumps({**UNTIED.to_dict(), "d_model": 16})),
    "config with bad value": lambda p: (p / "config.json").write_text(json.dumps({**UNTIED.to_dict(), "n_heads": 3})),
    "state missing": lambda p: (p / "state.json").unlink(),
    "state not an object": lambda p: (p / "state.json").write_text("[1]"),
    "tokenizer garbage": lambda p: (p / "tokenizer.json").write_text("\x00\x01"),
    "tokenizer larger than the model": lambda p: train_tokenizer("char", ["abcdefghij"]).save(p / "tokenizer.json"),
    "optimizer truncated": lambda p: (p / OPTIMIZER_FILE).write_bytes((p / OPTIMIZER_FILE).read_bytes()[:100]),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoints_are_one_line_checkpoint_errors(saved, damage):
    path = saved[0]
    DAMAGE[damage](path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_config(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "such" / "dir", GPTStyleTransformer(UNTIED))


def test_restoring_into_an_optimizer_with_other_groups_is_refused(saved):
    ckpt = load_checkpoint(saved[0])
    with pytest.raises(CheckpointError, match="weight decay"):
        ckpt.restore_optimizer(make_optimizer(ckpt.model, lr=1e-3))


def test_a_failing_save_leaves_the_old_checkpoint_untouched(saved, monkeypatch):
    path, model, opt, tok = saved
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    import tinyref.train.checkpoint as ck
    real = ck.write_safetensors

    def fail_on_optimizer(file, arrays):
        if file.name == OPTIMIZER_FILE:
            raise OSError(28, "No space left on device")
        real(file, arrays)

    monkeypatch.setattr(ck, "write_safetensors", fail_on_optimizer)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, model, opt, tok, {"step": 99})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


# The writer saves checkpoint i with every weight equal to i and state {"step": i}, as fast as it can.
WRITER = """
import sys, numpy as np
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict
from tinyref import GPTStyleTransformer, GPTConfig
from tinyref.train.checkpoint import save_checkpoint
from tinyref.runtime.devices import select_device
select_device(None)
model = GPTStyleTransformer(GPTConfig(**{cfg}))
for i in range(1, 10**6):
    for t in get_state_dict(model).values():
        t.assign(Tensor(np.full(t.shape, i, np.float32), device=t.device))
    save_checkpoint(sys.argv[1], model, None, None, {{"step": i}})
    print(i, flush=True)
"""


def test_killing_the_writer_never_leaves_a_half_checkpoint(tmp_path):
    """SIGKILL a process that keeps overwriting one checkpoint, at several moments: the checkpoint
    left behind always loads, and all its files come from the same save."""
    path = tmp_path / "ckpt"
    script = WRITER.format(cfg=UNTIED.to_dict())
    rng = np.random.default_rng(0)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert first.strip().isdigit(), f"writer did not start: {first!r}"
            time.sleep(float(rng.uniform(0.0, 0.3)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        ckpt = load_checkpoint(path)
        step = ckpt.state["step"]
        for k, w in weights(ckpt.model).items():
            assert (w == step).all(), f"attempt {attempt}: {k} holds {w.flat[0]} but state.json says step {step}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt"]
    save_checkpoint(path, ckpt.model)          # the next save clears what killed writers left behind
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], leftovers


def test_a_config_json_without_the_variant_fields_loads_as_gpt2(saved):
    """Checkpoints written before GPTConfig had activation, bias and the Llama-family fields: GPT-2, same weights."""
    path, model, _, _ = saved
    config = json.loads((path / "config.json").read_text())
    old = ("activation", "bias", "positions", "rope_theta", "rope_style", "norm", "gated_mlp", "n_kv_heads")
    assert [config.pop(k) for k in old] == ["gelu_tanh", True, "learned", 10000.0, "half", "layernorm", False, 1]
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(path)
    assert (loaded.model.config.activation, loaded.model.config.bias) == ("gelu_tanh", True)
    assert load_config(path) == UNTIED
    for k, v in weights(model).items():
        np.testing.assert_array_equal(weights(loaded.model)[k], v)


def test_a_llama_checkpoint_round_trips_with_its_optimizer(tmp_path):
    """Every Llama-family field in config.json, and the keys that come with them (no wpe, c_gate, fewer kv
    rows in c_attn, no biases, lm_head), written and read back exactly, AdamW moments included."""
    cfg = GPTConfig.llama(UNTIED.vocab_size, UNTIED.context_length, UNTIED.d_model, 2, UNTIED.n_layers, n_kv_heads=1,
                          d_ff=UNTIED.d_ff, rope_theta=500.0, rope_style="interleaved")
    model = GPTStyleTransformer(cfg)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    for o in opt.optimizers:
        for t in (*o.m, *o.v):
            t.assign(Tensor(np.random.default_rng(t.numel()).random(t.shape).astype(np.float32), device=t.device))
    path = save_checkpoint(tmp_path / "ckpt", model, opt, state={"step": 3})
    assert json.loads((path / "config.json").read_text()) == cfg.to_dict()
    ckpt = load_checkpoint(path)
    assert ckpt.config == cfg and set(weights(ckpt.model)) == set(oracle.param_shapes(cfg))
    assert "wpe.weight" not in weights(ckpt.model) and weights(ckpt.model)["h.0.attn.c_attn.weight"].shape == (16, 8)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(weights(ckpt.model)[k], v, err_msg=k)
    fresh = make_optimizer(ckpt.model, lr=1e-3, weight_decay=0.1)
    ckpt.restore_optimizer(fresh)
    want, got = optimizer_arrays(opt, model), optimizer_arrays(fresh, ckpt.model)
    assert "m.h.0.mlp.c_gate.weight" in want and set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
