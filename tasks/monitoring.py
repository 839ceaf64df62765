"""Compare a re-evaluation with the model's baseline: its card's headline figures.

Figures are flat names such as ``accuracy`` or ``f1_macro``; a model card
stores them per split, e.g. ``test_accuracy``. ``figure_name`` is the one
naming rule for both, and ``card_figures`` builds a card's figures from a
metrics table the same way ``current_figures`` builds a re-evaluation's.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from tasks.errors import VigilError

# The overall rows that make a model's headline: (metric, average), where an
# average of None is the metric over all samples.
HEADLINE: tuple[tuple[str, str | None], ...] = (
    ("accuracy", None),
    ("precision", "macro"),
    ("recall", "macro"),
    ("f1", "macro"),
    ("f1", "weighted"),
    ("specificity", "macro"),
)
DEFAULT_SPLIT = "test"
# The environment that tasks.evaluation.evaluate_model writes by default.
DEFAULT_ENVIRONMENT = "clean"
# Model cards store figures rounded to this many decimals; a re-evaluation is
# rounded the same way so that an unchanged model compares exactly equal.
FIGURE_DECIMALS = 4
# A drop that equals its threshold in decimal must not alarm merely because
# binary floats make e.g. 0.9721 - 0.9521 come out a hair above 0.02.
DROP_TOLERANCE = 1e-9


def figure_name(metric: str, average: str | None) -> str:
    """The flat name of a headline figure, e.g. ``accuracy`` or ``f1_macro``."""
    return f"{metric}_{average}" if average else metric


HEADLINE_METRICS: tuple[str, ...] = tuple(figure_name(m, a) for m, a in HEADLINE)

# The largest allowed absolute drop per figure. Test sets are small, so a few
# points are within noise: the 95% Wilson interval of accuracy 0.97 on digits'
# 359 test images has half-width
#   z / (1 + z^2/n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
#   = 1.96 / 1.0107 * sqrt(0.97 * 0.03 / 359 + 3.8416 / 515524) = 0.0182,
# so a drop of 0.02 is about the smallest that is not explained by sampling.
DEFAULT_THRESHOLDS: dict[str, float] = {"accuracy": 0.02, "f1_macro": 0.02}


def check_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    """Refuse unknown figure names and negative or NaN thresholds."""
    unknown = sorted(set(thresholds) - set(HEADLINE_METRICS))
    if unknown:
        raise VigilError(
            f"unknown threshold metric(s) {', '.join(unknown)}; "
            f"valid: {', '.join(HEADLINE_METRICS)}"
        )
    checked = {}
    for name, threshold in thresholds.items():
        value = float(threshold)
        if math.isnan(value) or value < 0:
            raise VigilError(
                f"threshold for {name} must be a number >= 0, got {threshold!r}"
            )
        checked[name] = value
    return checked


@dataclass(frozen=True)
class Comparison:
    """One headline figure now against its baseline.

    ``drop`` is baseline - value (negative: improved), None when either is
    missing; ``threshold`` is None for a figure that is shown but not checked.
    """

    metric: str
    baseline: float | None
    value: float | None
    threshold: float | None
    drop: float | None
    degraded: bool

    @property
    def status(self) -> str:
        """One word for a table: degraded, missing, no baseline, unchecked, ok."""
        if self.degraded:
            return "missing" if self.value is None else "degraded"
        if self.baseline is None:
            return "no baseline"
        return "unchecked" if self.threshold is None else "ok"


def as_figure(value: float | None) -> float | None:
    """A figure as a float, with None and NaN both meaning missing."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def check_names(figures: Mapping[str, float | None], what: str) -> None:
    """Refuse figure names outside the headline, e.g. a card's ``test_accuracy``."""
    unknown = sorted(set(figures) - set(HEADLINE_METRICS))
    if unknown:
        raise VigilError(
            f"{what} names unknown figure(s) {', '.join(unknown)}; "
            f"expected flat headline names: {', '.join(HEADLINE_METRICS)} "
            "(baseline_figures turns a card's test_accuracy into accuracy)"
        )


def compare_one(
    metric: str, baseline: float | None, value: float | None, threshold: float | None
) -> Comparison:
    """Compare one figure; it alarms only when it has a baseline and a threshold."""
    baseline, value = as_figure(baseline), as_figure(value)
    checked = baseline is not None and threshold is not None
    if baseline is None or value is None:
        # A figure that vanished is as bad as one that fell; one that never had
        # a baseline has nothing to fall from.
        return Comparison(metric, baseline, value, threshold, None, checked)
    drop = baseline - value
    degraded = checked and drop > threshold + DROP_TOLERANCE
    return Comparison(metric, baseline, value, threshold, drop, degraded)


def compare_to_baseline(
    baseline: Mapping[str, float | None] | None,
    current: Mapping[str, float | None],
    thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS,
) -> list[Comparison]:
    """Compare every headline figure present in any input, in headline order.

    A figure degrades when it has a threshold and a baseline and now is lower
    than baseline - threshold, or is missing (None or NaN). A figure without a
    baseline (all of them when ``baseline`` is None, an unregistered model), or
    without a threshold, is reported but never alarms.
    """
    checked = check_thresholds(thresholds)
    baseline = baseline or {}
    check_names(baseline, "the baseline")
    check_names(current, "the current figures")
    present = set(baseline) | set(current) | set(checked)
    return [
        compare_one(name, baseline.get(name), current.get(name), checked.get(name))
        for name in HEADLINE_METRICS
        if name in present
    ]


