"""This process's resident memory, read from Linux's /proc/self: what tinyref train reports, what
tinyref bench measures per run, and what the soak test watches. None where /proc is not there."""
from __future__ import annotations


def status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status: VmRSS (resident now) or VmHWM (peak resident)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def resident_mib() -> float | None:
    kib = status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_resident_mib() -> float | None:
    """The high-water mark since the process started, or since the last ``reset_peak()``."""
    kib = status_kib("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak() -> float | None:
    """Reset the high-water mark to the current resident size (Linux clear_refs 5); return that size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return resident_mib()
