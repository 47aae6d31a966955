"""The report's plots, as inline SVG strings: answer quality with intervals, cost against quality,
loss curves, and the embedding map of chunks and eval questions under the base and LoRA retrievers.

Pure functions of numbers and vectors (numpy + matplotlib, no I/O). Text stays <text> in the SVG
(svg.fonttype none), so no font is embedded or fetched: the browser draws it with a local font.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

COLORS = {"base": "#7f7f7f", "finetuned": "#d62728", "rag": "#1f77b4", "hybrid": "#9467bd"}
QUALITY = ("token_f1", "rouge_l", "semantic_sim", "groundedness")
SMOOTH = 5  # steps in the loss curves' running mean


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display on a pipeline machine
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False)
    return fig, axes[0]


def svg_of(fig: Any, salt: str) -> str:
    """The figure as an <svg> element (no XML prolog), closed after drawing."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()  # keeps one panel's axis labels off its neighbour's ticks
    # the salt makes clip-path ids differ between plots that share one HTML page
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def plot_quality(summary: dict[str, dict[str, Any]], metrics: Sequence[str] = QUALITY) -> str:
    """Mean and 95% interval of each quality metric per setup, one panel per metric."""
    metrics = [m for m in metrics if any(m in row for row in summary.values())]
    fig, axes = _figure(2.6 * len(metrics), 0.5 + 0.42 * len(summary), len(metrics))
    setups = list(summary)
    for ax, metric in zip(axes, metrics, strict=True):
        for y, setup in enumerate(setups):
            ci = summary[setup].get(metric)
            if ci:
                ax.errorbar([ci["mean"]], [y], xerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                            fmt="o", capsize=3, color=COLORS.get(setup, "black"))
        ax.set_yticks(range(len(setups)), setups if ax is axes[0] else [""] * len(setups))
        ax.set_ylim(-0.6, len(setups) - 0.4)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return svg_of(fig, "quality")


def plot_cost_quality(summary: dict[str, dict[str, Any]], costs: dict[str, dict[str, Any]],
                      metric: str = "token_f1") -> str:
    """The headline metric against build seconds and against latency per answer."""
    axes_of = (("build_seconds", "train + index seconds"), ("latency_ms", "ms per answer"))
    fig, axes = _figure(7.5, 3.0, 2)
    for ax, (key, label) in zip(axes, axes_of, strict=True):
        for setup, row in summary.items():
            ci, x = row.get(metric), costs.get(setup, {}).get(key)
            if ci is None or x is None:
                continue
            ax.errorbar([x], [ci["mean"]], yerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                        fmt="o", capsize=3, color=COLORS.get(setup, "black"))
            ax.annotate(setup, (x, ci["mean"]), textcoords="offset points", xytext=(6, 4),
                        fontsize=8)
        ax.set_xlabel(label)
        ax.margins(x=0.2)  # room for the labels of the outermost points
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    return svg_of(fig, "cost")


def plot_losses(histories: dict[str, list[dict[str, float]]]) -> str:
    """Training loss per step, one panel per training stage."""
    stages = [s for s, h in histories.items() if h]
    fig, axes = _figure(3.6 * max(1, len(stages)), 2.8, max(1, len(stages)))
    for ax, stage in zip(axes, stages, strict=False):
        steps = [h["step"] for h in histories[stage]]
        losses = np.array([h["loss"] for h in histories[stage]])
        ax.plot(steps, losses, marker=".", color="#1f77b4", alpha=0.5, label="per step")
        if len(losses) >= 2 * SMOOTH:  # one batch's loss swings with its examples: show the trend
            trend = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
            ax.plot(steps[SMOOTH - 1:], trend, color="#d62728", label=f"mean of {SMOOTH}")
            ax.legend(fontsize=7)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    return svg_of(fig, "loss")


# ---- the embedding map --------------------------------------------------------------------------


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (signs fixed: each axis' largest loading positive)."""
    x = np.asarray(vectors, dtype=float)
    x = x - x.mean(axis=0)
    components = np.linalg.svd(x, full_matrices=False)[2][:2]
    # SVD signs are arbitrary: fix them so that reruns and the two panels do not flip at random
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    out = x @ (components * signs[:, None]).T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))  # fewer than 2 components: zeros


def nearest_gold(space: dict[str, Any]) -> tuple[list[int | None], list[float]]:
    """Per question: index of its most similar chunk of a relevant document, and that cosine."""
    chunks, questions = np.asarray(space["chunks"]), np.asarray(space["questions"])
    sims = questions @ chunks.T  # vectors are normalised: dot = cosine
    doc_ids = np.asarray(space["chunk_doc_ids"])
    picks, cosines = [], []
    for i, gold in enumerate(space["question_doc_ids"]):
        mask = np.isin(doc_ids, list(gold))
        if not mask.any():
            picks.append(None)
            continue
        j = int(np.where(mask, sims[i], -np.inf).argmax())
        picks.append(j)
        cosines.append(float(sims[i, j]))
    return picks, cosines


def plot_embedding_map(spaces: dict[str, dict[str, Any]]) -> str:
    """Chunks (grey) and eval questions (blue) in 2-D PCA, one panel per retriever, each question
    joined to its nearest relevant chunk: shorter lines = questions land nearer their documents."""
    fig, axes = _figure(4.2 * len(spaces), 4.0, len(spaces))
    for ax, (label, space) in zip(axes, spaces.items(), strict=True):
        n = len(space["chunks"])
        xy = pca_2d(np.vstack([space["chunks"], space["questions"]]))
        picks, cosines = nearest_gold(space)
        for i, j in enumerate(picks):
            if j is not None:
                ax.plot([xy[n + i, 0], xy[j, 0]], [xy[n + i, 1], xy[j, 1]], color="#1f77b4",
                        alpha=0.25, linewidth=0.6)
        ax.scatter(xy[:n, 0], xy[:n, 1], s=6, color="#999999", label="chunks")
        ax.scatter(xy[n:, 0], xy[n:, 1], s=10, color="#1f77b4", marker="x", label="eval questions")
        mean = f"{np.mean(cosines):.3f}" if cosines else "n/a"
        ax.set_title(f"{label}\nquestion → nearest relevant chunk: cosine {mean}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=8, loc="lower left")
    return svg_of(fig, "map")