def model_label(model_name: str, model_version: int | None) -> str:
    """'model digits-lenet version 3', or '(unregistered)' without a version."""
    if model_version is None:
        return f"model {model_name} (unregistered)"
    return f"model {model_name} version {model_version}"


def describe_degradation(comparison: Comparison) -> str:
    """Why one figure degraded, with its baseline, value and threshold."""
    c = comparison
    if c.value is None:
        return (
            f"{c.metric} missing (baseline {c.baseline:.4f}, "
            f"threshold {c.threshold:.4f})"
        )
    return (
        f"{c.metric} {c.value:.4f} < baseline {c.baseline:.4f} "
        f"- threshold {c.threshold:.4f}"
    )


def degradation_message(
    comparisons: Iterable[Comparison], model_name: str, model_version: int | None
) -> str:
    """One line: each degraded figure with its numbers, or that all is healthy."""
    label = model_label(model_name, model_version)
    comparisons = list(comparisons)
    degraded = [c for c in comparisons if c.degraded]
    if degraded:
        details = "; ".join(describe_degradation(c) for c in degraded)
        return f"{label} degraded: {details}"
    checked = [c.metric for c in comparisons if c.status == "ok"]
    within = ", ".join(checked) if checked else "none checked"
    return f"{label} healthy: every checked figure within its threshold ({within})"


def cell(value: float | None) -> str:
    """A figure for a markdown cell: four decimals, or n/a when missing."""
    return "n/a" if value is None else f"{value:.4f}"


def comparison_markdown(
    comparisons: Iterable[Comparison], model_name: str, model_version: int | None
) -> str:
    """A markdown report: a header line (degraded or healthy) and one table row
    per figure (metric | baseline | now | drop | threshold | status)."""
    comparisons = list(comparisons)
    degraded = [c.metric for c in comparisons if c.degraded]
    verdict = f"degraded ({', '.join(degraded)})" if degraded else "healthy"
    lines = [
        f"### {model_label(model_name, model_version)}: {verdict}",
        "",
        "| metric | baseline | now | drop | threshold | status |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.metric} | {cell(c.baseline)} | {cell(c.value)} | {cell(c.drop)} "
        f"| {cell(c.threshold)} | {c.status} |"
        for c in comparisons
    ]
    lines += [
        "",
        "drop = baseline - now; a checked figure degrades when its drop exceeds "
        "the threshold or its value is missing.",
    ]
    return "\n".join(lines) + "\n"


def overall_rows(metrics: pd.DataFrame, split: str, environment: str) -> pd.DataFrame:
    """The overall (not per-class) rows of one split and environment of one run."""
    rows = metrics[
        (metrics["split"] == split)
        & (metrics["environment"] == environment)
        & metrics["class_index"].isna()
    ]
    if rows.empty:
        pairs = metrics["split"] + "/" + metrics["environment"]
        shown = ", ".join(sorted(set(pairs))) or "none"
        raise VigilError(
            f"no overall metric rows for split {split!r} in environment "
            f"{environment!r}; present (split/environment): {shown}"
        )
    run_ids = sorted(rows["run_id"].unique())
    if len(run_ids) > 1:
        raise VigilError(
            f"metrics mix run ids {', '.join(run_ids)}; pass one run's rows"
        )
    return rows


def figure_value(rows: pd.DataFrame, metric: str, average: str | None) -> float | None:
    """One headline figure from a run's overall rows, rounded as on a card."""
    same_average = (
        rows["average"].isna() if average is None else (rows["average"] == average)
    )
    matching = rows.loc[(rows["metric"] == metric) & same_average, "value"]
    if len(matching) > 1:
        raise VigilError(
            f"{len(matching)} rows for {figure_name(metric, average)}; expected one"
        )
    value = as_figure(matching.iloc[0]) if len(matching) else None
    return None if value is None else round(value, FIGURE_DECIMALS)


def current_figures(
    metrics: pd.DataFrame,
    split: str = DEFAULT_SPLIT,
    environment: str = DEFAULT_ENVIRONMENT,
) -> dict[str, float | None]:
    """The headline figures of a Metrics frame; None where a row is missing."""
    rows = overall_rows(metrics, split, environment)
    return {
        figure_name(metric, average): figure_value(rows, metric, average)
        for metric, average in HEADLINE
    }


def card_figures(
    metrics: pd.DataFrame, environment: str = DEFAULT_ENVIRONMENT
) -> dict[str, float | None]:
    """A model card's flat figures, per split: ``test_accuracy``, ``test_f1_macro``."""
    splits = sorted(
        metrics.loc[metrics["environment"] == environment, "split"].unique()
    )
    return {
        f"{split}_{name}": value
        for split in splits
        for name, value in current_figures(metrics, split, environment).items()
    }


def baseline_figures(
    card_metrics: Mapping[str, float | None], split: str = DEFAULT_SPLIT
) -> dict[str, float | None]:
    """A card's figures of one split under flat names; None where absent.

    A card with no figure at all for ``split`` is refused: comparing with it
    would silently check nothing.
    """
    keys = {name: f"{split}_{name}" for name in HEADLINE_METRICS}
    if not set(keys.values()) & set(card_metrics):
        recorded = ", ".join(sorted(card_metrics)) or "none"
        raise VigilError(
            f"the model card records no {split} figures (recorded: {recorded})"
        )
    return {name: card_metrics.get(key) for name, key in keys.items()}
