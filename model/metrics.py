"""Confusion matrices and classification metrics in pure PyTorch.

Everything runs on the device of the input tensors. The metrics follow
scikit-learn's ``precision_recall_fscore_support(..., labels=range(C),
zero_division=np.nan)``: a zero denominator gives NaN, and NaN classes are left
out of the macro and weighted averages. All values match scikit-learn bit for
bit, averages included, because sums follow NumPy's pairwise order; that costs
about C / 8 small tensor operations per average, negligible at eval time.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# The two-sided 95% normal quantile, ``scipy.stats.norm.ppf(0.975)``.
Z_95_PERCENT = 1.959963984540054

PER_CLASS_METRICS = ("precision", "recall", "f1", "specificity", "support")
AVERAGED_METRICS = ("precision", "recall", "f1")

# torch.bincount accepts these; bool and the wide unsigned types are refused.
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# For each proportion: the counts of successes and of failures among n trials.
_PROPORTION_COUNTS = {
    "precision": ("true_positives", "false_positives"),
    "recall": ("true_positives", "false_negatives"),
    "specificity": ("true_negatives", "false_positives"),
}

# NumPy's pairwise summation: 8 interleaved lanes within blocks of 128 entries.
_PAIRWISE_LANES = 8
_PAIRWISE_BLOCK_SIZE = 128

Row = dict[str, str | int | float | None]


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Count samples per (true class, predicted class) as an int64 [C, C] matrix."""
    _check_labels(predictions, targets, num_classes)
    # One flat index per sample, row-major over (true, predicted): shape [N].
    flat_indices = targets.long() * num_classes + predictions.long()
    counts = torch.bincount(flat_indices, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)  # [C * C] -> [C, C]


class ConfusionAccumulator:
    """Sums confusion matrices over batches: ``update`` per batch, then ``compute``."""

    def __init__(self, num_classes: int) -> None:
        """Start from no samples; the matrix lives on the first batch's device."""
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self._confusion: torch.Tensor | None = None

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch of predicted and true class indices."""
        batch = confusion_matrix(predictions, targets, self.num_classes)
        if self._confusion is None:
            self._confusion = batch
        else:
            self._confusion += batch.to(self._confusion.device)

    def compute(self) -> torch.Tensor:
        """Return a copy of the summed matrix (zeros on the CPU before any update)."""
        if self._confusion is None:
            shape = (self.num_classes, self.num_classes)
            return torch.zeros(shape, dtype=torch.int64)
        return self._confusion.clone()


@dataclass(frozen=True)
class ClassificationReport:
    """Float64 metrics on the confusion matrix's device; NaN where undefined.

    ``per_class`` maps each name in ``PER_CLASS_METRICS`` to a [C] tensor;
    ``support`` (true samples per class) is float64 like the rest.
    ``averages`` maps (metric, average) to a 0-d tensor for precision, recall
    and F1 with macro, weighted and micro averages, and for specificity with
    macro and weighted averages, weighted by support as for the others.
    """

    confusion: torch.Tensor
    per_class: dict[str, torch.Tensor]
    averages: dict[tuple[str, str], torch.Tensor]
    accuracy: torch.Tensor
    num_samples: int


def classification_metrics(confusion: torch.Tensor) -> ClassificationReport:
    """Compute per-class, averaged and overall metrics from a confusion matrix."""
    _check_confusion(confusion)
    counts = _outcome_counts(confusion)
    true_positives = counts["true_positives"].double()
    predicted = true_positives + counts["false_positives"].double()
    support = true_positives + counts["false_negatives"].double()
    negatives = counts["true_negatives"].double() + counts["false_positives"].double()
    per_class = {
        "precision": _divide(true_positives, predicted),
        "recall": _divide(true_positives, support),
        # 2TP / (2TP + FP + FN): defined whenever precision or recall is.
        "f1": _divide(2.0 * true_positives, support + predicted),
        "specificity": _divide(counts["true_negatives"].double(), negatives),
        "support": support,
    }
    num_samples = int(confusion.sum().item())
    return ClassificationReport(
        confusion=confusion,
        per_class=per_class,
        averages=_averages(per_class, true_positives.sum(), support.sum()),
        accuracy=_divide(true_positives.sum(), support.sum()),
        num_samples=num_samples,
    )


def wilson_interval(
    successes: int, n: int, z: float = Z_95_PERCENT
) -> tuple[float, float]:
    """Return the Wilson score interval for successes out of n; NaNs when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(
            f"expected 0 <= successes <= n but got successes={successes}, n={n}"
        )
    if n == 0:
        return math.nan, math.nan
    proportion = successes / n
    z_squared = z * z
    scale = 1.0 + z_squared / n
    center = (proportion + z_squared / (2 * n)) / scale
    spread = proportion * (1.0 - proportion) / n + z_squared / (4 * n * n)
    half_width = z * math.sqrt(spread) / scale
    # Clamp rounding error at the ends, where the exact bound is 0 or 1.
    return max(0.0, center - half_width), min(1.0, center + half_width)


