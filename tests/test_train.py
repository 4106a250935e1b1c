"""Real training against the oracle: the jitted step with accumulation, clipping, weight decay and mixed
precision; bit-exact resume; bad input on the command line (the schedule and clipping alone: test_optim.py).

The tinygrad side uses only tests/helpers.py's TIED shape (micro-batches of (2, 8)), so the
forward/backward kernels are the ones the model tests compile.
"""
import contextlib
import functools
import io
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

import oracle
from helpers import (TIED, TIED_BT, UNTIED, UNTIED_BT, as_namespace, assert_no_mismatch, float32_exact, load_params,
                     oracle_forward_backward, random_inputs, trained_weight_mismatches)
from tinyref import GPTStyleTransformer
from tinyref.cli import main
from tinyref.train.checkpoint import MODEL_FILE, OPTIMIZER_FILE, STATE_FILE
from tinyref.runtime.devices import dtype_support, probe_device, use_device
from tinyref.optim import decayed_keys, lr_at, make_optimizer
from tinyref.verify.tolerances import FLOAT32_GRAD, compare, mixed_precision_grad, round_to
from tinyref.train import TrainOptions, TrainStep, train
from tinyref.train.step import DEFAULT_LOSS_SCALE, overwrite

K = 2                                   # micro-batches per optimizer step
CLIP = 0.5                              # below the test gradients' norm (~1-3): clipping is active
HYPER = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8)
DECAY = 0.1
SCHEDULE = dict(lr=1e-2, warmup_steps=2, total_steps=5, schedule="cosine", min_lr=1e-3)
STEPS = 4


def test_a_host_array_is_written_into_the_device_buffer_in_place(backend):
    """TrainStep.from_host's way in, on each device: mapped memory where the device's buffers are host memory
    (tinygrad's CPU devices), a copy elsewhere (OpenCL, GPUs). The same buffer, so a captured jit sees it."""
    if (reason := probe_device(backend)) is not None:
        pytest.skip(f"{backend} not available here: {reason}")
    with use_device(backend):
        t = Tensor.zeros(2, 3, dtype=dtypes.int32).contiguous().realize()
        buffer = t.uop.buffer
        overwrite(t, np.arange(6, dtype=np.int32).reshape(2, 3))
        assert t.uop.buffer is buffer and t.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]


# --- tinyref's TrainStep vs the oracle ----------------------------------------------------------------

@functools.cache
def case(dtype: str = "float32"):
    """Config, start weights (exact in float32) and four steps' worth of k micro-batches (k, B, T):
    TIED for float32, the smaller UNTIED for float16 (its own kernels; fewer to compile)."""
    cfg, (B, T) = (TIED, TIED_BT) if dtype == "float32" else (UNTIED, UNTIED_BT)
    rng = np.random.default_rng(11)
    params = float32_exact(oracle.init_params(as_namespace(cfg), rng, scale=0.3))
    batches = [tuple(a.reshape(K, B, T) for a in random_inputs(rng, cfg, K * B, T)) for _ in range(STEPS)]
    return cfg, params, batches


def as_tensors(x, y):
    return Tensor(x, dtype=dtypes.int32), Tensor(y, dtype=dtypes.int32)


@functools.cache
def tinyref_run(dtype: str = "float32"):
    """TrainStep on case(dtype): the first step called directly (its gradients stay readable), the
    others through TinyJit (capture, replay, replay). float32 clips at CLIP; float16 does not clip.
    Returns the first step's gradients and norm, the final weights and the decayed keys."""
    cfg, params, batches = case(dtype)
    model = GPTStyleTransformer(cfg)
    load_params(model, params)
    clip = CLIP if dtype == "float32" else 0.0
    step = TrainStep(model, make_optimizer(model, weight_decay=DECAY, **HYPER), K, clip, dtype)
    lr0 = Tensor([lr_at(0, **SCHEDULE)], dtype=dtypes.float32)
    norm = step.step(*as_tensors(*batches[0]), lr0).tolist()[1]
    grads = {k: t.grad.numpy().astype(np.float64) for k, t in get_state_dict(model).items()}
    for s in range(1, STEPS if dtype == "float32" else 1):
        step.from_host(*batches[s], lr_at(s, **SCHEDULE))     # as train() feeds it: into the same buffers each step
    after = {k: t.numpy().astype(np.float64) for k, t in get_state_dict(model).items()}
    return grads, norm, after, frozenset(decayed_keys(model))


