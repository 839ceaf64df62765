"""Tests for model.metrics, with scikit-learn and SciPy as independent references."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from sklearn.metrics import (
    accuracy_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from model.metrics import (
    Z_95_PERCENT,
    ClassificationReport,
    ConfusionAccumulator,
    classification_metrics,
    confusion_matrix,
    to_rows,
    wilson_interval,
)

# Every value, averages included, must equal scikit-learn's to the bit.
EXACT = {"rtol": 0, "atol": 0, "equal_nan": True}
AVERAGES = ("macro", "weighted", "micro")


@dataclass(frozen=True)
class Case:
    """Integer labels in [0, num_classes) for one metrics computation."""

    targets: np.ndarray
    predictions: np.ndarray
    num_classes: int


def _case(targets: list[int], predictions: list[int], num_classes: int) -> Case:
    """Build a case from plain lists."""
    return Case(np.array(targets), np.array(predictions), num_classes)


def _random_case(num_classes: int, num_samples: int, seed: int) -> Case:
    """Draw labels and predictions that are right about 60% of the time."""
    generator = np.random.default_rng(seed)
    targets = generator.integers(0, num_classes, num_samples)
    guesses = generator.integers(0, num_classes, num_samples)
    predictions = np.where(generator.random(num_samples) < 0.6, targets, guesses)
    return Case(targets, predictions, num_classes)


CASES = {
    "random-C2-N50": _random_case(2, 50, seed=0),
    "random-C3-N7": _random_case(3, 7, seed=1),
    "random-C5-N200": _random_case(5, 200, seed=2),
    "random-C10-N1000": _random_case(10, 1000, seed=3),
    "random-C17-N40": _random_case(17, 40, seed=4),
    # Absent classes among more than 8, where NaN handling changes the sum order.
    "random-C40-N60": _random_case(40, 60, seed=0),
    # Over 128 classes, where NumPy's pairwise summation splits in halves.
    "random-C200-N5000": _random_case(200, 5000, seed=6),
    "class-never-predicted": _case([0, 1, 2, 2, 1, 0], [0, 1, 1, 1, 0, 0], 3),
    "class-absent-from-targets": _case([0, 1, 1, 0, 1, 0], [0, 2, 1, 2, 1, 0], 3),
    "class-absent-from-both": _case([0, 1, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0], 4),
    "single-class": _case([0, 0, 0, 0], [0, 0, 0, 0], 1),
    "all-correct": _case([0, 1, 2, 3, 3, 2, 1, 0, 2], [0, 1, 2, 3, 3, 2, 1, 0, 2], 4),
    "all-wrong": _case([0, 1, 2, 3, 0, 1], [1, 2, 3, 0, 1, 2], 4),
    # Only class 0 is true and it is never predicted: every class with a
    # defined precision has zero support, so weighted precision has no weight.
    "weights-sum-to-zero": _case([0, 0, 0, 0], [1, 2, 1, 2], 3),
}

case_parameters = pytest.mark.parametrize(
    "case", [pytest.param(case, id=name) for name, case in CASES.items()]
)


def _report(case: Case) -> ClassificationReport:
    """Run the code under test on a case, on the CPU."""
    predictions = torch.from_numpy(case.predictions)
    targets = torch.from_numpy(case.targets)
    confusion = confusion_matrix(predictions, targets, case.num_classes)
    return classification_metrics(confusion)


def _sklearn_scores(case: Case, average: str | None) -> tuple:
    """Precision, recall, F1 and support from scikit-learn with NaN for 0/0."""
    return precision_recall_fscore_support(
        case.targets,
        case.predictions,
        labels=list(range(case.num_classes)),
        average=average,
        zero_division=np.nan,
    )


def _sklearn_outcomes(case: Case) -> dict[str, np.ndarray]:
    """One-vs-rest counts per class from scikit-learn's multilabel matrices."""
    labels = list(range(case.num_classes))
    matrices = multilabel_confusion_matrix(
        case.targets, case.predictions, labels=labels
    )
    return {
        "true_negatives": matrices[:, 0, 0],
        "false_positives": matrices[:, 0, 1],
        "false_negatives": matrices[:, 1, 0],
        "true_positives": matrices[:, 1, 1],
    }


