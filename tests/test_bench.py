"""tinyref bench: the JSON it prints, the PyTorch model it compares against, and its error without torch.

No timing is asserted here: speed is what the benchmark reports, not what a test checks. What a
test can check is that the comparison is honest: the PyTorch model trains exactly the oracle's
model (same loss, gradients and AdamW step on the same weights), so the ratios compare equal work.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import oracle
from helpers import LLAMA, TIED, TIED_BT, UNTIED, UNTIED_BT, as_namespace
from tinyref.bench import harness
from tinyref.bench.harness import CONFIGS, IMPLS, LR, bench_batch, bench_params
from tinyref.verify.tolerances import FLOAT64, compare

torch = pytest.importorskip("torch")
import tinyref.bench.torch_gpt as bench_torch  # noqa: E402 - needs torch

ROOT = Path(__file__).resolve().parents[1]


def test_configs_are_the_issue_shapes():
    """S is the seed demo (batch 8, seq 16, vocab 52, d_model 32, 4 heads, 2 layers); llama-S and llama-M are S's
    and M's sizes as Llamas, llama-M with 2 key/value heads."""
    shapes = {n: (b, c.context_length, c.vocab_size, c.d_model, c.n_heads, c.n_layers) for n, (b, c) in CONFIGS.items()}
    assert shapes == {"S": (8, 16, 52, 32, 4, 2), "M": (16, 64, 65, 128, 4, 4), "L": (8, 128, 512, 256, 8, 6),
                      "llama-S": (8, 16, 52, 32, 4, 2), "llama-M": (16, 64, 65, 128, 4, 4)}
    for name, kv_heads in (("llama-S", 4), ("llama-M", 2)):
        cfg = CONFIGS[name][1]
        assert (cfg.positions, cfg.norm, cfg.gated_mlp, cfg.bias, cfg.n_kv_heads) == ("rope", "rmsnorm", True, False, kv_heads)