def oracle_gradients(cfg, params, x, y, accumulate=oracle.accumulate_gradients, clip=0.0):
    """What TrainStep should produce: k micro-batch gradients combined by ``accumulate``, the norm, then clipped."""
    micro = [oracle_forward_backward(params, as_namespace(cfg), x[i], y[i])[2] for i in range(len(x))]
    grads = accumulate(micro)
    clipped, norm = oracle.clip_grad_norm(grads, clip if clip else np.inf)
    return clipped, norm


def summed(micro):
    """Planted bug: micro-batch gradients added up instead of averaged."""
    return {k: sum(g[k] for g in micro) for k in micro[0]}


def gradient_mismatches(actual, actual_norm, expected, expected_norm, tol=FLOAT32_GRAD):
    found = [compare(f"grad {k}", actual[k], expected[k], tol) for k in expected]
    return [m for m in found + [compare("gradient norm", actual_norm, expected_norm, tol)] if m]


# --8<-- [start:test_gradients]
def test_accumulated_and_clipped_gradient_matches_oracle():
    """k micro-batches of (2, 8) give the gradient of the mean loss, i.e. of one (2k, 8) batch; its
    norm (before clipping) and the clipped gradient match the oracle. The clipped gradient times
    norm / CLIP is the unclipped one, so together they pin the accumulated gradient element by element."""
    cfg, params, batches = case()
    grads, norm = tinyref_run()[:2]
    assert norm > CLIP, "clipping is not active: the test would not see it"
    assert_no_mismatch(gradient_mismatches(grads, norm, *oracle_gradients(cfg, params, *batches[0], clip=CLIP)))
    assert gradient_mismatches(grads, norm, *oracle_gradients(cfg, params, *batches[0], accumulate=summed, clip=CLIP)), \
        "negative control: summing instead of averaging went unnoticed"
    assert gradient_mismatches(grads, norm, *oracle_gradients(cfg, params, *batches[0])), \
        "negative control: skipping the clipping went unnoticed"
# --8<-- [end:test_gradients]


# --8<-- [start:test_mixed_precision]
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_gradient_matches_oracle(default_backend, dtype):
    """16-bit forward/backward (float16 with loss scaling) on a rounded copy, float32 master gradients,
    against the float64 oracle on the rounded weights; tolerance from tinyref/verify/tolerances.py. Each
    backend runs the formats its renderer has (clang: float16, LLVM: bfloat16)."""
    reason = dtype_support(default_backend, dtype)
    if reason:
        pytest.skip(reason)
    cfg, params, batches = case(dtype)
    rounded = {k: round_to(v, dtype) for k, v in params.items()}
    want, want_norm = oracle_gradients(cfg, rounded, *batches[0])
    grads, norm = tinyref_run(dtype)[:2]
    tol = mixed_precision_grad(dtype, cfg)
    assert_no_mismatch(gradient_mismatches(grads, norm, want, want_norm, tol))
    scale = DEFAULT_LOSS_SCALE[dtype] if DEFAULT_LOSS_SCALE[dtype] != 1 else 2.0   # bfloat16 has no loss scale
    assert gradient_mismatches({k: g * scale for k, g in grads.items()}, norm * scale, want, want_norm, tol), \
        f"negative control: gradients {scale:g}x too large (a loss scale left in) went unnoticed"
# --8<-- [end:test_mixed_precision]


def oracle_after_steps(decay_all=False, schedule=SCHEDULE, stale_batch=False):
    cfg, params, batches = case()
    batches = batches[:2] + [batches[1]] * (len(batches) - 2) if stale_batch else batches
    decayed = tinyref_run()[3]
    groups = [{k: v for k, v in params.items() if decay_all or k in decayed},
              {k: v for k, v in params.items() if not (decay_all or k in decayed)}]
    states = [None, None]
    for s, (x, y) in enumerate(batches):
        grads = oracle_gradients(cfg, {**groups[0], **groups[1]}, x, y, clip=CLIP)[0]
        hyper = {**HYPER, "lr": oracle.lr_at(s, **schedule)}
        for i, wd in enumerate((DECAY, 0.0)):
            if groups[i]:
                groups[i], states[i] = oracle.adamw_step(groups[i], grads, states[i], weight_decay=wd, **hyper)
    return {**groups[0], **groups[1]}


