"""The picture of a comparison: scores of A against B, and the histogram of their differences. Needs matplotlib
(the `plot` extra); drawn with the Agg canvas, so no display and no global pyplot state."""

from __future__ import annotations

import io
from pathlib import Path

from ...extras import require
from ...forms.durable import write_file
from .scorer_report import Comparison


def require_matplotlib() -> None:
    require("matplotlib", "plot", "plotting")


def write_plot(comparison: Comparison, path: Path) -> None:
    """A PNG with two panels: A vs B per turn (with the line of agreement) and the histogram of Δ = B - A."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a, b = comparison.a_scores, comparison.b_scores
    turn = comparison.per_turn
    figure = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    scatter, histogram = figure.subplots(1, 2)

    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    scatter.plot([low, high], [low, high], color="0.6", linewidth=1, label="A = B")
    scatter.scatter(a, b, s=8, alpha=0.5, linewidths=0)
    scatter.set_xlabel(f"A: {Path(comparison.a).name}")
    scatter.set_ylabel(f"B: {Path(comparison.b).name}")
    scatter.set_title(f"{turn.n:,} turns: Spearman ρ {turn.spearman:.4f}, Kendall τ {turn.kendall:.4f}", fontsize=10)
    scatter.legend(loc="upper left", frameon=False)

    histogram.hist(b - a, bins=40)
    histogram.axvline(0, color="0.6", linewidth=1)
    histogram.set_xlabel("Δ = B - A (score)")
    histogram.set_ylabel("turns")
    overlaps = ", ".join(f"top {k:.0%} {v:.0%}" for k, v in comparison.per_record.top_overlap.items())
    histogram.set_title(f"mean |Δ| {turn.mean_abs_delta:.4f}, max |Δ| {turn.max_abs_delta:.4f}\n"
                        f"selection kept: {overlaps}", fontsize=10)
    figure.suptitle(f"{comparison.scorer} scores on {comparison.compared:,} records of {Path(comparison.data).name}")
    png = io.BytesIO()
    figure.savefig(png, format="png")
    write_file(path, png.getvalue())