def test_bench_json_schema():
    """A two-step run of config S (the demo's shapes, so its kernels are usually cached) prints the contract's JSON."""
    out = subprocess.run([sys.executable, "-m", "tinyref", "bench", "--config", "S", "--steps", "2", "--gen-tokens", "0",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {"date", "cpu", "cores", "device", "tinygrad", "tinygrad_env", "beam", "load_average"} <= set(report["machine"])
    [row] = report["results"]
    assert set(row) >= {"impl", "config", "ms_per_step", "tokens_per_s", "warmup_s", "peak_mem_mb"}
    assert (row["impl"], row["config"]) == ("tinyref", "S") and row["impl"] in IMPLS
    assert row["ms_per_step"] > 0 and row["warmup_s"] > 0 and row["peak_mem_mb"] > 0
    # tokens/s is the batch's B*T tokens over the median step time
    assert row["tokens_per_s"] == pytest.approx(8 * 16 / (row["ms_per_step"] / 1000), rel=1e-6)
    assert report["generation"] == [] and report["process_per_impl"] is False    # tinyref alone, in this process


def test_compare_runs_each_implementation_in_its_own_process(monkeypatch):
    """In one process a later implementation reuses pages an earlier one freed, and its peak reads ~0 MB."""
    ran = []
    monkeypatch.setattr(harness, "bench_fresh", lambda impl, name, steps, *rest: ran.append(impl) or
                        harness.Result(impl, name, 1.0, 1.0, 1.0, 1.0))
    monkeypatch.setattr(harness, "bench_one", lambda *args: pytest.fail("an implementation ran in this process"))
    assert [r.impl for r in harness.bench_config("L", 1, compare=True)] == ran == list(IMPLS)


def test_a_fresh_process_reports_its_own_nonzero_peak():
    row = harness.bench_fresh("torch-eager", "S", 1)
    assert (row.impl, row.config) == ("torch-eager", "S") and row.ms_per_step > 0
    assert row.peak_mem_mb > 1, "PyTorch's model, AdamW state and activations take more than 1 MB"


def test_compare_without_torch_is_a_one_line_error():
    """torch made unimportable in a fresh interpreter: --compare says how to install it, exit status 2."""
    code = "import sys; sys.modules['torch'] = None; from tinyref.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "bench", "--compare"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyref: error: ") and "pip install 'tinyref[bench]'" in lines[0]


@pytest.mark.parametrize("mode, flag", [*(("--compare", f) for f in ("--threads=0", "--threads=-2", "--beam=-1")),
                                        *(("--oracle-gpt2", f) for f in ("--runs=0", "--seq-len=0", "--seq-len=1025")),
                                        ("--oracle-smollm", "--seq-len=2049"), ("--oracle-smollm", "--oracle-gpt2")])
def test_bad_bench_flag_is_a_one_line_usage_error(mode, flag):
    """Rejected before any kernel is built or any run starts: exit status 2 and one line naming the flag."""
    out = subprocess.run([sys.executable, "-m", "tinyref", "bench", mode, flag], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyref: error: ") and flag.split("=")[0] in lines[0]


def torch_vs_oracle(cfg, bt, seed=0):
    """Mismatches between one float64 PyTorch training step and the oracle's, on the same weights and batch."""
    params = {k: v.astype(np.float64) for k, v in bench_params(cfg, seed).items()}
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}   # every term matters
    x, y = (a[: bt[0], : bt[1]] for a in bench_batch(cfg, bt[0], seed))

    logits, cache = oracle.gpt_forward(x, params, as_namespace(cfg))
    loss, ce_cache = oracle.cross_entropy_forward(logits, y)
    grads = oracle.gpt_backward(oracle.cross_entropy_backward(ce_cache), cache)
    stepped, _ = oracle.adamw_step(params, grads, None, lr=LR, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)

    model = bench_torch.TorchGPT(cfg).double().load_numpy(params)
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        torch_logits = model(xt).numpy()
    torch_loss = bench_torch.train_step(model, bench_torch.adamw(model, LR), xt, yt).item()
    torch_grads = {k: g for k, g in zip(model.tinyref_names().values(), (p.grad for p in model.parameters()))}
    checks = [compare("logits", torch_logits, logits, FLOAT64), compare("loss", torch_loss, loss, FLOAT64)]
    checks += [compare(f"grad {k}", torch_grads[k].numpy(), grads[k], FLOAT64) for k in params]
    checks += [compare(f"adamw {k}", v, stepped[k], FLOAT64) for k, v in model.numpy_state().items()]
    return [m for m in checks if m is not None]


@pytest.mark.parametrize("cfg, bt", [(TIED, TIED_BT), (UNTIED, UNTIED_BT), (LLAMA, TIED_BT)], ids=["tied", "untied", "llama"])
def test_torch_model_trains_the_oracle_model(cfg, bt):
    """Same loss, logits, gradients and AdamW step as the oracle, in float64: the timed work is the same math."""
    mismatches = torch_vs_oracle(cfg, bt)
    assert not mismatches, "\n".join(map(str, mismatches))


def test_torch_comparison_catches_a_planted_bug(monkeypatch):
    """Negative control: attention that is not causal must fail the check above."""
    sdpa = bench_torch.F.scaled_dot_product_attention
    monkeypatch.setattr(bench_torch.F, "scaled_dot_product_attention",
                        lambda q, k, v, is_causal, **kw: sdpa(q, k, v, is_causal=False, **kw))
    names = {m.name.split()[0] for m in torch_vs_oracle(TIED, TIED_BT)}
    assert {"logits", "loss", "grad", "adamw"} <= names


def test_torch_comparison_catches_a_planted_llama_bug(monkeypatch):
    """Negative control: the Llama twin pairing rotary dimensions the other way ("interleaved" for "half")."""
    rotate = bench_torch.rotate
    monkeypatch.setattr(bench_torch, "rotate", lambda x, cos, sin, style: rotate(x, cos, sin, "interleaved"))
    names = {m.name.split()[0] for m in torch_vs_oracle(LLAMA, TIED_BT)}
    assert {"logits", "loss", "grad", "adamw"} <= names


@pytest.mark.parametrize("model", ["gpt2", "smollm"])
def test_oracle_hf_runs_alternate_and_ratios_are_to_pytorch(monkeypatch, model):
    """Runs go oracle, PyTorch, oracle, PyTorch; medians per implementation; ratios against torch-hf."""
    import tinyref.bench.oracle_hf as oracle_hf
    order, figures = [], {"oracle": [(60.0, 6000.0), (50.0, 6200.0), (70.0, 6100.0)], "torch-hf": [(40.0, 5000.0)] * 3}
    monkeypatch.setattr(oracle_hf, "run_in_process", lambda name, impl, T, seed, hp: order.append((name, impl)) or dict(
        zip(("seconds", "peak_mem_mb"), figures[impl][[i for _, i in order].count(impl) - 1]), impl=impl))
    data = oracle_hf.bench_oracle_hf(model, seq_len=8, runs=3, impls=("oracle", "torch-hf"))
    assert order == [(model, "oracle"), (model, "torch-hf")] * 3
    oracle_row = data["results"][0]
    assert (oracle_row["seconds"], oracle_row["peak_mem_mb"]) == (60.0, 6100.0)
    assert (oracle_row["time_ratio"], oracle_row["memory_ratio"]) == (1.5, 1.22)
    assert data["shape"]["seq_len"] == 8 and data["reference"] == "torch-hf"
    assert data["shape"].get("kv_heads") == {"gpt2": None, "smollm": 3}[model]


def test_the_estimate_counts_gpt2_small_flops_and_speaks_only_when_slow(capsys, monkeypatch):
    """875 GFLOP per GPT-2 small step at T = 1024 (3 x forward: 12 x 17.7 in the blocks + 79 in the head). The
    matmul rate is fixed at 20 GFLOP/s (a 2-core CPU's), so whether it speaks does not depend on this machine's."""
    from tinyref.bench.oracle_hf import GPT2_SMALL
    from tinyref.verify import cost
    monkeypatch.setattr(cost, "matmul_rate", lambda: 20e9)
    assert cost.step_flops(GPT2_SMALL, 1, 1024) == pytest.approx(3 * (12 * (14.496e9 + 3.221e9) + 79.05e9), rel=1e-3)
    assert cost.say_estimate("tiny", CONFIGS["S"][1], 8, 16) == 0.0
    assert capsys.readouterr().err == ""
    seconds = cost.say_estimate("export-golden: case 'gpt2'", GPT2_SMALL, 1, 1024)
    lines = capsys.readouterr().err.strip().splitlines()
    assert seconds > cost.SAY_ABOVE_S and len(lines) == 1
    assert lines[0].startswith("tinyref: export-golden: case 'gpt2': about ") and "GFLOP" in lines[0]


def test_profile_json_accounts_for_every_kernel():
    """--profile: the classes add up to the step's kernels and kernel time, the largest come first, and the
    warm-up's parts add up to the first step."""
    out = subprocess.run([sys.executable, "-m", "tinyref", "bench", "--config", "S", "--profile", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    [p] = json.loads(out.stdout)["profiles"]
    assert p["config"] == "S" and {c["class"] for c in p["classes"]} <= {"matmul", "reduction", "elementwise"}
    assert "matmul" in {c["class"] for c in p["classes"]}
    assert sum(c["kernels"] for c in p["classes"]) == p["kernels"] > 0
    assert sum(c["ms"] for c in p["classes"]) == pytest.approx(p["ms_one_thread"])
    assert [k["ms"] for k in p["largest"]] == sorted((k["ms"] for k in p["largest"]), reverse=True)
    parts = p["warmup"]
    assert parts["compiling kernels"] + parts["tracing, scheduling, capture"] == pytest.approx(parts["first step in all"])