def test_training_steps_match_oracle():
    """Four steps (direct, then TinyJit's capture and two replays on host batches written into its input
    buffers): schedule, clipping, accumulation and weight decay on matrices only, against the oracle's chain of
    the same steps."""
    after = tinyref_run()[2]
    assert_no_mismatch(trained_weight_mismatches(after, oracle_after_steps(), f"after {STEPS} steps"))
    assert trained_weight_mismatches(after, oracle_after_steps(decay_all=True)), \
        "negative control: decaying biases and LayerNorm gains too went unnoticed"
    assert trained_weight_mismatches(after, oracle_after_steps(schedule={**SCHEDULE, "warmup_steps": 0})), \
        "negative control: skipping the warm-up went unnoticed"
    assert trained_weight_mismatches(after, oracle_after_steps(stale_batch=True)), \
        "negative control: replays that reread the capture's batch went unnoticed"


def test_a_llama_model_decays_its_matrices_only():
    """Weight decay reaches the gate and the separate head (matrices) and never an RMSNorm gain."""
    from helpers import LLAMA
    matrices = {"wte.weight", "lm_head.weight"} | {f"h.{i}.{m}.weight" for i in range(LLAMA.n_layers) for m in (
        "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_gate", "mlp.c_proj")}
    model = GPTStyleTransformer(LLAMA)
    assert set(decayed_keys(model)) == matrices
    assert set(get_state_dict(model)) - matrices == {"ln_f.weight"} | {f"h.{i}.ln_{j}.weight" for i in range(2) for j in (1, 2)}


# --- the training loop: bit-exact resume, metrics, plot -------------------------------------------

WORDS = ["abc", "bad", "cab", "dace", "fee", "gig", "hide", "head", "ice"]    # 9 letters + space + newline = 11


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS, 8)) + "\n" for _ in range(200)))
    return path


def options(data, out, **kw):
    """TIED's shape, trained with the step settings test_training_steps_match_oracle checks (same compiled kernels)."""
    return TrainOptions(data=str(data), out=str(out), tokenizer="char", context_length=TIED.context_length,
                        d_model=TIED.d_model, n_heads=TIED.n_heads, n_layers=TIED.n_layers, d_ff=TIED.d_ff,
                        batch_size=TIED_BT[0], accum_steps=K, grad_clip=CLIP, weight_decay=DECAY, lr=1e-2,
                        warmup_steps=3, eval_every=5, eval_batches=2, **kw)


@pytest.fixture(scope="module")
def runs(text_file, tmp_path_factory):
    """20 steps straight; 10 steps of the same 20-step schedule, then resumed to 20; and a copy of
    the 10-step run for the negative control."""
    base = tmp_path_factory.mktemp("runs")
    quiet = dict(log=lambda s: None, progress=False)
    straight = train(options(text_file, base / "straight", steps=20, plot=str(base / "loss.png")), **quiet)
    train(options(text_file, base / "resumed", steps=10, decay_steps=20), **quiet)
    shutil.copytree(base / "resumed", base / "control")
    resumed = train(TrainOptions(resume=str(base / "resumed"), steps=20), **quiet)
    return base, straight, resumed


