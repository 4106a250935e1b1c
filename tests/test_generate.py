"""Generation: the sampling filters as properties, the sampler's distribution (chi-square), greedy decoding
against the oracle, and the generate / attention / eval commands on a checkpoint made here."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import oracle
from tests.helpers import LLAMA, TIED, as_namespace, cli, float32_exact, model_with
from tests.strategies import seeds
from tinyref import attention_maps, evaluate
from tinyref.train.checkpoint import save_checkpoint
from tinyref.generation.evaluation import eval_windows
from tinyref.generation.text_metrics import text_quality
from tinyref.generation.sampling import (generate_ids, make_decoder, sample_token, sampling_distribution, softmax, top_k_filter,
                              top_p_filter)
from tinyref.train.tokenizer import CharTokenizer
from tinyref.verify.tolerances import FLOAT32, assert_close

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("generation")     # with test_kvcache.py: one worker compiles TIED once

# Logit vectors with frequent ties (values from a small set) and without (any float).
logit_vectors = st.lists(st.sampled_from([-2.0, 0.0, 0.5, 3.0]) | st.floats(-20, 20), min_size=1, max_size=16).map(np.array)


# --- the filters ----------------------------------------------------------------------------------

# --8<-- [start:filter_properties]
@given(logits=logit_vectors, k=st.integers(1, 20))
def test_top_k_keeps_exactly_k_of_the_largest(logits, k):
    out = top_k_filter(logits, k)
    kept = np.isfinite(out)
    assert kept.sum() == min(k, len(logits))                   # exactly k, even with ties at the k-th value
    assert np.array_equal(out[kept], logits[kept])             # kept logits are unchanged
    if not kept.all():
        assert logits[kept].min() >= logits[~kept].max()       # nothing dropped beats anything kept
        tied = logits == logits[kept].min()                    # ties at the k-th value: the lower token ids stay
        if (tied & ~kept).any():
            assert np.flatnonzero(tied & kept).max() < np.flatnonzero(tied & ~kept).min()


@given(logits=logit_vectors, p=st.floats(0, 1, exclude_min=True))
def test_top_p_keeps_the_smallest_most_likely_set_reaching_p(logits, p):
    probs, kept = softmax(logits), np.isfinite(top_p_filter(logits, p))
    mass, weakest = probs[kept].sum(), probs[kept].min()
    assert kept[np.argmax(logits)]                             # the most likely token always stays
    assert mass >= p - 1e-9 or kept.all()                      # the set reaches p (all tokens: the most there is)
    assert mass - weakest < p + 1e-9                           # and no smaller set of the best tokens does
    if not kept.all():
        assert weakest >= probs[~kept].max()                   # it is made of the most likely tokens


@given(logits=logit_vectors, seed=seeds)
def test_temperature_towards_zero_becomes_argmax(logits, seed):
    top = np.sort(logits)[::-1]
    assume(len(logits) == 1 or top[0] - top[1] > 0.05)         # a unique maximum
    best = int(np.argmax(logits))
    assert sample_token(logits, np.random.default_rng(seed), temperature=0) == best
    assert np.array_equal(sampling_distribution(logits, 0), np.eye(len(logits))[best])
    mass = [sampling_distribution(logits, t)[best] for t in (1.0, 0.1, 1e-3)]
    assert mass[0] <= mass[1] + 1e-12 <= mass[2] + 2e-12 and mass[2] > 1 - 1e-12   # -> 1 as t -> 0
# --8<-- [end:filter_properties]


# --- the sampler draws from the filtered softmax -----------------------------------------------------

def chi_square_p_value(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square(df), exactly (integer df): the closed forms of the
    regularised upper incomplete gamma Q(df/2, x/2) for whole and half-integer df/2."""
    x = statistic / 2
    if df % 2 == 0:
        return math.exp(-x) * sum(x ** i / math.factorial(i) for i in range(df // 2))
    return math.erfc(math.sqrt(x)) + math.exp(-x) * sum(x ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (df + 1) // 2))


def test_chi_square_p_values_match_published_tables():
    """The 0.1 % critical values of the chi-square distribution (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.4)."""
    for df, critical in ((1, 10.828), (2, 13.816), (3, 16.266), (4, 18.467), (5, 20.515), (10, 29.588)):
        assert abs(chi_square_p_value(critical, df) - 1e-3) < 2e-6, df


def goodness_of_fit(samples: np.ndarray, probs: np.ndarray) -> float:
    """p-value of Pearson's chi-square test that ``samples`` were drawn from ``probs``; 0 if any sample
    falls where probs is 0 (a filtered-out token must never be drawn)."""
    counts = np.bincount(samples, minlength=len(probs))
    support = probs > 0
    if counts[~support].any():
        return 0.0
    expected = len(samples) * probs[support]
    statistic = float(((counts[support] - expected) ** 2 / expected).sum())
    return chi_square_p_value(statistic, int(support.sum()) - 1) if support.sum() > 1 else 1.0


ALPHA = 1e-3           # significance level: a correct sampler fails a given fixed-seed case with probability 0.1 %
DRAWS = 4000           # every kept token is expected >= 5 times in each case below (checked in the test)
LOGITS = np.array([2.0, 1.5, 1.5, 0.8, 0.3, 0.0, -0.4, -1.0, -2.5, -3.0])
SETTINGS = [dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
            dict(temperature=1.0, top_k=6, top_p=0.9)]


def draws(rng: np.random.Generator, **sampling) -> np.ndarray:
    return np.array([sample_token(LOGITS, rng, **sampling) for _ in range(DRAWS)])


@pytest.mark.parametrize("sampling", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_samples_follow_the_filtered_softmax(sampling):
    probs = sampling_distribution(LOGITS, **sampling)
    assert (DRAWS * probs[probs > 0]).min() >= 5, "too few draws for the chi-square approximation"
    p_value = goodness_of_fit(draws(np.random.default_rng(0), **sampling), probs)
    assert p_value >= ALPHA, f"{sampling}: samples do not follow the filtered softmax (p = {p_value:.2g} < {ALPHA})"


def test_goodness_of_fit_rejects_a_wrong_distribution():
    """Negative controls: temperature 1 samples tested against temperature 0.8, and unfiltered samples
    tested against top-k 5, are both rejected at the same seed and level."""
    rng = np.random.default_rng(0)
    assert goodness_of_fit(draws(rng, temperature=1.0), sampling_distribution(LOGITS, 0.8)) < ALPHA
    assert goodness_of_fit(draws(rng, temperature=1.0), sampling_distribution(LOGITS, 1.0, top_k=5)) < ALPHA


# --- decoding on the fixed TIED shape --------------------------------------------------------------

SYMBOLS = "abcdefghij "                                   # 11 symbols = TIED.vocab_size
EVAL_TEXT = "a bad cab hid a big jade fig each face had a chief hedge "      # 57 chars: 8 windows, the last short


def with_oracle_weights(cfg):
    """A model of ``cfg`` with oracle weights from a fixed seed (float32-exact, so the oracle sees them too)."""
    params = float32_exact(oracle.init_params(as_namespace(cfg), np.random.default_rng(0)))
    return model_with(cfg, params), params


@pytest.fixture(scope="module")
def tied():
    return with_oracle_weights(TIED)


@pytest.fixture(scope="module")
def llama():
    return with_oracle_weights(LLAMA)


def model_config(name: str):
    return {"tied": TIED, "llama": LLAMA}[name]


def oracle_greedy(params, prompt: list[int], n: int, cfg=TIED) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        window = ids[-cfg.context_length:]
        ids.append(int(np.argmax(oracle.gpt_forward(np.array([window]), params, as_namespace(cfg))[0][0, -1])))
    return ids


@pytest.mark.parametrize("name", ["tied", "llama"])
def test_greedy_generation_matches_the_oracle_and_slides(request, name):
    (model, params), cfg = request.getfixturevalue(name), model_config(name)
    prompt, n = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], 12                 # 10 > context_length 8: cropped
    notes = []
    expected = oracle_greedy(params, prompt[-cfg.context_length:], n, cfg)
    for use_cache in (True, False):
        got = generate_ids(make_decoder(model, use_cache), prompt, n, temperature=0, log=notes.append)
        assert got == expected, f"use_cache={use_cache}"
    assert len(notes) == 2 and "keeping its last 8" in notes[0]      # said once per call


def test_same_seed_same_tokens_with_and_without_the_cache(tied):
    model, _ = tied
    runs = {(seed, cache): generate_ids(make_decoder(model, cache), [1, 2], 14, temperature=1.0, top_k=8, seed=seed)
            for seed in (1, 2) for cache in (True, False)}
    assert runs[1, True] == runs[1, False] and runs[2, True] == runs[2, False]
    assert runs[1, True] != runs[2, True]


@pytest.mark.parametrize("name", ["tied", "llama"])
def test_attention_maps_equal_the_oracle_attention(request, name):
    (model, params), cfg = request.getfixturevalue(name), model_config(name)
    ids = [0, 3, 10, 7, 7, 2, 9, 1]
    _, cache = oracle.gpt_forward(np.array([ids]), params, as_namespace(cfg))
    maps = attention_maps(model, ids)
    assert len(maps) == cfg.n_layers and maps[0].shape == (cfg.n_heads, len(ids), len(ids))
    for i, (got, block) in enumerate(zip(maps, cache["blocks"])):
        assert_close(f"layer {i} attention", got, block[1]["att"][0], FLOAT32)
        assert np.all(got[:, np.triu_indices(len(ids), 1)[0], np.triu_indices(len(ids), 1)[1]] == 0)   # exact zeros


def oracle_perplexity(params, ids: list[int], cfg=TIED) -> float:
    """exp(mean loss) over non-overlapping windows, computed independently of tinyref.generation.evaluation."""
    T, total, count = cfg.context_length, 0.0, 0
    for s in range(0, len(ids) - 1, T):
        x, y = ids[s:s + T], ids[s + 1:s + T + 1]
        x = x[:len(y)]
        loss, _ = oracle.cross_entropy_forward(oracle.gpt_forward(np.array([x]), params, as_namespace(cfg))[0], np.array([y]))
        total, count = total + loss * len(y), count + len(y)
    return math.exp(total / count)


def test_eval_windows_predict_every_token_once():
    ids = np.arange(30)
    inputs, targets, mask = eval_windows(ids, 8)
    assert inputs.shape == (4, 8) and mask.sum() == 29
    assert np.array_equal(np.sort(targets[mask == 1]), ids[1:])
    assert np.array_equal(targets[mask == 1], inputs[mask == 1] + 1)


# --- the commands, on a checkpoint made here -------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tied, tmp_path_factory):
    model, _ = tied
    tokenizer = CharTokenizer.train([SYMBOLS])
    assert tokenizer.vocab_size == TIED.vocab_size
    return save_checkpoint(tmp_path_factory.mktemp("gen") / "ckpt", model, tokenizer=tokenizer, state={"step": 0})


def generate_text(capsys, checkpoint, *extra):
    status, out, err = cli(capsys, "generate", "--checkpoint", checkpoint, "--prompt", "bad cab", "--max-new-tokens", 16, *extra)
    assert status == 0, err
    assert "device: " in err
    return out.rstrip("\n")


def test_generate_is_deterministic_per_seed(capsys, checkpoint):
    first = generate_text(capsys, checkpoint, "--seed", 1, "--top-p", 0.95)
    assert first.startswith("bad cab") and len(first) == len("bad cab") + 16
    assert generate_text(capsys, checkpoint, "--seed", 1, "--top-p", 0.95) == first
    assert generate_text(capsys, checkpoint, "--seed", 1, "--top-p", 0.95, "--no-cache") == first   # cache: same text
    assert generate_text(capsys, checkpoint, "--seed", 2, "--top-p", 0.95) != first


def test_generate_greedy_crops_a_long_prompt_once(capsys, checkpoint, tied):
    status, out, err = cli(capsys, "generate", "--checkpoint", checkpoint, "--prompt", "abcdefghij", "--max-new-tokens", 5,
                           "--temperature", 0)
    assert status == 0 and err.count("keeping its last 8") == 1, err
    tokenizer = CharTokenizer.train([SYMBOLS])
    assert out.rstrip("\n") == tokenizer.decode(oracle_greedy(tied[1], tokenizer.encode("cdefghij"), 5))


def test_attention_writes_a_png(capsys, checkpoint, tmp_path):
    for extra in ((), ("--layer", 1, "--head", 2)):
        out = tmp_path / f"att{len(extra)}.png"
        status, stdout, err = cli(capsys, "attention", "--checkpoint", checkpoint, "--text", "a big fig", "--out", out, *extra)
        assert status == 0, err
        assert "device: " in stdout and "showing its last 8" in stdout
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_eval_prints_the_oracles_perplexity(capsys, checkpoint, tied, tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(EVAL_TEXT)
    status, out, err = cli(capsys, "eval", "--checkpoint", checkpoint, "--data", data, "--batch-size", 2)
    assert status == 0, err
    assert "device: " in out
    printed = float(next(line for line in out.splitlines() if line.startswith("perplexity:")).split()[1])
    ids = CharTokenizer.train([SYMBOLS]).encode(EVAL_TEXT)
    expected = oracle_perplexity(tied[1], ids)
    assert_close("perplexity", printed, expected, FLOAT32)
    assert_close("perplexity (Python API)", evaluate(tied[0], ids, batch_size=2)["perplexity"], expected, FLOAT32)


def test_evaluate_a_llama_model_gives_the_oracles_perplexity(llama):
    ids = CharTokenizer.train([SYMBOLS]).encode(EVAL_TEXT)
    assert_close("perplexity", evaluate(llama[0], ids, batch_size=2)["perplexity"],
                 oracle_perplexity(llama[1], ids, LLAMA), FLOAT32)


def eval_json(capsys, checkpoint, data, *extra) -> dict:
    status, out, err = cli(capsys, "eval", "--checkpoint", checkpoint, "--data", data, "--batch-size", 2, "--json", *extra)
    assert status == 0, err
    assert "device: " in err
    return json.loads(out)


def test_eval_samples_are_reproducible_and_measured_against_the_text(capsys, checkpoint, tied, tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(EVAL_TEXT)
    first = eval_json(capsys, checkpoint, data, "--samples", 3)
    assert eval_json(capsys, checkpoint, data, "--samples", 3) == first          # seeded: the same JSON
    other = eval_json(capsys, checkpoint, data, "--samples", 3, "--seed", 1)
    assert other["samples"]["generated"]["texts"] != first["samples"]["generated"]["texts"]
    s = first["samples"]
    # context 8: prompts of 4 characters at 0, 24, 49 (spread over the 57 - 8 possible starts); the
    # held-out continuations are the next 4 characters of the text
    assert (s["prompt_tokens"], s["new_tokens"], s["count"]) == (4, 4, 3)
    assert s["held_out"]["texts"] == [EVAL_TEXT[4:8], EVAL_TEXT[28:32], EVAL_TEXT[53:57]]
    assert all(len(t) == 4 and set(t) <= set(SYMBOLS) for t in s["generated"]["texts"])
    for part in ("generated", "held_out"):
        assert s[part] == {**text_quality(s[part]["texts"]), "texts": s[part]["texts"]}
    # bits per character: the oracle's summed loss over the 56 predictions, in bits, over 57 characters
    ids = CharTokenizer.train([SYMBOLS]).encode(EVAL_TEXT)
    expected = math.log(oracle_perplexity(tied[1], ids)) * 56 / math.log(2) / 57
    assert_close("bits per character", first["bits_per_character"], expected, FLOAT32)
    status, out, _ = cli(capsys, "eval", "--checkpoint", checkpoint, "--data", data, "--samples", 3)
    assert status == 0 and "bits per character: " in out and "repetition-2" in out and "held-out" in out


# --- bad input: one line, no traceback -------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(checkpoint, tmp_path_factory):
    """Copies of the checkpoint, each with one piece missing or corrupt."""
    import shutil
    root = tmp_path_factory.mktemp("broken")
    cases = {"no-model": lambda d: (d / "model.safetensors").unlink(),
             "truncated-model": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:200]),
             "bad-config": lambda d: (d / "config.json").write_text("{not json"),
             "bad-tokenizer": lambda d: (d / "tokenizer.json").write_text('{"format": "tinyref-tokenizer", "type": "char"}'),
             "no-tokenizer": lambda d: (d / "tokenizer.json").unlink()}
    for name, damage in cases.items():
        shutil.copytree(checkpoint, root / name)
        damage(root / name)
    return root


BAD = {
    "missing checkpoint": (["--checkpoint", "{root}/nowhere"], 1),
    "no model.safetensors": (["--checkpoint", "{root}/no-model"], 1),
    "truncated model.safetensors": (["--checkpoint", "{root}/truncated-model"], 1),
    "corrupt config.json": (["--checkpoint", "{root}/bad-config"], 1),
    "corrupt tokenizer.json": (["--checkpoint", "{root}/bad-tokenizer"], 1),
    "no tokenizer.json": (["--checkpoint", "{root}/no-tokenizer"], 1),
    "negative max-new-tokens": (["--checkpoint", "{ckpt}", "--max-new-tokens", "-1"], 2),
    "negative temperature": (["--checkpoint", "{ckpt}", "--temperature", "-0.5"], 2),
    "top-p 0": (["--checkpoint", "{ckpt}", "--top-p", "0"], 2),
    "top-p above 1": (["--checkpoint", "{ckpt}", "--top-p", "1.5"], 2),
    "top-k 0": (["--checkpoint", "{ckpt}", "--top-k", "0"], 2),
    "prompt outside the tokenizer": (["--checkpoint", "{ckpt}", "--prompt", "XYZ"], 2),
    "non-numeric max-new-tokens": (["--checkpoint", "{ckpt}", "--max-new-tokens", "many"], 2),
}


@pytest.mark.parametrize("case", BAD)
def test_generate_bad_input_is_one_line(capsys, checkpoint, broken, case):
    argv, expected_status = BAD[case]
    argv = [a.format(root=broken, ckpt=checkpoint) for a in argv]
    if "--prompt" not in argv:
        argv += ["--prompt", "abc"]
    status, _, err = cli(capsys, "generate", *argv)
    lines = err.strip().splitlines()
    assert status == expected_status, err
    assert lines[-1].startswith("tinyref: error: ") and not any(l.startswith("tinyref: error") for l in lines[:-1])
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, expected_status", [
    (["attention", "--text", "abc", "--out", "{tmp}/a.png", "--layer", "2"], 2),
    (["attention", "--text", "abc", "--out", "{tmp}/a.png", "--head", "4"], 2),
    (["attention", "--text", "abc", "--out", "{tmp}/a.jpg"], 2),
    (["eval", "--data", "{tmp}/missing.txt"], 1),
    (["eval", "--data", "{tmp}/one-char.txt"], 2),
    (["eval", "--data", "{tmp}/one-char.txt", "--samples", "0"], 2),
    (["eval", "--data", "{tmp}/one-char.txt", "--samples", "-1"], 2),
    (["eval", "--data", "{tmp}/one-char.txt", "--samples", "2", "--sample-tokens", "0"], 2),
    (["eval", "--data", "{tmp}/one-char.txt", "--samples", "2", "--seed", "-1"], 2),
    (["eval", "--data", "{tmp}/one-char.txt", "--samples", "2", "--temperature", "-1"], 2),
    (["eval", "--data", "{tmp}/short.txt", "--samples", "2", "--sample-tokens", "9"], 2),
], ids=["layer", "head", "not-png", "missing-data", "too-short-data", "samples-0", "samples-negative",
        "sample-tokens-0", "seed-negative", "temperature-negative", "text-shorter-than-a-sample"])
def test_attention_and_eval_bad_input_is_one_line(capsys, checkpoint, tmp_path, argv, expected_status):
    (tmp_path / "one-char.txt").write_text("a")
    (tmp_path / "short.txt").write_text("abc abc ab")       # 10 tokens: fewer than a 4-token prompt + 9
    status, _, err = cli(capsys, argv[0], "--checkpoint", checkpoint, *[a.format(tmp=tmp_path) for a in argv[1:]])
    assert status == expected_status and err.startswith("tinyref: error: ") and err.count("\n") == 1, err


def test_a_corrupt_checkpoint_prints_no_traceback_in_a_real_process(broken):
    run = subprocess.run([sys.executable, "-m", "tinyref", "generate", "--checkpoint", str(broken / "truncated-model"),
                          "--prompt", "abc"], cwd=ROOT, capture_output=True, text=True)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and last.startswith("tinyref: error: ") and "Traceback" not in run.stderr, run.stderr
