"""Tests for comparing a re-evaluation with its baseline (tasks/monitoring.py)."""

import math
from pathlib import Path

import pandas as pd
import pytest

from tasks.errors import VigilError
from tasks.monitoring import (
    DEFAULT_THRESHOLDS,
    HEADLINE_METRICS,
    Comparison,
    baseline_figures,
    card_figures,
    check_thresholds,
    compare_to_baseline,
    comparison_markdown,
    current_figures,
    degradation_message,
)
from tasks.schemas import Metrics
from tasks.store import write_table

ALL_SIX = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "specificity_macro",
)


def compare_one(baseline: float | None, value: float | None, threshold: float):
    [comparison] = compare_to_baseline(
        {"accuracy": baseline}, {"accuracy": value}, {"accuracy": threshold}
    )
    return comparison


# --- names and thresholds ---------------------------------------------------------


def test_headline_metrics_use_the_card_naming() -> None:
    assert HEADLINE_METRICS == ALL_SIX


def test_default_thresholds_exceed_the_noise_of_the_digits_test_set() -> None:
    # 95% Wilson half-width at accuracy 0.97 on 359 images, computed here.
    n, p, z = 359, 0.97, 1.959964
    half_width = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))

    assert half_width == pytest.approx(0.01824, abs=1e-5)
    assert DEFAULT_THRESHOLDS == {"accuracy": 0.02, "f1_macro": 0.02}
    assert min(DEFAULT_THRESHOLDS.values()) > half_width


def test_check_thresholds_returns_floats() -> None:
    assert check_thresholds({"accuracy": 0, "f1_weighted": 0.5}) == {
        "accuracy": 0.0,
        "f1_weighted": 0.5,
    }


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        (
            {"acc": 0.1, "test_accuracy": 0.1},
            r"unknown threshold metric\(s\) acc, test_accuracy; valid: accuracy, "
            "precision_macro, recall_macro, f1_macro, f1_weighted, specificity_macro",
        ),
        (
            {"accuracy": -0.01},
            "threshold for accuracy must be a number >= 0, got -0.01",
        ),
        ({"f1_macro": float("nan")}, "threshold for f1_macro must be a number >= 0"),
    ],
)
def test_check_thresholds_refuses_bad_input(thresholds: dict, message: str) -> None:
    with pytest.raises(VigilError, match=message):
        check_thresholds(thresholds)


# --- comparing ----------------------------------------------------------------------


def test_a_drop_equal_to_the_threshold_is_not_degraded() -> None:
    comparison = compare_one(0.9721, 0.9521, 0.02)

    assert comparison.drop == pytest.approx(0.02)
    assert not comparison.degraded
    assert comparison.status == "ok"


def test_a_drop_just_beyond_the_threshold_is_degraded() -> None:
    comparison = compare_one(0.9721, 0.9520, 0.02)

    assert comparison == Comparison(
        "accuracy", 0.9721, 0.952, 0.02, pytest.approx(0.0201), True
    )
    assert comparison.status == "degraded"


def test_a_zero_threshold_alarms_on_any_drop_and_not_on_equality() -> None:
    assert not compare_one(0.5, 0.5, 0.0).degraded
    assert compare_one(0.5, 0.4999, 0.0).degraded


def test_an_improvement_has_a_negative_drop_and_is_healthy() -> None:
    comparison = compare_one(0.90, 0.95, 0.02)

    assert comparison.drop == pytest.approx(-0.05)
    assert not comparison.degraded


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_missing_current_value_is_degraded(missing: float | None) -> None:
    comparison = compare_one(0.97, missing, 0.02)

    assert comparison == Comparison("accuracy", 0.97, None, 0.02, None, True)
    assert comparison.status == "missing"


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_figure_without_baseline_is_reported_but_never_alarms(
    missing: float | None,
) -> None:
    comparison = compare_one(missing, 0.10, 0.02)

    assert comparison == Comparison("accuracy", None, 0.10, 0.02, None, False)
    assert comparison.status == "no baseline"


def test_figures_without_threshold_are_shown_but_never_alarm() -> None:
    baseline = {"accuracy": 0.97, "recall_macro": 0.95, "f1_macro": 0.96}
    current = {"accuracy": 0.97, "recall_macro": 0.10, "f1_macro": None}

    comparisons = compare_to_baseline(baseline, current, {"accuracy": 0.02})

    assert [c.metric for c in comparisons] == ["accuracy", "recall_macro", "f1_macro"]
    assert [c.degraded for c in comparisons] == [False, False, False]
    assert [c.status for c in comparisons] == ["ok", "unchecked", "unchecked"]
    assert comparisons[1].drop == pytest.approx(0.85)


