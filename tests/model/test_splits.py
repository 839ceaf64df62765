"""Tests for the seeded, stratified split of a label vector (model/splits.py)."""

import math

import numpy as np
import pytest
import torch

from model.splits import stratified_split


def _labels(counts: dict[int, int], seed: int = 0) -> torch.Tensor:
    """Shuffled labels holding ``counts[label]`` samples of each label."""
    grouped = np.concatenate([np.full(n, label) for label, n in counts.items()])
    return torch.from_numpy(np.random.default_rng(seed).permutation(grouped))


# (class sizes, fraction, held-out count per class), worked out by hand from
# round(fraction * size) bounded to [1, size - 1] for classes of two or more.
HELD_OUT_CASES = {
    "plain_rounding": ({0: 10, 1: 7, 2: 20}, 0.3, {0: 3, 1: 2, 2: 6}),
    "small_fraction_still_holds_one_out": ({0: 2, 1: 2, 2: 3}, 0.1, {0: 1, 1: 1, 2: 1}),
    "large_fraction_still_keeps_one": ({0: 3, 1: 4}, 0.9, {0: 2, 1: 3}),
    "single_sample_class_is_kept": ({0: 1, 1: 9}, 0.2, {0: 0, 1: 2}),
    "sparse_label_values": ({3: 5, 7: 8, 11: 4}, 0.4, {3: 2, 7: 3, 11: 2}),
}


@pytest.mark.parametrize(
    ("counts", "fraction", "expected"),
    list(HELD_OUT_CASES.values()),
    ids=list(HELD_OUT_CASES),
)
def test_held_out_count_per_class(counts, fraction, expected):
    labels = _labels(counts)
    _, held_out = stratified_split(labels, fraction, seed=0)
    held_labels = labels[held_out].numpy()
    found = {label: int((held_labels == label).sum()) for label in counts}
    assert found == expected


@pytest.mark.parametrize("seed", [0, 1, 123], ids=lambda s: f"seed{s}")
def test_parts_are_disjoint_sorted_and_cover_every_index(seed):
    labels = _labels({0: 9, 1: 6, 2: 5}, seed=seed)
    kept, held_out = stratified_split(labels, 0.25, seed)
    kept_list, held_list = kept.tolist(), held_out.tolist()
    assert not set(kept_list) & set(held_list)
    assert sorted(kept_list + held_list) == list(range(len(labels)))
    assert kept_list == sorted(kept_list)
    assert held_list == sorted(held_list)
    assert kept.dtype == held_out.dtype == torch.int64


def test_same_seed_gives_the_same_split():
    labels = _labels({0: 12, 1: 12, 2: 12})
    first = stratified_split(labels, 0.25, seed=7)
    second = stratified_split(labels.clone(), 0.25, seed=7)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_different_seeds_give_different_splits():
    labels = _labels({0: 12, 1: 12, 2: 12})
    _, held_a = stratified_split(labels, 0.25, seed=0)
    _, held_b = stratified_split(labels, 0.25, seed=1)
    assert not torch.equal(held_a, held_b)


def test_split_does_not_depend_on_global_random_state():
    labels = _labels({0: 10, 1: 10})
    torch.manual_seed(1)
    first = stratified_split(labels, 0.3, seed=5)
    torch.manual_seed(2)
    torch.rand(100)
    second = stratified_split(labels, 0.3, seed=5)
    assert torch.equal(first[1], second[1])


@pytest.mark.parametrize(
    "fraction",
    [0.0, 1.0, -0.2, 1.5, math.nan],
    ids=["zero", "one", "negative", "above_one", "nan"],
)
def test_fraction_outside_open_unit_interval_is_refused(fraction):
    with pytest.raises(ValueError, match=r"expected a split fraction in \(0, 1\)"):
        stratified_split(_labels({0: 4, 1: 4}), fraction, seed=0)
