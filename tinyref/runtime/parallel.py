"""Data parallel training with tinygrad's multi-device tensors: every device holds the weights, each gets a slice of the batch.

tinygrad does the rest: a forward pass on a batch sharded along axis 0 runs on every device at
once, and the gradient of a replicated weight is summed across devices (an all-reduce) during
``backward``, so the optimizer applies the same update everywhere. Without several GPUs, one
device can pose as several: ``CPU:0`` and ``CPU:1`` are two independent "devices" of one CPU,
and the math (and tinyref's tests of it) is the same as on real hardware::

    devices = virtual_devices(2)                  # ("CPU", "CPU:1") on a CPU machine
    replicate(model, devices)                     # before make_optimizer: its state follows the weights
    step = make_train_step(model, make_optimizer(model, lr=1e-3))
    loss = step(*shard_batch(devices, x, y))      # x, y: (B, T), B a multiple of len(devices)
"""
from __future__ import annotations

from tinygrad import Device, Tensor
from tinygrad.nn.state import get_state_dict

from ..errors import UsageError


def virtual_devices(n: int = 2, device: str | None = None) -> tuple[str, ...]:
    """``n`` instances of ``device``'s backend (default: the one in force), e.g. ("CPU", "CPU:1").

    A renderer chosen with DEV (``CPU:LLVM``) applies to every instance: it is not part of the name.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"the number of devices must be a positive integer, got {n!r}")
    base = (device or Device.DEFAULT).split(":")[0].upper()
    return tuple(Device.canonicalize(f"{base}:{i}") for i in range(n))


# --8<-- [start:data_parallel]
def replicate(model, devices: tuple[str, ...]) -> None:
    """Put a full copy of every weight of ``model`` on each device (in place)."""
    for t in get_state_dict(model).values():
        t.to_(devices)


def shard_batch(devices: tuple[str, ...], *batch: Tensor) -> tuple[Tensor, ...]:
    """Split each (B, ...) tensor along the batch axis: device i gets rows i*B/n:(i+1)*B/n."""
    for t in batch:
        if t.shape[0] % len(devices):
            raise UsageError(f"the batch size {t.shape[0]} must be a multiple of the number of devices ({len(devices)})")
    return tuple(t.shard(devices, axis=0) for t in batch)
# --8<-- [end:data_parallel]
