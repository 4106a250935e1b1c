"""The exceptions tinyref raises for bad input.

Every one carries a one-line message that says what is wrong and how to fix it; the CLI prints
it as ``tinyref: error: <message>`` with no traceback. ``UsageError`` means the caller asked for
something invalid (exit status 2); the others are runtime problems (exit status 1).
"""
import importlib


class TinyrefError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_status = 1


class UsageError(TinyrefError, ValueError):
    """An invalid argument, flag or option value."""

    exit_status = 2


class ConfigError(UsageError):
    """A GPTConfig field that cannot describe a model."""


class DeviceError(UsageError):
    """A tinygrad device that is unknown or not available on this machine."""


class DataError(TinyrefError):
    """A data file that cannot be read as training text."""


class CheckpointError(TinyrefError):
    """A checkpoint directory that is missing pieces or holds inconsistent data."""


class TrainingError(TinyrefError):
    """Training that cannot go on (e.g. the loss became NaN); the last checkpoint is kept."""


SEED_MAX = 2**32 - 1   # tinygrad keeps the seed in a uint32; NumPy takes any integer >= 0


def check_seed(name: str, value) -> None:
    """UsageError unless ``value`` is an integer seed in [0, SEED_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise UsageError(f"{name} must be an integer >= 0 and <= {SEED_MAX}, got {value!r}")


def require(module: str, purpose: str, extra: str = "train"):
    """Import an optional dependency, or raise UsageError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed: "
                         f"pip install 'tinyref[{extra}]'") from None


def pyplot():
    """matplotlib's pyplot, drawing to files only (the Agg backend: no display needed)."""
    require("matplotlib", "drawing a PNG").use("Agg")
    return require("matplotlib.pyplot", "drawing a PNG")
