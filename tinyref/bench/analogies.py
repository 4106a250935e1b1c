"""The words-as-vectors measurement behind docs/learn/words-as-vectors.md: train the lesson's model on
the capitals corpus for several seeds, and score its input embeddings on the held-out analogy
questions against chance, against the same model untrained (same seed, step 0) and against a model
trained on the same words shuffled (the negative control). The page's tables and map are rendered
from the JSON this writes, so the page shows exactly what was measured.

    python -m tinyref.bench.analogies measure       # train (minutes), write the JSON, render the page
    python -m tinyref.bench.analogies report        # JSON -> the page's generated parts and its PNG
    python -m tinyref.bench.analogies report --check    # exit 1 if the page is not what the JSON renders
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tinygrad import Tensor

from ..errors import UsageError
from ..generation.embeddings import (analogy, answer_analogies, cluster_cosines, load_embeddings, nearest, pca_2d,
                                     plot_map)
from ..model import GPTStyleTransformer
from ..train import TrainOptions, train
from ..train.corpus import (DEFAULT_PARAGRAPHS, HELD_OUT_COUNTRIES, RELATIONS, analogy_questions, capitals_corpus,
                            facts_by_category, shuffled_words)
from ..runtime.devices import select_device
from .harness import machine_info
from .report import table

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "learn" / "words-as-vectors.md"
DATA, MAP = PAGE.with_suffix(".json"), PAGE.with_suffix(".png")

# the lesson's model and run: small enough to train in about a minute on two CPU cores
LESSON = dict(tokenizer="word", d_model=32, n_heads=4, n_layers=1, context_length=32, batch_size=16, steps=1000,
              lr=1e-2)
SEEDS = (0, 1, 2)
NEIGHBOURS = ("paris", "japan", "yen", "french")
EXAMPLES = (("paris", "france", "tokyo"), ("france", "french", "japan"), ("japan", "yen", "russia"),
            ("tokyo", "japan", "seoul"))


def train_command(data: str = "capitals.txt", out: str = "runs/capitals") -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in LESSON.items())
    return f"tinyref train --data {data} {flags} --out {out}"


def scores(emb, questions, groups) -> dict:
    """Top-1 accuracy on ``questions``, the share of answers of the right kind (a country where a
    country is asked for), and the cluster cosines of the four kinds of word."""
    kind = {w: g for g, words in groups.items() for w in words}
    answers = answer_analogies(emb, questions)
    intra, inter = cluster_cosines(emb, groups)
    return {"accuracy": float(np.mean([a == q[3] for a, q in zip(answers, questions)])),
            "right_kind": float(np.mean([kind.get(a) == kind[q[3]] for a, q in zip(answers, questions)])),
            "by_relation": {f"{left}:{right}": float(np.mean([a == q[3] for a, q in zip(answers, questions)
                                                               if q[0] in groups[left] and q[1] in groups[right]]))
                            for left, right in RELATIONS},
            "intra_cosine": intra, "inter_cosine": inter}


def chance(emb, questions, groups) -> dict:
    """What answers drawn uniformly from the candidate words (all words but a, b, c) would score, and
    the accuracy of answers drawn from the candidates of the right kind only (``within_kind``)."""
    words = {emb.tokens[i] for i in emb.words}
    kind = {w: g for g, ws in groups.items() for w in ws}
    n = [len(words - set(q[:3])) for q in questions]
    right = [len(set(groups[kind[q[3]]]) - set(q[:3])) for q in questions]
    return {"accuracy": float(np.mean([1 / k for k in n])), "right_kind": float(np.mean(np.divide(right, n))),
            "within_kind": float(np.mean([1 / k for k in right]))}


def run_seed(seed: int, workdir: Path, paragraphs: int, log=print) -> tuple[dict, object]:
    """Train on the corpus and on its shuffled words; score both and the untrained model."""
    groups, held_out, dev = facts_by_category(), analogy_questions(True), analogy_questions(False)
    text = capitals_corpus(paragraphs, seed)
    result = {"seed": seed}
    for name, body in (("trained", text), ("shuffled", shuffled_words(text, seed))):
        data = workdir / f"{name}-{seed}.txt"
        data.write_text(body)
        start = time.perf_counter()
        run = train(TrainOptions(data=str(data), out=str(workdir / f"{name}-{seed}"), seed=seed, eval_every=LESSON["steps"],
                                 **LESSON), log=lambda s: None, progress=False)
        emb = load_embeddings(run)
        result[name] = {"held_out": scores(emb, held_out, groups), "dev": scores(emb, dev, groups),
                        "train_seconds": time.perf_counter() - start, "val_loss": run.metrics[-1]["val_loss"]}
        log(f"seed {seed} {name}: held-out accuracy {result[name]['held_out']['accuracy']:.3f}, "
            f"{result[name]['train_seconds']:.0f} s")
        if name == "trained":
            trained_emb, config, tokenizer = emb, run.model.config, run.tokenizer
    untrained = untrained_embeddings(config, tokenizer, seed)
    result["untrained"] = {"held_out": scores(untrained, held_out, groups), "dev": scores(untrained, dev, groups)}
    result["chance"] = {"held_out": chance(trained_emb, held_out, groups), "dev": chance(trained_emb, dev, groups)}
    return result, trained_emb


def untrained_embeddings(config, tokenizer, seed: int):
    """The embeddings a run with this config and seed starts from: train() seeds tinygrad and builds its model."""
    Tensor.manual_seed(seed)
    return load_embeddings(SimpleNamespace(model=GPTStyleTransformer(config), tokenizer=tokenizer))


def examples(emb) -> dict:
    """Seed 0's neighbours, example analogies and map."""
    groups = facts_by_category()
    labels = [w for words in groups.values() for w in words]
    points, variance = pca_2d(emb.vectors[emb.words])
    where = {emb.tokens[i]: k for k, i in enumerate(emb.words)}
    return {"neighbours": {w: nearest(emb, w, 5) for w in NEIGHBOURS},
            "analogies": [{"question": list(q), "answers": analogy(emb, *q, top=3)} for q in EXAMPLES],
            "map": {"labels": labels, "points": [points[where[w]].tolist() for w in labels], "groups": groups,
                    "variance": variance.tolist()}}


