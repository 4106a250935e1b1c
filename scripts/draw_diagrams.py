"""Draw the docs' computed diagrams: rotary embeddings and grouped-query attention, as inline SVG.

    python scripts/draw_diagrams.py            # (re)write docs/diagrams/{rope-pairs,rope-rotation,rope-scores,gqa-heads}.html
    python scripts/draw_diagrams.py --check    # exit 1 if a committed diagram is not what this script draws

The rotations and scores come from the oracle's rope_forward, so the pictures show the tested math;
nothing is random but a fixed seed, so the output is the same on every machine. Colours are SVG fills
with an opacity, readable on the site's light and dark themes alike; text takes the page's colour.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import oracle  # noqa: E402  (the repository's oracle, importable without installing)

OUT = ROOT / "docs" / "diagrams"
PAIR_COLOURS = ("#1e88e5", "#ff5722", "#009688", "#9c27b0")   # one per rotated pair j
POSITIVE, NEGATIVE = "#1e88e5", "#ff5722"                       # the heatmaps' signs


def figure(width: int, height: int, label: str, body: list[str], caption: str) -> str:
    return "\n".join([f'<figure class="tr-diagram">',
                      f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" aria-label="{label}">',
                      *(f"  {line}" for line in body), "</svg>", f"<figcaption>{caption}</figcaption>", "</figure>", ""])


def text(x: float, y: float, s: str, cls: str | None = None, anchor: str = "middle", extra: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text{c} x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{s}</text>'


def rope_pairs_diagram(hd: int = 8) -> str:
    """Both pairings of one head's hd dimensions, and the row permutation that maps interleaved onto half."""
    cell, gap, x0 = 44, 6, 190
    xs = [x0 + i * (cell + gap) for i in range(hd)]
    top, bottom = 40, 190
    body = []
    for y, style, who in ((top, "interleaved", "Meta, llama2.c"), (bottom, "half", "Hugging Face")):
        body.append(text(x0 - 14, y + 20, f"{style}", anchor="end"))
        body.append(text(x0 - 14, y + 36, who, "note", anchor="end"))
        for i, x in enumerate(xs):
            j = i // 2 if style == "interleaved" else i % (hd // 2)
            body.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" rx="4" fill="{PAIR_COLOURS[j]}" '
                        f'fill-opacity="0.35" stroke="{PAIR_COLOURS[j]}"/>')
            body.append(text(x + cell / 2, y + 27, f"{i}"))
        for j in range(hd // 2):            # an arc under (interleaved) or over (half) each pair's two dimensions
            a, b = (2 * j, 2 * j + 1) if style == "interleaved" else (j, j + hd // 2)
            xa, xb = xs[a] + cell / 2, xs[b] + cell / 2
            if style == "interleaved":
                y_arc, bend = top - 4, top - 4 - 16
            else:
                y_arc, bend = bottom + cell + 4, bottom + cell + 4 + 10 + 6 * j
            body.append(f'<path d="M{xa:.1f},{y_arc} Q{(xa + xb) / 2:.1f},{2 * bend - y_arc} {xb:.1f},{y_arc}" '
                        f'fill="none" stroke="{PAIR_COLOURS[j]}" stroke-width="1.5"/>')
    perm = [2 * j for j in range(hd // 2)] + [2 * j + 1 for j in range(hd // 2)]   # half dimension d <- interleaved perm[d]
    for d, src in enumerate(perm):
        body.append(f'<line class="edge" x1="{xs[src] + cell / 2:.1f}" y1="{top + cell + 2}" '
                    f'x2="{xs[d] + cell / 2:.1f}" y2="{bottom - 2}"/>')
    body.append(text(x0 - 14, (top + cell + bottom) / 2 + 4, "q, k rows", "note", anchor="end"))
    body.append(text(x0 - 14, (top + cell + bottom) / 2 + 18, f"P = [{', '.join(map(str, perm))}]", "note", anchor="end"))
    width = xs[-1] + cell + 20
    return figure(width, bottom + cell + 50, f"The two pairings of a head of {hd} dimensions", body,
                  f"One head of {hd} dimensions; a colour is one rotated pair j. Interleaved pairs 2j with 2j + 1; "
                  f"half pairs j with j + {hd // 2}. Moving each head's q and k rows as the lines show "
                  f"(half row d takes interleaved row P[d], P = [{', '.join(map(str, perm))}]) turns one into the other.")


def rope_rotation_diagram(hd: int = 8, positions: int = 8, theta: float = 10000.0) -> str:
    """Each pair of a unit vector turned by p * theta^(-2j/hd) for p = 0..positions-1, from oracle.rope_forward."""
    x = np.zeros((positions, hd))
    x[:, :hd // 2] = 1.0                                   # every pair starts at (1, 0), "half" layout
    turned, _ = oracle.rope_forward(x, None, theta, "half")
    r, panel, top = 70, 190, 30
    body = []
    for j in range(hd // 2):
        cx, cy = panel / 2 + j * panel, top + 20 + r
        omega = theta ** (-2 * j / hd)
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" class="edge"/>')
        body.append(f'<line class="edge" x1="{cx - r - 6:.1f}" y1="{cy:.1f}" x2="{cx + r + 6:.1f}" y2="{cy:.1f}" '
                    f'stroke-dasharray="2 3"/>')
        labelled = []
        for p in range(positions):
            a, b = turned[p, j], turned[p, j + hd // 2]
            tx, ty = cx + r * a, cy - r * b                 # SVG's y axis points down
            opacity = 0.35 + 0.65 * p / (positions - 1)
            body.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{tx:.1f}" y2="{ty:.1f}" stroke="{PAIR_COLOURS[j]}" '
                        f'stroke-opacity="{opacity:.2f}" stroke-width="2"/>')
            body.append(f'<circle cx="{tx:.1f}" cy="{ty:.1f}" r="3" fill="{PAIR_COLOURS[j]}" fill-opacity="{opacity:.2f}"/>')
            lx, ly = cx + (r + 13) * a, cy - (r + 13) * b + 4
            if all((lx - u) ** 2 + (ly - v) ** 2 > 11 ** 2 for u, v in labelled):
                body.append(text(lx, ly, f"{p}", "note"))
                labelled.append((lx, ly))
        if j:                                               # dashed: the far position where this pair has turned 1 rad
            far = round(1 / omega)
            y_far, _ = oracle.rope_forward(x[:1], None, theta, "half", positions=[far])
            a, b = y_far[0, j], y_far[0, j + hd // 2]
            body.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{cx + r * a:.1f}" y2="{cy - r * b:.1f}" '
                        f'stroke="{PAIR_COLOURS[j]}" stroke-width="1.5" stroke-dasharray="4 3"/>')
            body.append(text(cx + (r + 22) * a, cy - (r + 14) * b, f"{far}", "note"))
        body.append(text(cx, top + 2 * r + 56, f"pair j = {j}"))
        body.append(text(cx, top + 2 * r + 72, f"ω = {omega:g} rad per position", "note"))
        body.append(text(cx, top + 2 * r + 86, f"p = {positions - 1}: {(positions - 1) * omega:g} rad", "note"))
    body.append(text(2 * panel, 14, f"hd = {hd}, θ = {theta:g}: pair j turns by p · ω at position p, ω = θ^(−2j/hd)",
                     "note"))
    return figure(panel * hd // 2, top + 2 * r + 100, "Each pair of dimensions turned by an angle proportional to position",
                  body, f"The same vector at positions 0 to {positions - 1}, pair by pair (the numbers are p): the first "
                        f"pair turns a radian per position; each later pair turns {theta ** (2 / hd):g} times slower, so the "
                        f"slow pairs still tell apart positions far beyond the picture (dashed: the position where a pair has turned "
                        f"one radian).")


def score_grid(scores: np.ndarray, x0: float, y0: float, cell: float, title: str, diagonal: int) -> list[str]:
    """A heatmap of (p, s) scores, p down, s across, with the cells of p - s = ``diagonal`` outlined."""
    T = scores.shape[0]
    top = np.abs(scores).max()
    body = [text(x0 + T * cell / 2, y0 - 24, title)]
    for p in range(T):
        for s in range(T):
            v = scores[p, s]
            body.append(f'<rect x="{x0 + s * cell:.1f}" y="{y0 + p * cell:.1f}" width="{cell}" height="{cell}" '
                        f'fill="{POSITIVE if v >= 0 else NEGATIVE}" fill-opacity="{abs(v) / top:.3f}"/>')
    for s in range(0, T, 5):
        body.append(text(x0 + (s + 0.5) * cell, y0 - 5, f"{s}", "note"))
    for p in range(0, T, 5):
        body.append(text(x0 - 5, y0 + (p + 0.5) * cell + 4, f"{p}", "note", anchor="end"))
    for p in range(diagonal, T):
        s = p - diagonal
        body.append(f'<rect x="{x0 + s * cell:.1f}" y="{y0 + p * cell:.1f}" width="{cell}" height="{cell}" '
                    f'fill="none" class="edge" stroke-width="1.5"/>')
    body.append(text(x0 + T * cell / 2, y0 + T * cell + 18, "key position s", "note"))
    return body


def rope_scores_diagram(hd: int = 16, T: int = 16, seed: int = 3, diagonal: int = 3) -> str:
    """q_p . k_s over (p, s) for one q and one k at every position: rotary (constant along every diagonal) beside
    a position vector added to each (not)."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal(hd), rng.standard_normal(hd)
    rq, _ = oracle.rope_forward(np.tile(q, (T, 1)), None, 10000.0, "half")      # (T, hd): q at every position
    rk, _ = oracle.rope_forward(np.tile(k, (T, 1)), None, 10000.0, "half")
    rotary = rq @ rk.T                                                         # (T, T): [p, s] = q_p . k_s
    for d in range(-T + 1, T):                                                 # what the picture claims
        assert np.allclose(np.diagonal(rotary, -d), np.diagonal(rotary, -d)[0]), d
    wpe = rng.standard_normal((T, hd))
    added = (q + wpe) @ (k + wpe).T
    cell, x0, y0, gap = 14, 60, 50, 90
    body = score_grid(rotary, x0, y0, cell, "rotary: (R_p q) · (R_s k)", diagonal)
    body += score_grid(added, x0 + T * cell + gap, y0, cell, "added: (q + w_p) · (k + w_s)", diagonal)
    body.append(text(22, y0 + T * cell / 2, "query position p", "note", extra=f' transform="rotate(-90 22 {y0 + T * cell / 2})"'))
    legend_y = y0 + T * cell + 34
    for i, (colour, name) in enumerate(((POSITIVE, "positive score"), (NEGATIVE, "negative score"))):
        lx = x0 + i * 170
        body.append(f'<rect x="{lx}" y="{legend_y}" width="{cell}" height="{cell}" fill="{colour}" fill-opacity="0.8"/>')
        body.append(text(lx + cell + 6, legend_y + 11, name, "note", anchor="start"))
    body.append(f'<rect x="{x0 + 340}" y="{legend_y}" width="{cell}" height="{cell}" fill="none" class="edge" stroke-width="1.5"/>')
    body.append(text(x0 + 340 + cell + 6, legend_y + 11, f"p − s = {diagonal}", "note", anchor="start"))
    width = x0 + 2 * T * cell + gap + 20
    return figure(width, legend_y + cell + 12, "Scores of one q and one k over all position pairs", body,
                  f"One query vector q and one key vector k (hd = {hd}) placed at every position 0 to {T - 1}. "
                  f"Rotated (left), the score depends only on p − s: every diagonal is one colour, so the outlined "
                  f"cells are equal. With a random position vector added instead (right, as a learned wpe row would), "
                  f"it depends on both positions.")


def gqa_heads_diagram(H: int = 8, options: tuple[int, ...] = (8, 2, 1)) -> str:
    """Query heads joined to the key/value head they read, h -> h // (H / KV), for each KV in ``options``."""
    box, gap, x0, row = 36, 8, 190, 120
    qx = [x0 + h * (box + gap) for h in range(H)]
    names = {H: "multi-head", 1: "multi-query"}
    body = []
    for n, KV in enumerate(options):
        y = 12 + n * row
        g = H // KV
        body.append(text(x0 - 16, y + 22, f"{names.get(KV, 'grouped-query')}", anchor="end"))
        body.append(text(x0 - 16, y + 38, f"n_kv_heads = {KV}, g = {g}", "note", anchor="end"))
        body.append(text(x0 - 16, y + 78, f"cache: {KV} of {H} heads", "note", anchor="end"))
        for h in range(H):
            body.append(f'<rect class="box" x="{qx[h]}" y="{y}" width="{box}" height="26" rx="4"/>')
            body.append(text(qx[h] + box / 2, y + 18, f"q{h}"))
        for j in range(KV):
            group = qx[j * g:(j + 1) * g]
            kx = (group[0] + group[-1] + box) / 2
            w = min(box * 1.6, len(group) * (box + gap) - gap)
            body.append(f'<rect class="hot" x="{kx - w / 2:.1f}" y="{y + 62}" width="{w:.1f}" height="26" rx="4"/>')
            body.append(text(kx, y + 80, f"k{j} v{j}" if w > box else f"kv{j}"))
            for x in group:
                body.append(f'<line class="edge" x1="{x + box / 2:.1f}" y1="{y + 26}" x2="{kx:.1f}" y2="{y + 62}"/>')
    return figure(qx[-1] + box + 20, 12 + len(options) * row - 14, "Query heads sharing key and value heads", body,
                  f"{H} query heads. Query head h reads key/value head h // g, g = n_heads / n_kv_heads (Hugging "
                  f"Face's repeat_kv order: neighbouring query heads share). Only the n_kv_heads key/value heads are "
                  f"computed and kept in the KV cache.")


DIAGRAMS = {"rope-pairs.html": rope_pairs_diagram, "rope-rotation.html": rope_rotation_diagram,
            "rope-scores.html": rope_scores_diagram, "gqa-heads.html": gqa_heads_diagram}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the committed files instead of writing them")
    p.add_argument("--out", type=Path, default=OUT, help="the folder of the diagrams (default docs/diagrams)")
    args = p.parse_args(argv)
    stale = []
    for name, draw in DIAGRAMS.items():
        path, drawn = args.out / name, draw()
        if args.check:
            if not path.is_file() or path.read_text() != drawn:
                stale.append(name)
        else:
            path.write_text(drawn)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/draw_diagrams.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
