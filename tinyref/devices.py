"""Choosing the tinygrad backend: names, availability, and a description to print.

A tinyref device is a tinygrad target such as ``CPU`` (clang), ``CPU:LLVM``, ``CPU:X86``, ``CL``,
``PYTHON`` or ``CUDA``. The CPU renderers share tinygrad's ``CPU`` device and are told apart by
the ``DEV`` target in force when kernels compile, so selecting one sets ``DEV``.
"""
from __future__ import annotations

import contextlib

from tinygrad import Context, Device, Tensor
from tinygrad.helpers import DEV

from .errors import DeviceError

KNOWN_DEVICES = ("CPU", "CPU:LLVM", "CPU:X86", "CL", "PYTHON", "CUDA", "NV", "AMD", "METAL", "WEBGPU")


def normalize_device(spec: str) -> str:
    """Upper-case a device name and check that tinyref knows it (``cpu:llvm`` -> ``CPU:LLVM``)."""
    name = str(spec).strip().upper()
    if name not in KNOWN_DEVICES:
        raise DeviceError(f"unknown device {spec!r}: choose one of {', '.join(KNOWN_DEVICES)}")
    return name


def probe_device(spec: str) -> str | None:
    """None when ``spec`` computes correctly here, else the reason it cannot be used (one line)."""
    name = normalize_device(spec)
    try:
        with Context(DEV=name):
            got = (Tensor([1.0, 2.0, 3.0], device=name.split(":")[0]) * 2).tolist()
    except Exception as e:  # noqa: BLE001 - any failure to open or compile means "not available"
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no details'}"[:200]
    return None if got == [2.0, 4.0, 6.0] else f"computed {got} for [2, 4, 6]"


def select_device(spec: str | None) -> str:
    """Make ``spec`` the default tinygrad target for this process (None keeps tinygrad's choice); returns its name."""
    if spec is None:
        return current_device()
    name = normalize_device(spec)
    reason = probe_device(name)
    if reason is not None:
        raise DeviceError(f"device {name} is not available here ({reason}); run 'tinyref check --device all' to see which are")
    DEV.value = name
    return name


@contextlib.contextmanager
def use_device(spec: str):
    """Run a block with ``spec`` as the default target (tensors created inside land on it)."""
    name = normalize_device(spec)
    with Context(DEV=name):
        yield name


def current_device() -> str:
    """The target in force, e.g. ``CPU:LLVM`` or ``CL``."""
    base = Device.DEFAULT
    renderer = DEV.renderer if DEV.device == base else ""
    return f"{base}:{renderer}" if renderer else base


def describe_device(name: str | None = None) -> str:
    """A human line such as ``CPU:LLVM (CPULLVMRenderer)`` for banners and reports."""
    name = name or current_device()
    with Context(DEV=name):
        return f"{name} ({type(Device[name.split(':')[0]].renderer).__name__})"
