"""Fuzzing the loaders and the argument parser: any input ends in success or one clean tinyref error, never a crash.

Hypothesis mutates valid files (overwritten bytes, truncation, lying headers) and draws arbitrary JSON
and argument lists; the property is the same everywhere: the call returns a well-formed result or
raises the module's own one-line error. Anything else (IndexError, KeyError, a NumPy error, a
traceback) is a bug. These run without compiling a kernel, so they can afford many examples.
"""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import oracle
from helpers import UNTIED, as_namespace, load_params
from tinyref import GPTStyleTransformer
from tinyref.train.checkpoint import CONFIG_FILE, MODEL_FILE, load_checkpoint, load_config, read_safetensors, save_checkpoint
from tinyref.cli import COMMANDS, build_parser
from tinyref.config import GPTConfig, preset_fields
from tinyref.errors import CheckpointError, TinyrefError, UsageError
from tinyref.train.tokenizer import tokenizer_from_json, train_tokenizer
from tinyref.cli.train import check_demo_model, demo_settings

fuzz = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = GPTStyleTransformer(UNTIED)
    load_params(model, oracle.init_params(as_namespace(UNTIED), np.random.default_rng(0)))
    path = save_checkpoint(tmp_path_factory.mktemp("fuzz") / "ckpt", model, None, train_tokenizer("char", ["abcdefg"]),
                           {"step": 1})
    return path


def header_end(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


@st.composite
def damaged(draw, raw: bytes) -> bytes:
    """``raw`` with a few bytes overwritten (mostly in the length prefix and JSON header) and maybe truncated."""
    data = bytearray(raw)
    hot = header_end(raw) + 8                      # the header, and the first bytes after it
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.one_of(st.integers(0, hot - 1), st.integers(0, len(data) - 1)))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@fuzz
@given(data=st.data())
def test_damaged_safetensors_are_read_exactly_or_refused(checkpoint, tmp_path, data):
    raw = (checkpoint / MODEL_FILE).read_bytes()
    blob = data.draw(damaged(raw))
    path = tmp_path / MODEL_FILE
    path.write_bytes(blob)
    shapes = oracle.param_shapes(UNTIED)
    try:
        tensors = read_safetensors(path, shapes)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return
    assert {k: v.shape for k, v in tensors.items()} == {k: tuple(s) for k, s in shapes.items()}


@st.composite
def lying_headers(draw) -> tuple[dict, int]:
    """A syntactically valid safetensors header whose entries may lie (wrong dtypes, shapes, offsets,
    overlaps), and a data size that may not match it. Drawn as values, so a failure shrinks to the one lie."""
    header, offset = {}, 0
    for k, shape in oracle.param_shapes(UNTIED).items():
        n = 4 * int(np.prod(shape))
        header[k] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    for k in draw(st.lists(st.sampled_from(sorted(header)), max_size=2, unique=True)):
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[k][field] = draw(st.one_of(st.none(), st.text(max_size=4), st.integers(-2**63, 2**63),
                                          st.lists(st.integers(-10, 2**40), max_size=3)))
    return header, draw(st.sampled_from([offset, offset - 4, offset + 4, 0]))


@fuzz
@given(case=lying_headers())
def test_lying_headers_are_refused_before_any_allocation(tmp_path, case):
    header, data_size = case
    blob = json.dumps(header).encode()
    path = tmp_path / MODEL_FILE
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + b"\0" * max(data_size, 0))
    try:
        read_safetensors(path, oracle.param_shapes(UNTIED))
    except CheckpointError as e:
        assert "\n" not in str(e)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@st.composite
