"""The oracle is pure NumPy: importing it (all of it) loads neither tinygrad nor tinyref."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import sys, oracle, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tinygrad', 'tinyref')))"


def imported_after(modules: str) -> str:
    """The tinygrad/tinyref modules loaded in a fresh interpreter after importing ``modules``."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_importing_every_oracle_module_loads_no_tinygrad_or_tinyref():
    modules = ", ".join(f"oracle.{p.stem}" for p in sorted((ROOT / "oracle").glob("*.py")) if p.stem != "__init__")
    assert imported_after(modules) == "[]"


def test_the_import_probe_sees_tinygrad_when_it_is_imported():
    """Negative control: the same probe reports tinygrad once something does import it."""
    assert "'tinygrad'" in imported_after("tinygrad")
