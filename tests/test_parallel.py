"""Data parallel training (tinyref.runtime.parallel): the TIED model's batch sharded over two virtual devices of
the default backend gives the same gradients and the same weights after jitted AdamW steps as one device.

The two runs add their numbers in different orders (each device reduces its half of the batch, then
the halves are summed), so they agree to float32 rounding, not bit for bit: the tolerances are
tinyref/verify/tolerances.py's float32 ones. Both runs are also held against the float64 oracle.
"""
import numpy as np
import pytest
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

from helpers import (ADAMW_DECAY, ADAMW_HYPER, TIED, adamw_case, adamw_mismatches, as_namespace, assert_no_mismatch,
                     load_params, oracle_forward_backward, tinyref_adamw, trained_weight_mismatches)
from tinyref import GPTStyleTransformer, MultiHeadSelfAttention, cross_entropy
from tinyref.runtime.devices import current_device
from tinyref.errors import UsageError
from tinyref.optim import make_optimizer
from tinyref.runtime.parallel import replicate, shard_batch, virtual_devices
from tinyref.verify.tolerances import FLOAT32, FLOAT32_GRAD, compare
from tinyref.train import make_train_step

# under pytest -n, this module's tests run on one worker (conftest.xdist_scope): the runs are shared


def tokens(*arrays):
    return [Tensor(a, dtype=dtypes.int32) for a in arrays]


def loss_and_gradients(model, x: Tensor, y: Tensor) -> tuple[np.ndarray, dict]:
    """tinyref's loss and every parameter gradient for one batch, as float64 NumPy (x, y sharded or not)."""
    state = get_state_dict(model)
    for t in state.values():
        t.grad = None
    loss = cross_entropy(model(x), y)
    loss.backward()
    Tensor.realize(loss, *[t.grad for t in state.values()])
    return np.float64(loss.item()), {k: t.grad.numpy().astype(np.float64) for k, t in state.items()}


def gradient_mismatches(actual: tuple, expected: tuple, what: str) -> list:
    (loss, grads), (want_loss, want_grads) = actual, expected
    found = [compare(f"loss ({what})", loss, want_loss, FLOAT32)]
    found += [compare(f"grad {k} ({what})", grads[k], want_grads[k], FLOAT32_GRAD) for k in want_grads]
    return [m for m in found if m]


@pytest.fixture(scope="module")
def runs():
    """The one-device and the sharded results on adamw_case's weights and batches."""
    params, batches, _ = adamw_case()
    _, one_device_after = tinyref_adamw()
    devices = virtual_devices(2)
    x, y = batches[0]
    single = GPTStyleTransformer(TIED)
    load_params(single, params)
    sharded = GPTStyleTransformer(TIED)
    load_params(sharded, params)
    replicate(sharded, devices)
    out = dict(devices=devices, batches=batches, params=params, one_device_after=one_device_after, sharded_model=sharded,
               one_device_grads=loss_and_gradients(single, *tokens(x, y)),
               sharded_grads=loss_and_gradients(sharded, *shard_batch(devices, *tokens(x, y))))
    step = make_train_step(sharded, make_optimizer(sharded, weight_decay=ADAMW_DECAY, **ADAMW_HYPER))
    for xb, yb in batches:      # 3 steps: the JIT's capture (make_train_step captures on the first call) and two replays
        step(*shard_batch(devices, *tokens(xb, yb)))
    out["sharded_after"] = {k: t.numpy().astype(np.float64) for k, t in get_state_dict(sharded).items()}
    return out


def test_the_sharded_run_really_uses_two_devices(runs):
    devices = runs["devices"]
    assert len(set(devices)) == 2 and all(d.split(":")[0] == current_device().split(":")[0] for d in devices), devices
    assert all(t.device == devices for t in get_state_dict(runs["sharded_model"]).values())
    x, _ = shard_batch(devices, *tokens(*runs["batches"][0]))
    assert x.device == devices and x.uop.axis == 0


def test_sharded_gradients_match_one_device_and_oracle(runs):
    assert_no_mismatch(gradient_mismatches(runs["sharded_grads"], runs["one_device_grads"], f"{runs['devices']} vs one device"))
    x, y = runs["batches"][0]
    ref_logits, ref_loss, ref_grads = oracle_forward_backward(runs["params"], as_namespace(TIED), x, y)
    assert_no_mismatch(gradient_mismatches(runs["sharded_grads"], (ref_loss, ref_grads), f"{runs['devices']} vs oracle"))


def test_sharded_training_steps_match_one_device_and_oracle(runs):
    assert_no_mismatch(trained_weight_mismatches(runs["sharded_after"], runs["one_device_after"],
                                                 f"after 3 AdamW steps, {runs['devices']} vs one device"))
    assert_no_mismatch(adamw_mismatches(after=runs["sharded_after"]))


def test_control_misaligned_shard_is_caught(runs):
    """A planted data-parallel bug, the second device's targets shifted by one position: the gradients it
    would give (computed by the oracle, so nothing compiles) fail the check against the sharded run."""
    x, y = runs["batches"][0]
    y = y.copy()
    y[1] = np.roll(y[1], 1)
    _, loss, grads = oracle_forward_backward(runs["params"], as_namespace(TIED), x, y)
    assert gradient_mismatches(runs["sharded_grads"], (loss, grads), "misaligned")


def test_control_summed_instead_of_averaged_gradients_are_caught(runs):
    """The classic data-parallel bug, adding the devices' mean-loss gradients instead of averaging them (2x),
    fails the gradient check. (AdamW's update is nearly invariant to that scale, which is why the
    gradients are checked on their own and not only through the trained weights.)"""
    loss, grads = runs["sharded_grads"]
    found = gradient_mismatches((loss, {k: 2 * g for k, g in grads.items()}), runs["one_device_grads"], "2x")
    assert {m.name.split(" ")[1] for m in found} == set(grads)


def test_virtual_devices_and_batch_checks():
    assert virtual_devices(2, "CPU:LLVM") == ("CPU", "CPU:1")
    assert virtual_devices(3, "CL") == ("CL", "CL:1", "CL:2")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="positive integer"):
            virtual_devices(bad)
    with pytest.raises(UsageError, match="batch size 3 must be a multiple of the number of devices"):
        shard_batch(("CPU", "CPU:1"), Tensor.zeros(3, 4))


def test_attention_runs_on_a_sharded_batch():
    """Regression: attention made its causal mask on the default device, and adding it to the scores of a
    sharded batch failed in tinygrad's scheduler ("all buffers must have the same device")."""
    devices = virtual_devices(2)
    attn = MultiHeadSelfAttention(4, 2)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    one_device = attn(x).numpy()
    replicate(attn, devices)
    assert_no_mismatch([m for m in [compare("sharded attention", attn(x.shard(devices, axis=0)).numpy(), one_device,
                                            FLOAT32)] if m])
