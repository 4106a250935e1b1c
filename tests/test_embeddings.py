"""Words as vectors (tinyref/generation/embeddings.py), the capitals corpus (tinyref/train/corpus.py),
the `tinyref embeddings` and `tinyref corpus` commands, and what a small model learns from the corpus."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

from helpers import UNTIED
from tinyref import GPTStyleTransformer, UsageError
from tinyref.bench import analogies
from tinyref.bench.analogies import chance, scores, untrained_embeddings
from tinyref.cli import main
from tinyref.generation.embeddings import (Embeddings, analogy, analogy_accuracy, answer_analogies, cluster_cosines,
                                           load_embeddings, nearest, pca_2d)
from tinyref.train import TrainOptions, train
from tinyref.train.checkpoint import save_checkpoint
from tinyref.train.corpus import (FACTS, HELD_OUT_COUNTRIES, analogy_questions, capitals_corpus, facts_by_category,
                                  shuffled_words)
from tinyref.train.tokenizer import train_tokenizer

S = 1 / math.sqrt(2)


def hand_made() -> Embeddings:
    """man, woman: two axes; king, queen: each of them plus a 'royal' axis; the space token sits on
    man's axis but is no word; apple is unrelated."""
    e = np.eye(4)
    vectors = {"man": e[0], "woman": e[1], "king": S * (e[0] + e[2]), "queen": S * (e[1] + e[2]),
               " ": 2 * e[0], "apple": e[3]}
    return Embeddings(np.array(list(vectors.values())), list(vectors))


# --- the vector arithmetic, on vectors whose cosines are known by hand ------------------------------

def test_nearest_ranks_words_by_cosine_and_skips_non_words():
    # cos(man, king) = 1/sqrt(2); man is orthogonal to woman, queen and apple; ' ' (cos 1) is not a word
    found = nearest(hand_made(), "man", top=2)
    assert [w for w, _ in found] == ["king", "woman"]            # woman: 0, tied with queen and apple, lowest id
    assert found[0][1] == pytest.approx(S) and found[1][1] == pytest.approx(0.0)


def test_analogy_is_b_minus_a_plus_c_with_the_question_words_excluded():
    emb = hand_made()
    found = analogy(emb, "man", "king", "woman", top=2)
    # target = king - man + woman = (S - 1, 1, S, 0); cos(target, queen) = (S + S*S) / |target|
    target = np.array([S - 1, 1, S, 0])
    assert found[0][0] == "queen" and found[0][1] == pytest.approx((S + S * S) / np.linalg.norm(target))
    assert "woman" not in [w for w, _ in found]                  # cos 0.79, but a question word
    assert analogy_accuracy(emb, [("man", "king", "woman", "queen")]) == 1.0
    assert analogy_accuracy(emb, [("king", "man", "queen", "woman")]) == 1.0        # the reverse holds too


def test_many_questions_at_once_get_the_answers_of_one_at_a_time():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    emb = Embeddings(rng.normal(size=(13, 5)), words + ["."])
    questions = [tuple(rng.choice(words, size=4, replace=False)) for _ in range(30)]
    assert answer_analogies(emb, questions) == [analogy(emb, *q[:3], top=1)[0][0] for q in questions]


def test_a_planted_sign_error_in_the_analogy_is_caught(monkeypatch):
    """Negative control: with a - b + c (a sign error) the cosine checked above is not what comes out."""
    emb = hand_made()
    unit = emb.unit()
    monkeypatch.setattr(Embeddings, "unit", lambda self: unit[[1, 0, 2, 3, 4, 5]])   # man and woman swapped in the maths
    found = analogy(emb, "man", "king", "woman", top=1)
    target = np.array([S - 1, 1, S, 0])
    assert found[0][1] != pytest.approx((S + S * S) / np.linalg.norm(target))


def test_pca_finds_the_directions_of_most_variance():
    # points spread 3 along u and 1 along v (orthogonal unit vectors of R^5): PCA gives back (t, s)
    rng = np.random.default_rng(0)
    u, v = np.linalg.qr(rng.normal(size=(5, 2)))[0].T
    t, s = 3 * np.array([-2.0, -1, 0, 1, 2]), np.array([1.0, -1, 0, -1, 1])     # centred, t . s = 0
    points, variance = pca_2d(np.outer(t, u) + np.outer(s, v) + 7.0)
    for got, want in ((points[:, 0], t), (points[:, 1], s)):
        assert np.allclose(np.abs(got), np.abs(want)) and abs(got @ want) == pytest.approx(want @ want)
    assert variance == pytest.approx([t @ t / (t @ t + s @ s), s @ s / (t @ t + s @ s)])


def test_cluster_cosines_average_within_and_across_groups():
    emb = hand_made()
    intra, inter = cluster_cosines(emb, {"men": ["man", "king"], "women": ["woman", "queen"]})
    # within: cos(man, king) = cos(woman, queen) = S; across: man.woman = 0, man.queen = 0, king.woman = 0, king.queen = 1/2
    assert intra == pytest.approx(S) and inter == pytest.approx(0.5 / 4)