def to_rows(report: ClassificationReport, class_names: Sequence[str]) -> list[Row]:
    """Flatten a report into long-format rows of plain Python values.

    Keys: metric, average, class_index, class_name, value, lower, upper, count.
    ``value``, ``lower`` and ``upper`` are None where NaN. ``lower``/``upper`` is
    the 95% Wilson interval for accuracy, per-class precision, recall and
    specificity, and micro averages; None for F1, support, macro and weighted.
    ``count`` is the denominator of the value: samples for accuracy and every
    average, TP+FP for precision, TP+FN for recall, TN+FP for specificity,
    and the support for F1 and support rows.
    """
    num_classes = report.confusion.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(
            f"expected {num_classes} class names but got {len(class_names)}"
        )
    counts = {
        name: tensor.tolist()
        for name, tensor in _outcome_counts(report.confusion).items()
    }
    correct = sum(counts["true_positives"])
    overall = (correct, report.num_samples)
    rows = [_row("accuracy", None, None, None, report.accuracy.item(), overall)]
    for metric in PER_CLASS_METRICS:
        successes_and_trials = _per_class_trials(metric, counts)
        for index, value in enumerate(report.per_class[metric].tolist()):
            trials = successes_and_trials[index]
            rows.append(_row(metric, None, index, class_names[index], value, trials))
    for (metric, average), tensor in report.averages.items():
        trials = overall if average == "micro" else report.num_samples
        rows.append(_row(metric, average, None, None, tensor.item(), trials))
    return rows


def _check_num_classes(num_classes: int) -> None:
    """Refuse a class count that cannot index a matrix."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"expected an int num_classes but got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"expected num_classes >= 1 but got {num_classes}")


def _check_labels(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> None:
    """Refuse label tensors that bincount would miscount or reject."""
    _check_num_classes(num_classes)
    if predictions.shape != targets.shape:
        raise ValueError(
            "expected predictions and targets of the same shape but got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    if predictions.device != targets.device:
        raise ValueError(
            "expected predictions and targets on the same device but got "
            f"{predictions.device} and {targets.device}"
        )
    for name, labels in (("predictions", predictions), ("targets", targets)):
        _check_label_tensor(name, labels, num_classes)


def _check_label_tensor(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Refuse one label tensor that is not 1-D integers in [0, num_classes)."""
    if labels.dim() != 1:
        raise ValueError(f"expected 1-D {name} but got shape {tuple(labels.shape)}")
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"expected integer {name} but got dtype {labels.dtype}")
    if labels.numel() == 0:
        return
    # One host sync per tensor: the message needs the offending range.
    low, high = torch.aminmax(labels)
    low, high = int(low.item()), int(high.item())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"expected {name} in [0, {num_classes}) but got values from {low} to {high}"
        )


def _check_confusion(confusion: torch.Tensor) -> None:
    """Refuse anything but a non-empty square matrix of non-negative counts."""
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            f"expected a square confusion matrix but got shape {tuple(confusion.shape)}"
        )
    if confusion.shape[0] == 0:
        raise ValueError("expected at least one class but got a 0 x 0 matrix")
    if confusion.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"expected integer counts but got dtype {confusion.dtype}")
    minimum = int(confusion.min().item())
    if minimum < 0:
        raise ValueError(f"expected non-negative counts but got a minimum of {minimum}")