def test_comparisons_follow_headline_order_and_include_thresholded_figures() -> None:
    comparisons = compare_to_baseline(
        {"f1_weighted": 0.9, "accuracy": 0.9}, {"accuracy": 0.9}
    )

    assert [c.metric for c in comparisons] == ["accuracy", "f1_macro", "f1_weighted"]
    assert comparisons[1] == Comparison("f1_macro", None, None, 0.02, None, False)


def test_an_unregistered_model_has_no_baseline() -> None:
    comparisons = compare_to_baseline(None, {"accuracy": 0.5})

    assert [(c.metric, c.degraded) for c in comparisons] == [
        ("accuracy", False),
        ("f1_macro", False),
    ]


def test_card_style_names_are_refused_with_a_hint() -> None:
    with pytest.raises(
        VigilError,
        match=r"the baseline names unknown figure\(s\) test_accuracy; expected flat "
        r"headline names: accuracy, .* \(baseline_figures turns",
    ):
        compare_to_baseline({"test_accuracy": 0.9}, {"accuracy": 0.9})
    with pytest.raises(VigilError, match="the current figures names unknown"):
        compare_to_baseline({"accuracy": 0.9}, {"f1": 0.9})


def test_compare_checks_the_thresholds() -> None:
    with pytest.raises(VigilError, match="unknown threshold metric"):
        compare_to_baseline({"accuracy": 0.9}, {"accuracy": 0.9}, {"top5": 0.1})


# --- reporting ----------------------------------------------------------------------


def mixed_comparisons() -> list[Comparison]:
    return compare_to_baseline(
        {"accuracy": 0.9721, "f1_macro": 0.9700, "recall_macro": 0.95},
        {"accuracy": 0.9120, "f1_macro": None, "recall_macro": 0.96},
    )


def test_degradation_message_names_each_degraded_figure() -> None:
    message = degradation_message(mixed_comparisons(), "digits-lenet", 3)

    assert message == (
        "model digits-lenet version 3 degraded: "
        "accuracy 0.9120 < baseline 0.9721 - threshold 0.0200; "
        "f1_macro missing (baseline 0.9700, threshold 0.0200)"
    )


def test_healthy_message_names_the_checked_figures() -> None:
    comparisons = compare_to_baseline(
        {"accuracy": 0.97, "f1_macro": 0.96}, {"accuracy": 0.96, "f1_macro": 0.99}
    )

    assert degradation_message(comparisons, "digits-lenet", None) == (
        "model digits-lenet (unregistered) healthy: every checked figure within "
        "its threshold (accuracy, f1_macro)"
    )


def test_comparison_markdown_has_a_verdict_and_one_row_per_figure() -> None:
    markdown = comparison_markdown(mixed_comparisons(), "digits-lenet", 3)

    lines = markdown.splitlines()
    assert lines[0] == "### model digits-lenet version 3: degraded (accuracy, f1_macro)"
    assert lines[2:7] == [
        "| metric | baseline | now | drop | threshold | status |",
        "|---|---|---|---|---|---|",
        "| accuracy | 0.9721 | 0.9120 | 0.0601 | 0.0200 | degraded |",
        "| recall_macro | 0.9500 | 0.9600 | -0.0100 | n/a | unchecked |",
        "| f1_macro | 0.9700 | n/a | n/a | 0.0200 | missing |",
    ]
    assert "drop = baseline - now" in lines[-1]


def test_comparison_markdown_of_a_healthy_model() -> None:
    comparisons = compare_to_baseline({"accuracy": 0.9}, {"accuracy": 0.9})

    markdown = comparison_markdown(comparisons, "cifar10-resnet", 1)

    assert markdown.splitlines()[0] == "### model cifar10-resnet version 1: healthy"
    assert "| accuracy | 0.9000 | 0.9000 | 0.0000 | 0.0200 | ok |" in markdown
    assert "| f1_macro | n/a | n/a | n/a | 0.0200 | no baseline |" in markdown


# --- figures from a metrics table ---------------------------------------------------

PROVENANCE = {
    "run_id": "run-1",
    "model_name": "digits-lenet",
    "model_version": 3,
    "snapshot_id": "snap0001",
}
# (metric, average, value) of the overall rows; the values are made up.
OVERALL = [
    ("accuracy", None, 0.972145),
    ("precision", "macro", 0.96789),
    ("recall", "macro", 0.95),
    ("f1", "macro", 0.960049),
    ("f1", "weighted", 0.97),
    ("specificity", "macro", 0.996912),
    ("precision", "micro", 0.5),
    ("f1", "micro", 0.5),
    ("support", None, 359.0),
]
# Rounded to four decimals, as a model card stores them.
EXPECTED_TEST = {
    "accuracy": 0.9721,
    "precision_macro": 0.9679,
    "recall_macro": 0.95,
    "f1_macro": 0.96,
    "f1_weighted": 0.97,
    "specificity_macro": 0.9969,
}