def test_a_word_outside_the_vocabulary_gets_close_words_and_a_split_word_is_explained():
    words = Embeddings(np.eye(3), ["paris", "france", " "], "word")
    with pytest.raises(UsageError, match=r"'pariss' is not in the vocabulary of this word tokenizer \(3 tokens\); close: paris"):
        words.index("pariss")
    pieces = train_tokenizer("wordpiece", ["ab ba"], vocab_size=7)
    emb = Embeddings(np.eye(7), [pieces.hf.id_to_token(i) for i in range(7)], "wordpiece", pieces)
    with pytest.raises(UsageError, match=r"'aab' is not one token .* 3 pieces \('a', '##a', '##b'\)"):
        emb.index("aab")
    bpe = train_tokenizer("bpe", ["paris is the capital of france. tokyo is the capital of japan. " * 30], vocab_size=300)
    emb = Embeddings(np.eye(bpe.vocab_size), [bpe.hf.id_to_token(i) for i in range(bpe.vocab_size)], "bpe", bpe)
    assert emb.tokens[emb.index("Ġtokyo")] == "Ġtokyo"              # the word after a space is one token...
    with pytest.raises(UsageError, match=r"'tokyo' is not one token of this bpe tokenizer but 3 pieces .* close token: Ġtokyo"):
        emb.index("tokyo")                                          # ...the same word at the start of a text three
    with pytest.raises(UsageError, match=r"--top must lie in \[1, 1\]: the vocabulary has 1 other word, got 2"):
        nearest(words, "paris", top=2)                       # one word besides paris: france (' ' is no word)
    assert [w for w, _ in nearest(words, "paris")] == ["france"]        # the default lists all there are when fewer than 10


# --- the corpus ------------------------------------------------------------------------------------

def test_the_corpus_is_seeded_and_every_question_word_is_in_it():
    text = capitals_corpus(300, seed=1)
    assert text == capitals_corpus(300, seed=1) and text != capitals_corpus(300, seed=2)
    assert len(text.splitlines()) == 300
    seen = set(text.split())
    assert {w for q in analogy_questions(True) + analogy_questions(False) for w in q} <= seen
    assert "tokyo is the capital of japan ." in capitals_corpus(2000) and "paris is the capital of japan" not in capitals_corpus(2000)


def test_held_out_questions_are_those_whose_answer_is_a_held_out_country():
    held_out, dev = analogy_questions(True), analogy_questions(False)
    n = len(FACTS)
    assert len(held_out) + len(dev) == 3 * n * (n - 1) and not set(held_out) & set(dev)
    country = {w: row[0] for row in FACTS for w in row}
    assert {country[q[3]] for q in held_out} == set(HELD_OUT_COUNTRIES)
    assert all(country[q[0]] == country[q[1]] != country[q[2]] == country[q[3]] for q in held_out + dev)
    for words in facts_by_category().values():
        assert len(set(words)) == n                    # one-to-one: every question has one right answer


def test_shuffling_keeps_the_words_and_line_lengths_but_not_their_order():
    text = capitals_corpus(50)
    shuffled = shuffled_words(text)
    assert collections.Counter(shuffled.split()) == collections.Counter(text.split())
    assert [len(l.split()) for l in shuffled.splitlines()] == [len(l.split()) for l in text.splitlines()]
    assert shuffled != text


# --- what a small model learns from it -------------------------------------------------------------

# a cheap run: one vocabulary (both texts hold the same words), so one set of kernels for both
QUICK = dict(tokenizer="word", d_model=16, n_heads=4, n_layers=1, context_length=16, batch_size=16, steps=600, lr=2e-2,
             eval_every=600, eval_batches=1)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    root = tmp_path_factory.mktemp("capitals")
    text = capitals_corpus(400, seed=0)
    found = {}
    for name, body in (("trained", text), ("shuffled", shuffled_words(text))):
        (root / f"{name}.txt").write_text(body)
        run = train(TrainOptions(data=str(root / f"{name}.txt"), out=str(root / name), seed=0, **QUICK),
                    log=lambda s: None, progress=False)
        found[name] = load_embeddings(run)
        if name == "trained":
            found["untrained"] = untrained_embeddings(run.model.config, run.tokenizer, seed=0)
    return found


def test_the_untrained_baseline_is_where_the_run_starts(learned, tmp_path):
    """One AdamW step of 1e-9 moves a weight by about 1e-9: the run's weights after it are its start."""
    (tmp_path / "text.txt").write_text(capitals_corpus(400, seed=0))
    run = train(TrainOptions(data=str(tmp_path / "text.txt"), out=str(tmp_path / "run"), seed=0,
                             **{**QUICK, "steps": 1, "lr": 1e-9}), log=lambda s: None, progress=False)
    start = load_embeddings(run).vectors
    assert np.abs(start - learned["untrained"].vectors).max() < 1e-6
    other = untrained_embeddings(run.model.config, run.tokenizer, seed=1).vectors       # control: another seed
    assert np.abs(start - other).max() > 1e-2