def config_json(draw) -> str:
    """config.json text: mostly a real config with some fields replaced by arbitrary JSON, sometimes garbage."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=40))
    if kind == 1:
        return json.dumps(draw(json_values))
    cfg = UNTIED.to_dict()
    for field in draw(st.lists(st.sampled_from([*cfg, "extra"]), max_size=3)):
        cfg[field] = draw(json_values)
    return json.dumps(cfg)


@fuzz
@given(text=config_json())
def test_any_config_json_loads_or_is_a_checkpoint_error(tmp_path, text):
    (tmp_path / CONFIG_FILE).write_text(text)
    try:
        cfg = load_config(tmp_path)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(cfg, GPTConfig) and isinstance(cfg.d_ff, int)


@st.composite
def tokenizer_json(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=60))
    if kind == 1:
        return json.dumps({"format": "tinyref-tokenizer", "type": draw(json_values), "symbols": draw(json_values)})
    if kind == 2:
        return json.dumps({"format": "tinyref-tokenizer", "type": draw(st.sampled_from(["char", "word"])),
                           "symbols": draw(st.lists(st.text(max_size=3), max_size=6))})
    return json.dumps({"model": {"type": "BPE", **draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))}})


@fuzz
@given(text=tokenizer_json())
def test_any_tokenizer_file_loads_or_is_a_checkpoint_error(text):
    try:
        tok = tokenizer_from_json(text)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return
    assert tok.vocab_size >= 1 and tok.decode(range(tok.vocab_size)) is not None


FLAGS = ["--vocab-size", "--context-length", "--d-model", "--n-heads", "--n-layers", "--d-ff", "--batch-size",
         "--epochs", "--lr", "--seed", "--device", "--model", "--n-kv-heads", "--positions", "--rope-theta", "--bogus",
         "-x", "--"]
VALUES = ["0", "-1", "1", "4", "32", "1e-3", "nan", "inf", "-inf", "abc", "", "CPU", "cl", "9" * 30, "\x00", "--lr",
          "llama", "rope", "3", "20"]


@fuzz
@given(argv=st.lists(st.sampled_from(FLAGS) | st.sampled_from(VALUES), max_size=8))
def test_any_train_arguments_parse_or_fail_in_one_line(argv, capsys):
    """The parser either accepts the arguments, and then the config built from them is valid or a
    one-line usage error (a ConfigError, or a combination of flags that names them), or exits 2 with one
    'tinyref: error:' line."""
    try:
        args = build_parser().parse_args(["train", *argv])
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2 and err.startswith("tinyref: error: ") and err.count("\n") == 1, err
        return
    demo = demo_settings(vars(args))          # what 'tinyref train' would build from these flags
    try:
        check_demo_model(demo)
        GPTConfig(**{k: demo[k] for k in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers", "d_ff")},
                  **preset_fields(demo["model"], demo))
    except UsageError as e:
        assert "\n" not in str(e)


@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_whole_damaged_checkpoints_load_or_fail_cleanly(checkpoint, tmp_path_factory, data):
    """End to end (fewer examples: each successful load builds a model): damage one file, load the directory."""
    path = tmp_path_factory.mktemp("damaged") / "ckpt"
    shutil.copytree(checkpoint, path)
    name = data.draw(st.sampled_from([MODEL_FILE, CONFIG_FILE, "tokenizer.json", "state.json"]))
    raw = (path / name).read_bytes()
    assume(raw)
    (path / name).write_bytes(data.draw(damaged(raw)) if name == MODEL_FILE else
                              data.draw(st.sampled_from([raw[: len(raw) // 2], raw.replace(b"a", b"\xff"), b"", b"{}"])))
    try:
        ckpt = load_checkpoint(path)
    except TinyrefError as e:
        assert "\n" not in str(e)
        return
    assert ckpt.config == UNTIED


def numeric_flags(parser) -> dict[str, dict[str, argparse.Action]]:
    """command -> {flag: action} for every flag of every command whose value is a number (its type
    is int or float, or one of tinyref.cli.flags' ranged types)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {a.option_strings[-1]: a for a in cmd._actions
                   if a.type in (int, float) or hasattr(a.type, "range")} for name, cmd in sub.choices.items()}


def unranged(parser) -> list[str]:
    return [f"{name} {flag}" for name, flags in numeric_flags(parser).items() for flag, a in flags.items()
            if not hasattr(a.type, "range")]


def test_every_numeric_flag_of_every_command_has_a_range():
    parser = build_parser()
    assert set(numeric_flags(parser)) == set(COMMANDS) and unranged(parser) == []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["eval"].add_argument("--planted", type=int)          # negative control: a plain int flag
    assert unranged(parser) == ["eval --planted"]


def in_range(value, action) -> bool:
    lo, hi = action.type.range
    return value is None or value == action.default or ((lo is None or value >= lo) and (hi is None or value <= hi))


REQUIRED = {"generate": ["--checkpoint", "x", "--prompt", "a"], "eval": ["--checkpoint", "x", "--data", "d"],
            "attention": ["--checkpoint", "x", "--text", "a", "--out", "a.png"], "export-golden": ["--out", "g"]}


@fuzz
@given(data=st.data())
def test_any_numeric_flags_of_any_command_parse_in_range_or_fail_in_one_line(data, capsys):
    """Every command: a drawn list of its numeric flags and values is refused in one line, or every
    value parsed lies in the flag's range (so no range check is left to a traceback further down)."""
    flags = numeric_flags(build_parser())
    command = data.draw(st.sampled_from(sorted(flags)))
    argv = data.draw(st.lists(st.sampled_from(sorted(flags[command])) | st.sampled_from(VALUES), max_size=6))
    try:
        args = build_parser().parse_args([command, *REQUIRED.get(command, []), *argv])
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2 and err.startswith("tinyref: error: ") and err.count("\n") == 1, err
        return
    for flag, action in flags[command].items():
        assert in_range(getattr(args, action.dest), action), (command, flag, getattr(args, action.dest))