# --8<-- [start:test_resume]
def test_resume_is_bit_exact(runs):
    base, straight, resumed = runs
    a, b = straight.checkpoint, resumed.checkpoint
    assert straight.model.config == TIED
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs after resuming"
    sa, sb = (json.loads((p / STATE_FILE).read_text()) for p in (a, b))
    assert sa["step"] == sb["step"] == 20 and sa["sampler"] == sb["sampler"]
    losses = [[r["train_loss"] for r in run.metrics if "train_loss" in r] for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 20
# --8<-- [end:test_resume]


def test_resume_check_sees_a_restarted_data_order(runs):
    """Negative control: the same 10 + 10 steps with the sampler restarted from its seed differ."""
    base, straight, _ = runs
    state_file = base / "control" / "checkpoint" / STATE_FILE
    state = json.loads(state_file.read_text())
    state["sampler"] = np.random.default_rng(state["options"]["seed"]).bit_generator.state
    state_file.write_text(json.dumps(state))
    other = train(TrainOptions(resume=str(base / "control"), steps=20), log=lambda s: None, progress=False)
    assert (other.checkpoint / MODEL_FILE).read_bytes() != (straight.checkpoint / MODEL_FILE).read_bytes()


def test_metrics_and_plot(runs):
    base, straight, _ = runs
    records = [json.loads(line) for line in (base / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 21))
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [0, 5, 10, 15, 20]
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"])) for r in val)
    assert val[-1]["val_loss"] < val[0]["val_loss"], "validation loss did not fall"
    assert (base / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bad input on the command line ----------------------------------------------------------------

def tinyref(*args) -> subprocess.CompletedProcess:
    """``tinyref train ARGS`` through the command's own ``main`` in this process (no interpreter and tinygrad
    import per case): its exit status and what it wrote; an exception other than the command's errors escapes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(["train", *map(str, args)])
        except SystemExit as e:     # argparse's usage errors exit from inside parse_args
            status = e.code
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, status, *words):
    err = proc.stderr.strip()
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    assert err.startswith("tinyref: error: ") and "\n" not in err and "Traceback" not in proc.stderr, err
    for w in words:
        assert w in err, err


BAD_CLI = {
    "missing data": (lambda d: ["--data", d / "nope.txt", "--out", d / "o"], 1, "does not exist"),
    "binary data": (lambda d: ["--data", d / "bin.txt", "--out", d / "o"], 1, "NUL byte"),
    "non-utf8 data": (lambda d: ["--data", d / "latin1.txt", "--out", d / "o"], 1, "byte offset 3"),
    "val fraction": (lambda d: ["--data", d / "ok.txt", "--val-fraction", "1.5", "--out", d / "o"], 2, "--val-fraction"),
    "unknown tokenizer": (lambda d: ["--data", d / "ok.txt", "--tokenizer", "sentencepiece"], 2, "--tokenizer"),
    "unwritable out": (lambda d: ["--data", d / "ok.txt", "--out", d / "ok.txt" / "sub"], 1, "cannot write to --out"),
    "steps without data": (lambda d: ["--steps", "5"], 2, "--steps", "need --data"),
}


@pytest.mark.parametrize("case_name", BAD_CLI)
def test_bad_input_is_one_line_error(tmp_path, case_name):
    (tmp_path / "bin.txt").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("some text\n" * 100)
    args, status, *words = BAD_CLI[case_name]
    assert_one_line_error(tinyref(*args(tmp_path)), status, *words)
    assert not (tmp_path / "o").exists()


def test_resuming_into_another_shape_changes_nothing(runs):
    base = runs[0]
    ckpt = base / "straight" / "checkpoint"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert_one_line_error(tinyref("--resume", base / "straight", "--d-model", 32, "--steps", 30), 2, "--d-model 32", "16")
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


# --- the model variants: --activation, --no-bias ----------------------------------------------------

def test_variant_flags_reach_the_options_and_a_resumed_run_keeps_them():
    from tinyref.cli import build_parser
    from tinyref.errors import UsageError
    from tinyref.train.options import resolve_options
    args = build_parser().parse_args(["train", "--data", "x.txt", "--activation", "gelu", "--no-bias"])
    assert (args.activation, args.bias) == ("gelu", False)
    args = build_parser().parse_args(["train", "--data", "x.txt"])
    assert (args.activation, args.bias) == (None, None)
    fresh = resolve_options(TrainOptions(data="x.txt"), None)
    assert (fresh.activation, fresh.bias) == ("gelu_tanh", True)
    old_run = {k: v for k, v in vars(fresh).items() if k not in ("activation", "bias")}   # saved before the fields
    assert (resolve_options(TrainOptions(), old_run).activation, resolve_options(TrainOptions(), old_run).bias) == (
        "gelu_tanh", True)
    with pytest.raises(UsageError, match="--activation gelu does not match the checkpoint's gelu_tanh"):
        resolve_options(TrainOptions(activation="gelu"), old_run)


def test_training_a_bias_free_exact_gelu_model_saves_its_variant(text_file, tmp_path):
    """nanoGPT's variant trains, and its checkpoint says so: config.json fields, no .bias weights."""
    from tinyref.train.checkpoint import CONFIG_FILE, load_checkpoint
    run = train(options(text_file, tmp_path / "nanogpt", steps=2, activation="gelu", bias=False),
                log=lambda s: None, progress=False)
    saved = json.loads((run.checkpoint / CONFIG_FILE).read_text())
    assert (saved["activation"], saved["bias"]) == ("gelu", False)
    ckpt = load_checkpoint(run.checkpoint)
    assert (ckpt.model.config.activation, ckpt.model.config.bias) == ("gelu", False)
    assert not [k for k in get_state_dict(ckpt.model) if k.endswith(".bias")]


# --- the Llama family: --model llama and the per-field flags ------------------------------------------

def test_the_llama_preset_and_its_flags_reach_the_config():
    from tinyref import GPTConfig
    from tinyref.cli import build_parser
    from tinyref.errors import UsageError
    from tinyref.train.options import model_config, resolve_options
    args = build_parser().parse_args(["train", "--data", "x.txt", "--model", "llama", "--positions", "learned",
                                      "--rope-theta", "500", "--rope-style", "interleaved", "--norm", "layernorm",
                                      "--activation", "gelu", "--no-gated-mlp", "--n-kv-heads", "2", "--bias",
                                      "--tie-embeddings"])
    assert (args.model, args.positions, args.rope_theta, args.rope_style, args.norm, args.activation, args.gated_mlp,
            args.n_kv_heads, args.bias, args.tie_embeddings) == ("llama", "learned", 500.0, "interleaved", "layernorm",
                                                                "gelu", False, 2, True, True)
    sizes = dict(vocab_size=1024, context_length=64, d_model=128, n_heads=4, n_layers=4)   # TRAIN_DEFAULTS' sizes
    resolved = lambda **kw: model_config(resolve_options(TrainOptions(data="x.txt", **kw), None), 1024)  # noqa: E731
    assert resolved() == GPTConfig(**sizes)                                   # --model gpt2, the default: GPT-2
    assert resolved(model="llama", n_kv_heads=2) == GPTConfig.llama(**sizes, n_kv_heads=2)
    assert resolved(model="llama", rope_style="interleaved", gated_mlp=False) == GPTConfig.llama(
        **sizes, rope_style="interleaved", gated_mlp=False)                   # a flag replaces one field of the preset
    assert resolved(positions="rope", norm="rmsnorm") == GPTConfig(**sizes, positions="rope", norm="rmsnorm")
    llama_run = vars(resolve_options(TrainOptions(data="x.txt", model="llama"), None))
    assert llama_run["n_kv_heads"] == 4                                       # saved resolved: resume compares ints
    with pytest.raises(UsageError, match="--n-kv-heads 2 does not match the checkpoint's 4"):
        resolve_options(TrainOptions(n_kv_heads=2), llama_run)
    old_run = {k: v for k, v in vars(resolve_options(TrainOptions(data="x.txt"), None)).items()
               if k not in ("model", "tie_embeddings", "positions", "rope_theta", "rope_style", "norm", "gated_mlp",
                            "n_kv_heads")}                                    # saved before the Llama fields
    assert model_config(resolve_options(TrainOptions(), old_run), 1024) == GPTConfig(**sizes)
    with pytest.raises(UsageError, match="--model llama does not match the checkpoint's gpt2"):
        resolve_options(TrainOptions(model="llama"), old_run)


def test_a_llama_run_saves_every_field_resumes_and_generates_with_the_cache(text_file, tmp_path, capsys, monkeypatch):
    from helpers import cli
    from tinyref import GPTConfig
    from tinyref.generation import sampling
    from tinyref.train.checkpoint import CONFIG_FILE, load_checkpoint
    quiet = dict(log=lambda s: None, progress=False)
    run = train(options(text_file, tmp_path / "llama", steps=2, model="llama", n_kv_heads=2), **quiet)
    expected = GPTConfig.llama(run.tokenizer.vocab_size, TIED.context_length, TIED.d_model, TIED.n_heads, TIED.n_layers,
                               n_kv_heads=2, d_ff=TIED.d_ff)
    assert json.loads((run.checkpoint / CONFIG_FILE).read_text()) == expected.to_dict()
    resumed = train(TrainOptions(resume=str(tmp_path / "llama"), steps=3), **quiet)
    assert resumed.step == 3 and resumed.model.config == expected
    ckpt = load_checkpoint(resumed.checkpoint)
    params = {k: t.numpy().astype(np.float64) for k, t in get_state_dict(ckpt.model).items()}
    assert "wpe.weight" not in params and "h.1.mlp.c_gate.weight" in params

    decoders, make_decoder = [], sampling.make_decoder

    def recorded(model, use_cache=True):
        decoders.append(make_decoder(model, use_cache))
        return decoders[-1]
    monkeypatch.setattr(sampling, "make_decoder", recorded)
    ids = ckpt.tokenizer.encode(" ".join(WORDS[:2]))
    texts = []
    for extra in ((), ("--no-cache",)):
        status, out, err = cli(capsys, "generate", "--checkpoint", tmp_path / "llama", "--prompt", ckpt.tokenizer.decode(ids),
                               "--max-new-tokens", 12, "--temperature", 0, *extra)
        assert status == 0, err
        texts.append(out.rstrip("\n"))
    assert [type(d).__name__ for d in decoders] == ["KVCache", "RecomputeDecoder"]
    for _ in range(12):                                       # the oracle's greedy continuation, sliding past the context
        window = np.array([ids[-expected.context_length:]])
        ids.append(int(np.argmax(oracle.gpt_forward(window, params, as_namespace(expected))[0][0, -1])))
    assert texts == [ckpt.tokenizer.decode(ids)] * 2
