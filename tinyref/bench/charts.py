"""The Results page's charts, drawn from the same JSON as its tables: training tokens/s per
implementation and config, where a step's kernel time goes, and the oracle against Hugging Face at
GPT-2 small's size.

matplotlib's Agg backend with its default style (no matplotlibrc of the user's), a fixed size and
resolution, and no metadata in the PNG: the same JSON gives the same bytes, so a test can redraw
the committed images from their JSON and compare.
"""
from __future__ import annotations

import io
import math

from ..errors import pyplot

SIZE, DPI = (8.0, 4.2), 100
# one colour per implementation and per kernel class, the same in every chart
IMPL_COLORS = {"tinyref": "#3f51b5", "torch-eager": "#ef6c00", "torch-compile": "#ffb74d", "oracle": "#43a047",
               "torch-hf": "#ef6c00", "torch-hf-eager": "#ffb74d"}
CLASS_COLORS = {"matmul": "#3f51b5", "elementwise": "#ef6c00", "reduction": "#43a047"}
OTHER = "#9e9e9e"


def short_number(value: float) -> str:
    """71656 -> '71.7k', 1928 -> '1.9k', 387.9 -> '388'."""
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def png(draw) -> bytes:
    """The PNG bytes of ``draw(fig)``, in matplotlib's default style whatever the user's settings."""
    plt = pyplot()
    with plt.style.context("default"), plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig = plt.figure(figsize=SIZE, dpi=DPI)
        try:
            draw(fig)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        finally:
            plt.close(fig)
    return buf.getvalue()


def speed_chart(bench: dict) -> bytes | None:
    """Grouped bars: tokens/s of each implementation on each config, on a log scale (S and L differ ~40x)."""
    rows = [r for r in bench.get("results", []) if r.get("tokens_per_s")]
    if not rows:
        return None
    configs = list(dict.fromkeys(r["config"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    width = 0.8 / len(impls)

    def draw(fig):
        ax = fig.add_subplot()
        for i, impl in enumerate(impls):
            for j, r in enumerate(r for r in rows if r["impl"] == impl):
                x = configs.index(r["config"]) + (i - (len(impls) - 1) / 2) * width
                ax.bar(x, r["tokens_per_s"], width, color=IMPL_COLORS.get(impl, OTHER), label=impl if j == 0 else None)
                ax.annotate(short_number(r["tokens_per_s"]), (x, r["tokens_per_s"]), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        speeds = [r["tokens_per_s"] for r in rows]
        ax.set_ylim(10 ** math.floor(math.log10(min(speeds))), 4 * max(speeds))      # room above for the legend
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
        ax.set_xticks(range(len(configs)), [f"config {c}" for c in configs])
        ax.set_ylabel("training tokens/s (log scale)")
        ax.set_title("Training speed: tokens per second, higher is better")
        ax.grid(axis="y", which="both", alpha=0.25)
        ax.set_axisbelow(True)
        ax.legend(ncols=len(impls), loc="upper right", fontsize=9, frameon=False)
    return png(draw)


def profile_chart(profile: dict) -> bytes | None:
    """One bar per config, split by kernel class into its share of the step's kernel time."""
    profiles = [p for p in profile.get("profiles", []) if p.get("classes")]
    if not profiles:
        return None
    classes = list(dict.fromkeys(c["class"] for p in profiles for c in p["classes"]))

    def draw(fig):
        ax = fig.add_subplot()
        for y, p in enumerate(profiles):
            total, left = sum(c["ms"] for c in p["classes"]), 0.0
            for c in sorted(p["classes"], key=lambda c: classes.index(c["class"])):
                share = c["ms"] / total
                ax.barh(y, share, left=left, color=CLASS_COLORS.get(c["class"], OTHER),
                        label=c["class"] if y == 0 else None, edgecolor="white")
                if share >= 0.07:
                    ax.text(left + share / 2, y, f"{share:.0%}", ha="center", va="center", color="white", fontsize=9)
                left += share
            ax.text(1.01, y, f"{total:,.1f} ms", va="center", fontsize=9)
        ax.set_yticks(range(len(profiles)), [f"config {p['config']}" for p in profiles])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
        ax.set_xlabel("share of one step's kernel time; at the right, the step's kernel time on one thread")
        ax.set_title("Where a step's time goes, by kernel class")
        ax.legend(ncols=len(classes), loc="lower center", bbox_to_anchor=(0.5, 1.08), fontsize=9, frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return png(draw)


def oracle_gpt2_chart(data: dict) -> bytes | None:
    """Side by side: seconds and peak MB of one GPT-2 small step per implementation, with the ratio to PyTorch."""
    rows = [r for r in data.get("results", []) if r.get("seconds")]
    if not rows:
        return None
    reference = data.get("reference")

    def draw(fig):
        panels = (("seconds", "seconds per step (forward + backward)", "time_ratio", "{:.1f} s"),
                  ("peak_mem_mb", "peak resident memory, MB", "memory_ratio", "{:,.0f} MB"))
        for i, (key, label, ratio, spec) in enumerate(panels):
            ax = fig.add_subplot(1, 2, i + 1)
            shown = [r for r in rows if r.get(key)]
            ys = range(len(shown))
            ax.barh(ys, [r[key] for r in shown], color=[IMPL_COLORS.get(r["impl"], OTHER) for r in shown])
            for y, r in zip(ys, shown):
                text = spec.format(r[key]) + (f"  ({r[ratio]:.2f}x)" if r.get(ratio) and r["impl"] != reference else "")
                ax.text(r[key], y, " " + text, va="center", fontsize=9)
            ax.set_yticks(list(ys), [r["impl"] + ("\n(reference)" if r["impl"] == reference else "") for r in shown])
            ax.invert_yaxis()
            ax.set_xlim(0, 1.6 * max(r[key] for r in shown))
            ax.set_xlabel(label)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        fig.suptitle("GPT-2 small in float64: the oracle against Hugging Face in PyTorch"
                     + (f" (ratios to {reference})" if reference else ""), fontsize=11)
    return png(draw)


# file name in docs/results/ -> (the JSON it is drawn from, how)
CHARTS = {"speed.png": ("bench.json", speed_chart), "profile.png": ("bench-profile.json", profile_chart),
          "oracle-gpt2.png": ("oracle-gpt2.json", oracle_gpt2_chart)}


def charts(data: dict[str, dict]) -> dict[str, bytes]:
    """File name -> PNG bytes, for each chart whose JSON is there and holds figures."""
    drawn = {name: draw(data[source]) for name, (source, draw) in CHARTS.items() if source in data}
    return {name: image for name, image in drawn.items() if image is not None}