def test_training_sorts_the_words_by_kind_and_beats_the_untrained_model_on_held_out_analogies(learned):
    # measured: every answer of the right kind (untrained 17%), accuracy 7.6% (untrained 0%, chance 1.0%),
    # cosine 0.93 within a kind and 0.38 across kinds. The accuracy is what knowing the kinds gives (a
    # word of the right kind at random: 5.3%), not the pairings: this run is too short for those
    groups, held_out = facts_by_category(), analogy_questions(True)
    got = {name: scores(emb, held_out, groups) for name, emb in learned.items()}
    base = chance(learned["trained"], held_out, groups)
    assert got["trained"]["right_kind"] > 0.9 and got["untrained"]["right_kind"] < 0.3
    assert got["trained"]["accuracy"] > got["untrained"]["accuracy"] + 0.04 and got["trained"]["accuracy"] > 4 * base["accuracy"]
    assert got["trained"]["intra_cosine"] > got["trained"]["inter_cosine"] + 0.4


def test_shuffled_words_teach_no_kinds(learned):
    """Negative control: the same words in a random order. What is left is how often each word occurs,
    which sorts the kinds a little (measured: 44% of the answers of the right kind, accuracy 3.5%,
    cosine 0.89 within a kind and 0.80 across), far from the ordered text's 100% and 0.93 / 0.38."""
    groups, held_out = facts_by_category(), analogy_questions(True)
    shuffled, trained = scores(learned["shuffled"], held_out, groups), scores(learned["trained"], held_out, groups)
    assert shuffled["right_kind"] < 0.6 < trained["right_kind"]
    assert shuffled["intra_cosine"] - shuffled["inter_cosine"] < 0.2
    assert shuffled["accuracy"] < trained["accuracy"]


# --- the commands ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def word_checkpoint(tmp_path_factory):
    """UNTIED's 7 rows named by a word tokenizer, set to the hand-made vectors (8 wide)."""
    tokenizer = train_tokenizer("word", ["man woman king queen apple over"])   # ' ', apple, king, man, over, queen, woman
    model = GPTStyleTransformer(UNTIED)
    hand = dict(zip(hand_made().tokens, hand_made().vectors))
    rows = np.zeros((7, 8), dtype=np.float32)
    for i, word in enumerate(tokenizer.symbols):
        rows[i, :4] = hand.get(word, np.eye(4)[3] + 0.5 * np.eye(4)[2])           # 'over': between apple and royal
    get_state_dict(model)["wte.weight"].assign(Tensor(rows)).realize()
    return save_checkpoint(tmp_path_factory.mktemp("words") / "checkpoint", model, None, tokenizer, {"step": 0})


def test_the_embeddings_command_prints_neighbours_and_analogies(word_checkpoint, capsys, tmp_path):
    assert main(["embeddings", "--checkpoint", str(word_checkpoint.parent), "--word", "man", "--top", "1",
                 "--analogy", "man", "king", "woman", "--plot", str(tmp_path / "map.png"), "--words", "king", "queen"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["1.", "king", f"+{S:.3f}"]
    assert out[2].startswith("man is to king as woman is to: queen") and out[3].split()[1] == "queen"
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "2 of 6 words" in out[-1]


def test_the_corpus_command_writes_the_seeded_text_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "capitals.txt"
    assert main(["corpus", "capitals", "--out", str(out), "--paragraphs", "20", "--seed", "3"]) == 0
    assert out.read_text() == capitals_corpus(20, seed=3)
    assert main(["corpus", "capitals", "--out", str(out), "--paragraphs", "5"]) == 2
    assert out.read_text() == capitals_corpus(20, seed=3)
    assert main(["corpus", "capitals", "--out", str(tmp_path / "s.txt"), "--paragraphs", "20", "--seed", "3", "--shuffled"]) == 0
    assert (tmp_path / "s.txt").read_text() == shuffled_words(capitals_corpus(20, seed=3), seed=3)


# --- the page --------------------------------------------------------------------------------------

def test_the_committed_page_is_what_its_json_renders():
    assert analogies.main(["report", "--check"]) == 0, \
        "docs/learn/words-as-vectors.md was edited by hand or its JSON changed: run python -m tinyref.bench.analogies report"


def test_a_figure_edited_by_hand_is_caught(tmp_path, capsys):
    """Negative control for the check above."""
    page = tmp_path / "page.md"
    page.write_text(analogies.PAGE.read_text().replace("| **trained** | ", "| **trained** | 9", 1))
    assert analogies.main(["report", "--check", "--page", str(page)]) == 1
    assert "out of date" in capsys.readouterr().err
