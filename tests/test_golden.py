"""``tinyref export-golden``: byte-reproducible safetensors + manifest.json that other readers load, whose
numbers an independent implementation (the PyTorch GPT of examples/, torch's AdamW) reproduces, and
whose bad input is a one-line error that leaves existing files alone."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from tinygrad.nn.state import safe_load

import oracle
import tinyref
from tinyref import CheckpointError
from tinyref.verify import tolerances
from tinyref.cli import main
from tinyref.verify.golden import ADAMW, MANIFEST, PRESETS, load_golden
from tinyref.verify.tolerances import FLOAT64, compare

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import verify_torch_gpt as torch_gpt  # noqa: E402  (an implementation independent of the oracle)

FILES = {f"{name}.safetensors" for name in PRESETS} | {MANIFEST}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def cli(argv, capsys):
    """(exit status, stdout, stderr) of ``tinyref ARGV`` run in this process."""
    try:
        status = main(argv)
    except SystemExit as e:          # argparse's usage errors
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def snapshot(directory: Path) -> dict:
    """Every file under ``directory`` (and its siblings' names: no temporary leftovers) with its bytes."""
    return {"siblings": sorted(p.name for p in directory.parent.iterdir()),
            "files": {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
                      if p.is_file()} if directory.is_dir() else None}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The default export twice: once as a subprocess, once in this process (at the same time)."""
    base = tmp_path_factory.mktemp("golden")
    proc = subprocess.Popen([sys.executable, "-m", "tinyref", "export-golden", "--out", str(base / "subprocess")],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert main(["export-golden", "--out", str(base / "in-process")]) == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return base / "in-process", base / "subprocess", out


def test_two_exports_are_byte_identical(exports, tmp_path):
    first, second, printed = exports
    assert {p.name for p in first.iterdir()} == {p.name for p in second.iterdir()} == FILES
    for name in sorted(FILES):
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between exports"
    assert f"{second / 'manifest.json'}: tinyref {tinyref.__version__}, seed 0" in printed
    # negative control: another seed changes the tensors and the manifest, so equal bytes mean something
    assert main(["export-golden", "--out", str(tmp_path / "seed1"), "--config", "small", "--seed", "1"]) == 0
    assert (tmp_path / "seed1" / "small.safetensors").read_bytes() != (first / "small.safetensors").read_bytes()


def test_manifest_lists_configs_files_dtypes_tolerances_and_version(exports):
    directory = exports[0]
    data = json.loads((directory / MANIFEST).read_text())
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)   # tomllib is 3.11+
    assert data["format"] == "tinyref-golden-1" and data["tinyref_version"] == tinyref.__version__ == version
    assert data["seed"] == 0 and data["adamw"]["lr"] == ADAMW["lr"] and data["adamw"]["weight_decay"] == ADAMW["weight_decay"]
    for key, tol in (("float32_forward", tolerances.FLOAT32), ("float32_gradients", tolerances.FLOAT32_GRAD),
                     ("float64", tolerances.FLOAT64)):
        assert data["tolerances"][key] == {"rtol": tol.rtol, "atol": tol.atol, "floor": tol.floor, "why": tol.why}
    assert [c["name"] for c in data["cases"]] == list(PRESETS)
    for case in data["cases"]:
        preset = PRESETS[case["name"]]
        assert case["config"] == preset.config.to_dict()
        assert (case["batch"], case["seq_len"]) == (preset.batch, preset.T)
        path = directory / case["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == case["sha256"]
        tensors = load_file(str(path))
        assert case["dtypes"] == {k: str(v.dtype) for k, v in tensors.items()}
        assert case["shapes"] == {k: list(v.shape) for k, v in tensors.items()}
        assert {v.dtype for v in tensors.values()} == {np.dtype(np.float64), np.dtype(np.int64)}


def torch_adamw_step(params: dict, grads: dict) -> tuple[dict, dict, dict]:
    """One step of torch.optim.AdamW from the stored gradients: matrices decay, vectors do not."""
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    for k, t in tensors.items():
        t.grad = torch.tensor(grads[k])
    groups = [{"params": [t for t in tensors.values() if t.ndim >= 2], "weight_decay": ADAMW["weight_decay"]},
              {"params": [t for t in tensors.values() if t.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=(ADAMW["b1"], ADAMW["b2"]), eps=ADAMW["eps"])
    opt.step()
    state = {k: opt.state[t] for k, t in tensors.items()}
    return ({k: t.detach().numpy() for k, t in tensors.items()}, {k: s["exp_avg"].numpy() for k, s in state.items()},
            {k: s["exp_avg_sq"].numpy() for k, s in state.items()})


def section(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_files_read_without_tinyref_reproduce_the_oracle(exports, name):
    path = exports[0] / f"{name}.safetensors"
    tensors = load_file(str(path))                                          # the safetensors package
    by_tinygrad = {k: t.numpy() for k, t in safe_load(str(path)).items()}  # tinygrad's reader
    assert set(by_tinygrad) == set(tensors)
    assert all(np.array_equal(by_tinygrad[k], v) and by_tinygrad[k].dtype == v.dtype for k, v in tensors.items())
    cfg = PRESETS[name].config
    params, idx, targets = section(tensors, "params."), tensors["inputs.idx"], tensors["inputs.targets"]
    assert set(params) == set(oracle.param_shapes(cfg))

    # the oracle, recomputed from the stored weights and inputs: the same numbers, bit for bit
    logits, cache = oracle.gpt_forward(idx, params, cfg)
    loss, loss_cache = oracle.cross_entropy_forward(logits, targets)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(loss_cache), cache)
    assert tensors["outputs.loss"].shape == () and loss == float(tensors["outputs.loss"])
    assert np.array_equal(logits, tensors["outputs.logits"])
    assert all(np.array_equal(grads[k], g) for k, g in section(tensors, "grads.").items())

    # an independent implementation: the PyTorch GPT of examples/ (float64 autograd) and torch's AdamW
    model = torch_gpt.GPT(cfg).double()
    model.load_state_dict({k: torch.tensor(v) for k, v in params.items()}, strict=True)
    torch_logits = model(torch.tensor(idx))
    torch_loss = torch.nn.functional.cross_entropy(torch_logits.flatten(0, 1), torch.tensor(targets).flatten())
    torch_loss.backward()
    after, m, v = torch_adamw_step(params, section(tensors, "grads."))
    found = [compare("logits", torch_logits.detach().numpy(), tensors["outputs.logits"], FLOAT64),
             compare("loss", torch_loss.item(), tensors["outputs.loss"], FLOAT64)]
    found += [compare(f"grad {k}", p.grad.numpy(), tensors[f"grads.{k}"], FLOAT64) for k, p in model.named_parameters()]
    for label, ours in (("adamw.params.", after), ("adamw.m.", m), ("adamw.v.", v)):
        found += [compare(label + k, ours[k], tensors[label + k], FLOAT64) for k in params]
    assert not [f for f in found if f], "\n".join(str(f) for f in found if f)


def test_a_changed_file_fails_the_manifest_checksum(exports, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in FILES:
        (copy / name).write_bytes((exports[0] / name).read_bytes())
    cfg, tensors = load_golden(copy, "untied")
    assert cfg == PRESETS["untied"].config and "adamw.v.lm_head.weight" in tensors
    data = bytearray((copy / "untied.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "untied.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the manifest's sha256; export again"):
        load_golden(copy, "untied")


def assert_one_line_error(status, out, err, expected_status, phrase):
    assert status == expected_status, (status, out, err)
    assert err.startswith("tinyref: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert phrase in err, err


def test_an_existing_directory_is_kept_without_overwrite_and_replaced_with_it(tmp_path, capsys):
    out = tmp_path / "vectors"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    before = snapshot(out)
    assert_one_line_error(*cli(["export-golden", "--out", str(out), "--config", "untied"], capsys), 2,
                          "already exists and is not empty: choose a new directory or pass --overwrite")
    assert snapshot(out) == before
    assert cli(["export-golden", "--out", str(out), "--config", "untied", "--overwrite"], capsys)[0] == 0
    assert {p.name for p in out.iterdir()} == {"untied.safetensors", MANIFEST}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]       # no temporary or old copies left


@pytest.mark.parametrize("make_config, status, phrase", [
    (lambda d: "tiny", 2, "--config 'tiny' is neither a preset (small, untied, demo, nanogpt, llama) nor a JSON file"),
    (lambda d: d / "cfg.json", 2, "cannot read"),                                               # not JSON
    (lambda d: d / "heads.json", 2, "heads.json"),                                              # invalid GPTConfig
])
def test_a_bad_config_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, make_config, status, phrase):
    (tmp_path / "cfg.json").write_text("{not json")
    (tmp_path / "heads.json").write_text(json.dumps({"vocab_size": 11, "d_model": 10, "n_heads": 3}))
    out = tmp_path / "vectors"
    assert_one_line_error(*cli(["export-golden", "--out", str(out), "--config", str(make_config(tmp_path))], capsys),
                          status, phrase)
    assert not out.exists()


def test_an_unwritable_out_is_a_one_line_error_and_leaves_files_alone(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for out, phrase in ((blocker / "vectors", "choose a writable directory"),       # parent is a file
                        (blocker, "exists and is not a directory: choose another output directory")):
        assert_one_line_error(*cli(["export-golden", "--out", str(out), "--config", "untied"], capsys), 2, phrase)
        assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    status, _, err = cli(["export-golden"], capsys)                           # --out is required
    assert_one_line_error(status, "", err, 2, "the following arguments are required: --out")


def test_the_writer_refuses_a_dtype_safetensors_cannot_name(tmp_path):
    from tinyref.verify.golden import write_safetensors
    with pytest.raises(tinyref.UsageError, match="z: dtype complex128 has no safetensors name here"):
        write_safetensors(tmp_path / "x.safetensors", {"z": np.zeros(2, dtype=np.complex128)})
    assert not (tmp_path / "x.safetensors").exists()