def measure(seeds=SEEDS, paragraphs: int = DEFAULT_PARAGRAPHS, log=print) -> dict:
    data = {"machine": machine_info(select_device(None)), "lesson": LESSON, "paragraphs": paragraphs,
            "held_out_countries": list(HELD_OUT_COUNTRIES), "questions": {"held_out": len(analogy_questions(True)), "dev": len(analogy_questions(False))}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            result, emb = run_seed(seed, Path(tmp), paragraphs, log)
            data["runs"].append(result)
            if seed == seeds[0]:
                data.update(examples(emb), words=len(emb.words))
    return data


# ---------------------------------------------------------------------------------------------
# The page: its generated parts sit between <!-- generated:NAME --> and <!-- /generated:NAME -->.

REGION = re.compile(r"(<!-- generated:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def spread(values: list[float], spec: str = ".1%") -> str:
    """The mean, and the range over seeds when there are several."""
    low, mean, high = (format(float(v), spec) for v in (min(values), np.mean(values), max(values)))
    return mean if low == high else f"{mean} ({low} to {high})"


def accuracy_section(data: dict) -> list[str]:
    runs = data["runs"]
    rows = [["chance: a word drawn at random", spread([r["chance"]["held_out"]["accuracy"] for r in runs]),
             spread([r["chance"]["held_out"]["right_kind"] for r in runs]), spread([r["chance"]["dev"]["accuracy"] for r in runs]),
             "-", "-"],
            ["chance: a word of the right kind drawn at random", spread([r["chance"]["held_out"]["within_kind"] for r in runs]),
             "100%", spread([r["chance"]["dev"]["within_kind"] for r in runs]), "-", "-"]]
    for key, name in (("untrained", "untrained (same seed, step 0)"), ("trained", "**trained**"),
                      ("shuffled", "trained on shuffled words (control)")):
        rows.append([name, *(spread([r[key][split][m] for r in runs]) for split, m in
                             (("held_out", "accuracy"), ("held_out", "right_kind"), ("dev", "accuracy"))),
                     *(spread([r[key]["held_out"][m] for r in runs], "+.2f") for m in ("intra_cosine", "inter_cosine"))])
    relations = [[name, *(spread([r[key]["held_out"]["by_relation"][name] for r in runs])
                          for key in ("untrained", "trained", "shuffled"))] for name in runs[0]["trained"]["held_out"]["by_relation"]]
    return [*table(["embeddings", f"held-out accuracy ({data['questions']['held_out']} questions)",
                    "answer of the right kind", f"development accuracy ({data['questions']['dev']})",
                    "cosine within a kind", "cosine across kinds"], rows), "",
            "By relation (held-out accuracy, a : b :: c : ?):", "",
            *table(["relation", "untrained", "trained", "shuffled"], relations)]


def setup_section(data: dict) -> list[str]:
    runs, m = data["runs"], data["machine"]
    seconds = [r["trained"]["train_seconds"] for r in runs]
    settings = ", ".join(f"`--{k.replace('_', '-')} {v}`" for k, v in data["lesson"].items())
    return [f"{data['paragraphs']:,} paragraphs ({data['words']} distinct words); {settings}. Seeds "
            f"{', '.join(str(r['seed']) for r in runs)}: the seed draws the text, the initial weights and the batches. "
            f"Training took {spread(seconds, '.0f')} seconds on {m['cores']} cores ({m['cpu']}; load average "
            f"{m['load_average'][0]} at the start, {m['date'][:10]}; Python {m['python']}, tinygrad {m['tinygrad']}), "
            f"to a validation loss of {spread([r['trained']['val_loss'] for r in runs], '.3f')} nats per token."]


def reader_section(data: dict) -> list[str]:
    """The reader's commands (seed 0) and what the seed-0 run printed for them."""
    near = ", ".join(f"{w} ({c:+.2f})" for w, c in data["neighbours"]["paris"][:3])
    ask = next(ex for ex in data["analogies"] if ex["question"] == ["paris", "france", "tokyo"])
    answers = ", ".join(f"{w} ({c:+.2f})" for w, c in ask["answers"])
    return ["```bash", f"tinyref corpus capitals --out capitals.txt --paragraphs {data['paragraphs']}",
            train_command(), "tinyref embeddings --checkpoint runs/capitals --word paris --analogy paris france tokyo "
            "--plot capitals.png", "```", "",
            f"The run is seed {data['runs'][0]['seed']}'s above, so on a machine like this one the last command "
            f"lists paris's nearest words as {near}, ...; answers paris : france :: tokyo : ? with {answers}; and "
            "draws every word on the map into `capitals.png` (in grey: the command does not know the kinds). Elsewhere the numbers may "
            "differ in the last digits, and the kinds stay apart."]


def neighbours_section(data: dict) -> list[str]:
    rows = [[f"`{w}`", *(f"{n} ({c:+.2f})" for n, c in found)] for w, found in data["neighbours"].items()]
    return table(["word", *(str(k) for k in range(1, len(rows[0])))], rows)


def analogies_section(data: dict) -> list[str]:
    rows = [[f"{a} : {b} :: {c} : ?", *(f"{w} ({s:+.2f})" for w, s in ex["answers"])]
            for ex in data["analogies"] for a, b, c in [ex["question"]]]
    return table(["question", "1st", "2nd", "3rd"], rows)


def map_section(data: dict) -> list[str]:
    v = data["map"]["variance"]
    return [f"![The {len(data['map']['labels'])} country, capital, language and currency words of seed "
            f"{data['runs'][0]['seed']}'s model on the first two principal components of its "
            f"{data['words']} word vectors]({MAP.name})", "",
            f"The first two principal components keep {v[0]:.0%} and {v[1]:.0%} of the variance of the "
            f"{data['words']} word vectors."]


SECTIONS = {"setup": setup_section, "reader": reader_section, "accuracy": accuracy_section, "neighbours": neighbours_section,
            "analogies": analogies_section, "map": map_section}


def render(page: str, data: dict) -> str:
    """``page`` with every generated part replaced by what ``data`` renders."""
    names = [m["name"] for m in REGION.finditer(page)]
    if sorted(names) != sorted(SECTIONS):
        raise UsageError(f"{PAGE.name} should hold the generated parts {sorted(SECTIONS)} once each, found {names}")
    return REGION.sub(lambda m: m[1] + "\n".join(SECTIONS[m["name"]](data)) + "\n" + m[4], page)


def draw_map(data: dict, path: Path) -> None:
    m = data["map"]
    plot_map(np.array(m["points"]), m["labels"], path, groups=m["groups"], variance=m["variance"],
             title=f"Input embeddings of the capitals model (seed {data['runs'][0]['seed']}), PCA")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinyref.bench.analogies", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("measure", "report"))
    p.add_argument("--check", action="store_true", help="report: exit 1 if the page is not what the JSON renders")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="measure: the seeds (default 0 1 2)")
    p.add_argument("--data", type=Path, default=DATA, help="the JSON")
    p.add_argument("--page", type=Path, default=PAGE, help="the page")
    args = p.parse_args(argv)
    if args.action == "measure":
        args.data.write_text(json.dumps(measure(args.seeds), indent=1) + "\n")
    data = json.loads(args.data.read_text())
    page = args.page.read_text()
    new = render(page, data)
    if args.check:
        if new != page:
            print(f"{args.page} is out of date: run python -m tinyref.bench.analogies report", file=sys.stderr)
            return 1
        return 0
    args.page.write_text(new)
    draw_map(data, args.page.with_suffix(".png"))
    print(f"wrote {args.page} and {args.page.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