def _sklearn_specificity(case: Case) -> np.ndarray:
    """TN / (TN + FP) per class, NaN where there are no negatives."""
    outcomes = _sklearn_outcomes(case)
    negatives = outcomes["true_negatives"] + outcomes["false_positives"]
    with np.errstate(invalid="ignore"):
        return outcomes["true_negatives"] / negatives


def _reference_nan_average(
    values: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """The documented averaging rule restated with NumPy."""
    present = ~np.isnan(values)
    if not present.any():
        return np.nan
    if weights is None:
        return float(np.nanmean(values))
    if weights[present].sum() == 0:
        return float(values[present].mean())
    return float(np.average(values[present], weights=weights[present]))


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor to a NumPy array on the CPU."""
    return tensor.detach().cpu().numpy()


def _wilson_from_scipy(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval without continuity correction, from SciPy."""
    interval = binomtest(successes, n).proportion_ci(method="wilson")
    return interval.low, interval.high


# sklearn warns about a single label even when labels= is given.
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@case_parameters
def test_confusion_matrix_matches_sklearn(case: Case) -> None:
    expected = sklearn_confusion_matrix(
        case.targets, case.predictions, labels=list(range(case.num_classes))
    )
    confusion = confusion_matrix(
        torch.from_numpy(case.predictions),
        torch.from_numpy(case.targets),
        case.num_classes,
    )
    assert confusion.dtype == torch.int64
    np.testing.assert_array_equal(_as_numpy(confusion), expected)


@case_parameters
def test_per_class_scores_match_sklearn(case: Case) -> None:
    report = _report(case)
    precision, recall, f1, support = _sklearn_scores(case, average=None)
    expected = {"precision": precision, "recall": recall, "f1": f1}
    for metric, values in expected.items():
        np.testing.assert_allclose(
            _as_numpy(report.per_class[metric]),
            values,
            **EXACT,
            err_msg=metric,
        )
    np.testing.assert_array_equal(_as_numpy(report.per_class["support"]), support)


@case_parameters
@pytest.mark.parametrize("average", AVERAGES)
def test_averages_match_sklearn(case: Case, average: str) -> None:
    report = _report(case)
    precision, recall, f1, _ = _sklearn_scores(case, average=average)
    expected = {"precision": precision, "recall": recall, "f1": f1}
    for metric, value in expected.items():
        np.testing.assert_allclose(
            report.averages[metric, average].item(),
            value,
            **EXACT,
            err_msg=metric,
        )


@case_parameters
def test_accuracy_matches_sklearn(case: Case) -> None:
    report = _report(case)
    assert report.accuracy.item() == accuracy_score(case.targets, case.predictions)
    assert report.num_samples == len(case.targets)


@case_parameters
def test_specificity_matches_multilabel_confusion_matrix(case: Case) -> None:
    report = _report(case)
    expected = _sklearn_specificity(case)
    np.testing.assert_allclose(
        _as_numpy(report.per_class["specificity"]),
        expected,
        **EXACT,
    )
    _, _, _, support = _sklearn_scores(case, average=None)
    averages = {"macro": None, "weighted": support}
    for average, weights in averages.items():
        np.testing.assert_allclose(
            report.averages["specificity", average].item(),
            _reference_nan_average(expected, weights),
            **EXACT,
            err_msg=average,
        )


@case_parameters
def test_reference_average_rule_reproduces_sklearn(case: Case) -> None:
    """Checks the rule used as the specificity reference on sklearn's own output."""
    *scores, support = _sklearn_scores(case, average=None)
    macro = _sklearn_scores(case, average="macro")[:3]
    weighted = _sklearn_scores(case, average="weighted")[:3]
    for values, macro_value, weighted_value in zip(
        scores, macro, weighted, strict=True
    ):
        np.testing.assert_allclose(_reference_nan_average(values), macro_value, **EXACT)
        np.testing.assert_allclose(
            _reference_nan_average(values, support), weighted_value, **EXACT
        )


@case_parameters
def test_report_tensors_are_float64_on_the_input_device(case: Case) -> None:
    report = _report(case)
    tensors = [report.accuracy, *report.per_class.values(), *report.averages.values()]
    assert all(tensor.dtype == torch.float64 for tensor in tensors)
    assert all(tensor.device == torch.device("cpu") for tensor in tensors)
    assert all(tensor.dim() == 0 for tensor in report.averages.values())
    shapes = {tuple(tensor.shape) for tensor in report.per_class.values()}
    assert shapes == {(case.num_classes,)}


@case_parameters
def test_batched_accumulation_equals_one_shot(case: Case) -> None:
    predictions = torch.from_numpy(case.predictions)
    targets = torch.from_numpy(case.targets)
    one_shot = confusion_matrix(predictions, targets, case.num_classes)
    accumulator = ConfusionAccumulator(case.num_classes)
    summed = torch.zeros_like(one_shot)
    # Five uneven batches, the last one short when N is not a multiple of 5.
    batch_size = math.ceil(len(predictions) / 5)
    batches = zip(predictions.split(batch_size), targets.split(batch_size), strict=True)
    for batch_predictions, batch_targets in batches:
        summed += confusion_matrix(batch_predictions, batch_targets, case.num_classes)
        accumulator.update(batch_predictions, batch_targets)
    assert torch.equal(summed, one_shot)
    assert torch.equal(accumulator.compute(), one_shot)


def test_accumulator_accepts_an_empty_batch() -> None:
    case = CASES["random-C5-N200"]
    accumulator = ConfusionAccumulator(case.num_classes)
    empty = torch.empty(0, dtype=torch.int64)
    accumulator.update(empty, empty)
    accumulator.update(
        torch.from_numpy(case.predictions), torch.from_numpy(case.targets)
    )
    expected = sklearn_confusion_matrix(
        case.targets, case.predictions, labels=list(range(case.num_classes))
    )
    np.testing.assert_array_equal(_as_numpy(accumulator.compute()), expected)


def test_no_samples_gives_nan_rates_and_zero_support() -> None:
    empty = torch.empty(0, dtype=torch.int64)
    report = classification_metrics(confusion_matrix(empty, empty, 3))
    assert report.num_samples == 0
    assert torch.isnan(report.accuracy)
    for metric in ("precision", "recall", "f1", "specificity"):
        assert torch.isnan(report.per_class[metric]).all(), metric
    assert torch.isnan(torch.stack(list(report.averages.values()))).all()
    assert not report.per_class["support"].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@case_parameters
def test_cuda_matches_sklearn(case: Case) -> None:
    device = torch.device("cuda")
    predictions = torch.from_numpy(case.predictions).to(device)
    targets = torch.from_numpy(case.targets).to(device)
    confusion = confusion_matrix(predictions, targets, case.num_classes)
    report = classification_metrics(confusion)
    assert confusion.is_cuda and report.accuracy.is_cuda
    assert all(tensor.is_cuda for tensor in report.per_class.values())
    assert all(tensor.is_cuda for tensor in report.averages.values())
    precision, recall, f1, _ = _sklearn_scores(case, average=None)
    per_class = {"precision": precision, "recall": recall, "f1": f1}
    for metric, expected in per_class.items():
        np.testing.assert_allclose(
            _as_numpy(report.per_class[metric]), expected, **EXACT, err_msg=metric
        )
    for average in AVERAGES:
        expected = _sklearn_scores(case, average=average)[:3]
        for metric, value in zip(("precision", "recall", "f1"), expected, strict=True):
            np.testing.assert_allclose(
                report.averages[metric, average].item(),
                value,
                **EXACT,
                err_msg=f"{metric} {average}",
            )


@pytest.mark.parametrize(
    ("predictions", "targets", "num_classes", "message"),
    [
        pytest.param(
            torch.tensor([0, 1]),
            torch.tensor([0, 1, 1]),
            2,
            r"expected predictions and targets of the same shape "
            r"but got \(2,\) and \(3,\)",
            id="shape-mismatch",
        ),
        pytest.param(
            torch.zeros(2, 2, dtype=torch.int64),
            torch.zeros(2, 2, dtype=torch.int64),
            2,
            r"expected 1-D predictions but got shape \(2, 2\)",
            id="two-dimensional",
        ),
        pytest.param(
            torch.tensor([0.0, 1.0]),
            torch.tensor([0, 1]),
            2,
            r"expected integer predictions but got dtype torch\.float32",
            id="float-predictions",
        ),
        pytest.param(
            torch.tensor([0, 1]),
            torch.tensor([True, False]),
            2,
            r"expected integer targets but got dtype torch\.bool",
            id="bool-targets",
        ),
        pytest.param(
            torch.tensor([-1, 3]),
            torch.tensor([0, 1]),
            10,
            r"expected predictions in \[0, 10\) but got values from -1 to 3",
            id="negative-prediction",
        ),
        pytest.param(
            torch.tensor([0, 1]),
            torch.tensor([0, 2]),
            2,
            r"expected targets in \[0, 2\) but got values from 0 to 2",
            id="target-too-large",
        ),
        pytest.param(
            torch.tensor([0]),
            torch.tensor([0]),
            0,
            r"expected num_classes >= 1 but got 0",
            id="no-classes",
        ),
        pytest.param(
            torch.tensor([0]),
            torch.tensor([0]),
            2.0,
            r"expected an int num_classes but got 2\.0",
            id="float-num-classes",
        ),
    ],
)
def test_confusion_matrix_rejects_bad_input(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(predictions, targets, num_classes)


def test_accumulator_rejects_bad_batch() -> None:
    accumulator = ConfusionAccumulator(3)
    with pytest.raises(ValueError, match=r"expected targets in \[0, 3\)"):
        accumulator.update(torch.tensor([0, 1]), torch.tensor([0, 3]))


@pytest.mark.parametrize(
    ("confusion", "message"),
    [
        pytest.param(
            torch.zeros(2, 3, dtype=torch.int64),
            r"expected a square confusion matrix but got shape \(2, 3\)",
            id="not-square",
        ),
        pytest.param(
            torch.zeros(4, dtype=torch.int64),
            r"expected a square confusion matrix but got shape \(4,\)",
            id="one-dimensional",
        ),
        pytest.param(
            torch.zeros(0, 0, dtype=torch.int64),
            r"expected at least one class but got a 0 x 0 matrix",
            id="empty",
        ),
        pytest.param(
            torch.zeros(2, 2),
            r"expected integer counts but got dtype torch\.float32",
            id="float-counts",
        ),
        pytest.param(
            torch.tensor([[1, -1], [0, 2]]),
            r"expected non-negative counts but got a minimum of -1",
            id="negative-count",
        ),
    ],
)
def test_classification_metrics_rejects_bad_matrix(
    confusion: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(confusion)


WILSON_COUNTS = [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (7, 13), (999, 1000)]


@pytest.mark.parametrize(
    ("successes", "n"),
    [
        pytest.param(*counts, id=f"{counts[0]}-of-{counts[1]}")
        for counts in WILSON_COUNTS
    ],
)
def test_wilson_interval_matches_scipy(successes: int, n: int) -> None:
    np.testing.assert_allclose(
        wilson_interval(successes, n),
        _wilson_from_scipy(successes, n),
        rtol=1e-12,
        atol=1e-15,
    )


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.99])
def test_wilson_interval_takes_any_quantile(confidence: float) -> None:
    z = norm.ppf(0.5 + confidence / 2)
    interval = binomtest(17, 40).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    np.testing.assert_allclose(
        wilson_interval(17, 40, z=z), (interval.low, interval.high), rtol=1e-12
    )


def test_default_quantile_is_the_two_sided_95_percent_normal_quantile() -> None:
    assert math.isclose(norm.ppf(0.975), Z_95_PERCENT, rel_tol=1e-15)


def test_wilson_interval_of_no_trials_is_nan() -> None:
    assert np.isnan(wilson_interval(0, 0)).all()


@pytest.mark.parametrize(
    ("successes", "n"),
    [
        pytest.param(4, 3, id="more-successes-than-trials"),
        pytest.param(-1, 3, id="negative-successes"),
        pytest.param(0, -1, id="negative-trials"),
    ],
)
def test_wilson_interval_rejects_impossible_counts(successes: int, n: int) -> None:
    with pytest.raises(ValueError, match=r"expected 0 <= successes <= n but got"):
        wilson_interval(successes, n)


def _rows_by_key(case: Case) -> dict[tuple, dict]:
    """Rows from the code under test, keyed by (metric, average, class_index)."""
    names = [f"class-{index}" for index in range(case.num_classes)]
    rows = to_rows(_report(case), names)
    keyed = {(row["metric"], row["average"], row["class_index"]): row for row in rows}
    assert len(keyed) == len(rows), "duplicate rows"
    return keyed


def _values(rows: list[dict]) -> np.ndarray:
    """Row values as floats, with None read back as NaN."""
    return np.array([np.nan if row["value"] is None else row["value"] for row in rows])


@case_parameters
def test_rows_match_sklearn(case: Case) -> None:
    keyed = _rows_by_key(case)
    precision, recall, f1, support = _sklearn_scores(case, average=None)
    per_class = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "specificity": _sklearn_specificity(case),
        "support": support,
    }
    for metric, expected in per_class.items():
        rows = [keyed[metric, None, index] for index in range(case.num_classes)]
        assert [row["class_name"] for row in rows] == [
            f"class-{index}" for index in range(case.num_classes)
        ]
        np.testing.assert_allclose(_values(rows), expected, **EXACT, err_msg=metric)
    for average in AVERAGES:
        expected = _sklearn_scores(case, average=average)[:3]
        rows = [
            keyed[metric, average, None] for metric in ("precision", "recall", "f1")
        ]
        np.testing.assert_allclose(_values(rows), expected, **EXACT, err_msg=average)
    accuracy = accuracy_score(case.targets, case.predictions)
    assert keyed["accuracy", None, None]["value"] == accuracy