def metric_row(split: str, environment: str, metric: str, average, value) -> dict:
    return {
        **PROVENANCE,
        "split": split,
        "environment": environment,
        "metric": metric,
        "average": average,
        "class_index": None,
        "class_name": None,
        "value": value,
        "lower": None,
        "upper": None,
        "count": 359,
    }


def per_class_row(split: str, metric: str, value: float) -> dict:
    row = metric_row(split, "clean", metric, None, value)
    return {**row, "class_index": 0, "class_name": "zero", "count": 36}


def metrics_table() -> pd.DataFrame:
    """Clean test and validation rows, shifted test rows, and per-class rows."""
    rows = [metric_row("test", "clean", *overall) for overall in OVERALL]
    rows += [metric_row("validation", "clean", m, a, v / 2) for m, a, v in OVERALL]
    rows += [metric_row("test", "shifted", m, a, 0.1) for m, a, _ in OVERALL]
    # Per-class rows share metric names with the headline but must not count.
    rows += [per_class_row("test", "f1", 0.1), per_class_row("test", "recall", 0.2)]
    return pd.DataFrame(rows)


def test_current_figures_are_the_rounded_overall_rows() -> None:
    assert current_figures(metrics_table()) == EXPECTED_TEST


def test_current_figures_of_another_split_and_environment() -> None:
    validation = current_figures(metrics_table(), split="validation")
    shifted = current_figures(metrics_table(), environment="shifted")

    assert validation["accuracy"] == 0.4861
    assert validation["specificity_macro"] == 0.4985
    assert shifted == dict.fromkeys(ALL_SIX, 0.1)


def test_a_missing_or_nan_figure_is_none() -> None:
    table = metrics_table()
    is_f1_macro = (table["metric"] == "f1") & (table["average"] == "macro")
    table.loc[is_f1_macro, "value"] = float("nan")
    is_recall = (table["metric"] == "recall") & (table["average"] == "macro")

    figures = current_figures(table[~is_recall])

    assert figures["f1_macro"] is None
    assert figures["recall_macro"] is None
    assert figures["accuracy"] == 0.9721


def test_current_figures_refuse_an_absent_split() -> None:
    table = metrics_table()

    with pytest.raises(
        VigilError,
        match="no overall metric rows for split 'train' in environment 'clean'; "
        "present \\(split/environment\\): test/clean, test/shifted, validation/clean",
    ):
        current_figures(table, split="train")


def test_current_figures_refuse_several_runs() -> None:
    table = metrics_table()
    two_runs = pd.concat([table, table.assign(run_id="run-2")])

    with pytest.raises(VigilError, match="metrics mix run ids run-1, run-2"):
        current_figures(two_runs)


def test_card_figures_prefix_each_split_of_one_environment() -> None:
    figures = card_figures(metrics_table())

    assert {k: v for k, v in figures.items() if k.startswith("test_")} == {
        f"test_{name}": value for name, value in EXPECTED_TEST.items()
    }
    assert len(figures) == 12
    assert figures["validation_accuracy"] == 0.4861


def test_card_figures_agree_with_registration(tmp_path: Path) -> None:
    from tasks.registration import headline_figures

    clean = metrics_table().query("environment == 'clean'")
    path = write_table(clean, Metrics, tmp_path / "metrics.parquet")

    assert card_figures(clean) == headline_figures(path)


def test_baseline_figures_take_one_split_of_a_card() -> None:
    card = {**card_figures(metrics_table()), "test_f1_weighted": None}
    del card["test_recall_macro"]

    baseline = baseline_figures(card)

    assert baseline == {**EXPECTED_TEST, "f1_weighted": None, "recall_macro": None}
    assert baseline_figures(card, split="validation")["accuracy"] == 0.4861


def test_baseline_figures_refuse_a_card_without_the_split() -> None:
    with pytest.raises(
        VigilError,
        match=r"the model card records no test figures \(recorded: "
        "validation_accuracy\\)",
    ):
        baseline_figures({"validation_accuracy": 0.9})


def test_an_unchanged_model_compares_equal_to_its_card() -> None:
    table = metrics_table()
    baseline = baseline_figures(card_figures(table))

    comparisons = compare_to_baseline(baseline, current_figures(table))

    assert [c.drop for c in comparisons] == [0.0] * 6
    assert not any(c.degraded for c in comparisons)
