"""``tinyref export-golden``: write the oracle's golden vectors (safetensors + manifest.json)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import GPTConfig
from ..errors import ConfigError, UsageError
from ..verify.cost import say_estimate
from ..verify.golden import PRESETS, GoldenCase, export_golden
from .flags import POSITIVE, SEED


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (its parents are created too)")
    p.add_argument("--config", action="append", metavar="NAME|FILE",
                   help=f"a preset ({', '.join(PRESETS)}) or a JSON file of GPTConfig fields; repeatable "
                        "(default: every preset)")
    p.add_argument("--batch-size", type=POSITIVE, default=2, help="B for configs read from files (default 2)")
    p.add_argument("--seq-len", type=POSITIVE, default=None, help="T for configs read from files (default: context_length)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of weights and inputs (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists and is not empty")


def case_from_argument(spec: str, batch: int, seq_len: int | None) -> tuple[str, GoldenCase]:
    """``small`` -> the preset; ``path/to/cfg.json`` -> (``cfg``, a case of that config)."""
    if spec in PRESETS:
        return spec, PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
    try:
        cfg = GPTConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise ConfigError(f"{path}: {e}") from None
        raise UsageError(f"cannot read {path} as JSON ({e}); write GPTConfig fields as a JSON object") from None
    if batch < 1 or not 1 <= (seq_len or cfg.context_length) <= cfg.context_length:
        raise UsageError(f"--batch-size must be >= 1 and --seq-len in [1, context_length={cfg.context_length}]")
    return path.stem, GoldenCase(cfg, batch, seq_len)


def run(args: argparse.Namespace) -> int:
    cases = dict(case_from_argument(s, args.batch_size, args.seq_len) for s in (args.config or PRESETS))
    if len(cases) != len(args.config or PRESETS):
        raise UsageError("two --config values share a name: give each config file a different name")
    for name, case in cases.items():
        say_estimate(f"export-golden: case {name!r}", case.config, case.batch, case.T)
    data = export_golden(args.out, cases, seed=args.seed, overwrite=args.overwrite)
    for case in data["cases"]:
        print(f"{Path(args.out) / case['file']}: {len(case['dtypes'])} tensors, sha256 {case['sha256'][:16]}")
    print(f"{Path(args.out) / 'manifest.json'}: tinyref {data['tinyref_version']}, seed {data['seed']}")
    return 0