def _outcome_counts(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a [C, C] matrix into one-vs-rest int64 counts, each of shape [C]."""
    # Integer sums stay exact however many samples there are.
    confusion = confusion.long()
    true_positives = confusion.diagonal()
    false_positives = confusion.sum(dim=0) - true_positives
    false_negatives = confusion.sum(dim=1) - true_positives
    true_negatives = (
        confusion.sum() - true_positives - false_positives - false_negatives
    )
    return {
        "true_positives": true_positives,
        "false_positives": false_positives,
        "false_negatives": false_negatives,
        "true_negatives": true_negatives,
    }


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Divide elementwise, giving NaN where the denominator is zero."""
    nan = torch.full_like(numerator, math.nan)
    return torch.where(denominator == 0, nan, numerator / denominator)


def _nan_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of the non-NaN entries (NaN if none), summed as ``numpy.nanmean`` does."""
    present = ~torch.isnan(values)
    # numpy.nanmean sums the full vector with NaNs replaced by zeros.
    return _pairwise_sum(torch.where(present, values, 0.0)) / present.sum()


def _nan_weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the non-NaN entries, as scikit-learn's ``_nanaverage``.

    NaN entries and their weights are dropped; if the remaining weights sum to
    zero the remaining values get equal weights; if nothing remains, NaN.
    """
    present = ~torch.isnan(values)
    # Boolean indexing syncs with the host, but NumPy sums the kept entries
    # only, and the same summation order is what makes the bits agree.
    kept_values, kept_weights = values[present], weights[present]
    total_weight = _pairwise_sum(kept_weights)
    if total_weight.item() == 0:
        return _pairwise_sum(kept_values) / kept_values.shape[0]
    return _pairwise_sum(kept_values * kept_weights) / total_weight


def _pairwise_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a 1-D float tensor in NumPy's pairwise order, so sums agree to the bit.

    NumPy sums blocks of up to 128 entries in 8 interleaved lanes and splits
    longer vectors in two; torch.sum uses another order on each device.
    """
    count = values.shape[0]
    if count > _PAIRWISE_BLOCK_SIZE:
        half = count // 2
        half -= half % _PAIRWISE_LANES
        return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])
    # NumPy starts from -0.0, which leaves the sign of an all-zero sum intact.
    total = values.new_full((), -0.0)
    if count >= _PAIRWISE_LANES:
        unrolled = count - count % _PAIRWISE_LANES
        lanes = values[:_PAIRWISE_LANES]  # [8]
        for start in range(_PAIRWISE_LANES, unrolled, _PAIRWISE_LANES):
            lanes = lanes + values[start : start + _PAIRWISE_LANES]
        total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
            (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
        )
        values = values[unrolled:]
    for value in values:
        total = total + value
    return total


def _averages(
    per_class: dict[str, torch.Tensor],
    correct: torch.Tensor,
    num_samples: torch.Tensor,
) -> dict[tuple[str, str], torch.Tensor]:
    """Macro, weighted and micro averages; micro ones all equal accuracy here."""
    support = per_class["support"]
    averages = {}
    for metric in AVERAGED_METRICS:
        averages[metric, "macro"] = _nan_mean(per_class[metric])
        averages[metric, "weighted"] = _nan_weighted_mean(per_class[metric], support)
    # Single-label: summed TP+FP and TP+FN both equal the sample count.
    averages["precision", "micro"] = _divide(correct, num_samples)
    averages["recall", "micro"] = _divide(correct, num_samples)
    averages["f1", "micro"] = _divide(2.0 * correct, num_samples + num_samples)
    averages["specificity", "macro"] = _nan_mean(per_class["specificity"])
    averages["specificity", "weighted"] = _nan_weighted_mean(
        per_class["specificity"], support
    )
    return averages


def _per_class_trials(
    metric: str, counts: dict[str, list[int]]
) -> list[tuple[int, int] | int]:
    """Per class, (successes, n) for proportions, else the support as the count."""
    if metric in _PROPORTION_COUNTS:
        successes_name, failures_name = _PROPORTION_COUNTS[metric]
        pairs = zip(counts[successes_name], counts[failures_name], strict=True)
        return [(successes, successes + failures) for successes, failures in pairs]
    pairs = zip(counts["true_positives"], counts["false_negatives"], strict=True)
    return [hits + misses for hits, misses in pairs]


def _row(
    metric: str,
    average: str | None,
    class_index: int | None,
    class_name: str | None,
    value: float,
    trials: tuple[int, int] | int,
) -> Row:
    """Build one row; trials is (successes, n) for an interval, or just a count."""
    lower = upper = None
    if isinstance(trials, tuple):
        successes, count = trials
        lower, upper = wilson_interval(successes, count)
    else:
        count = trials
    return {
        "metric": metric,
        "average": average,
        "class_index": class_index,
        "class_name": class_name,
        "value": _float_or_none(value),
        "lower": _float_or_none(lower),
        "upper": _float_or_none(upper),
        "count": count,
    }


def _float_or_none(value: float | None) -> float | None:
    """Map NaN (and None) to None so that missing values stay missing."""
    if value is None or math.isnan(value):
        return None
    return float(value)