@case_parameters
def test_rows_hold_plain_python_values(case: Case) -> None:
    rows = list(_rows_by_key(case).values())
    expected_keys = {
        "metric",
        "average",
        "class_index",
        "class_name",
        "value",
        "lower",
        "upper",
        "count",
    }
    assert all(set(row) == expected_keys for row in rows)
    for row in rows:
        for key, value in row.items():
            assert type(value) in (str, int, float, type(None)), (key, value)


@case_parameters
def test_row_intervals_and_counts(case: Case) -> None:
    keyed = _rows_by_key(case)
    outcomes = _sklearn_outcomes(case)
    true_positives = outcomes["true_positives"]
    trials = {
        "precision": (true_positives, true_positives + outcomes["false_positives"]),
        "recall": (true_positives, true_positives + outcomes["false_negatives"]),
        "specificity": (
            outcomes["true_negatives"],
            outcomes["true_negatives"] + outcomes["false_positives"],
        ),
    }
    for metric, (successes, totals) in trials.items():
        for index in range(case.num_classes):
            row = keyed[metric, None, index]
            _assert_interval(row, int(successes[index]), int(totals[index]))
    support = _sklearn_scores(case, average=None)[3]
    for metric in ("f1", "support"):
        for index in range(case.num_classes):
            row = keyed[metric, None, index]
            assert (row["lower"], row["upper"]) == (None, None)
            assert row["count"] == support[index]
    correct = int(np.sum(case.targets == case.predictions))
    num_samples = len(case.targets)
    _assert_interval(keyed["accuracy", None, None], correct, num_samples)
    for metric in ("precision", "recall", "f1"):
        _assert_interval(keyed[metric, "micro", None], correct, num_samples)
    for metric in ("precision", "recall", "f1", "specificity"):
        for average in ("macro", "weighted"):
            row = keyed[metric, average, None]
            assert (row["lower"], row["upper"]) == (None, None)
            assert row["count"] == num_samples


def _assert_interval(row: dict, successes: int, n: int) -> None:
    """Check a row's count and its Wilson bounds against SciPy."""
    assert row["count"] == n, row
    if n == 0:
        assert (row["value"], row["lower"], row["upper"]) == (None, None, None)
        return
    np.testing.assert_allclose(
        (row["lower"], row["upper"]),
        _wilson_from_scipy(successes, n),
        rtol=1e-12,
        atol=1e-15,
        err_msg=str(row),
    )


def test_rows_need_one_name_per_class() -> None:
    report = _report(CASES["random-C3-N7"])
    with pytest.raises(ValueError, match=r"expected 3 class names but got 2"):
        to_rows(report, ["cat", "dog"])
