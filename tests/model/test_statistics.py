"""Tests for per-channel image statistics (model/statistics.py), against numpy."""

import re

import numpy as np
import pytest
import torch

import model.statistics
from model.statistics import channel_statistics


def _random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _numpy_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return {
        "mean": pixels.mean(axis=0),
        "std": pixels.std(axis=0),
        "min": pixels.min(axis=0),
        "max": pixels.max(axis=0),
    }


@pytest.mark.parametrize(
    "chunk", [1, 3, 4096], ids=["one_image_chunks", "uneven_chunks", "one_chunk"]
)
@pytest.mark.parametrize(
    "shape", [(10, 5, 6, 3), (7, 8, 8, 1)], ids=["rgb_5x6", "gray_8x8"]
)
def test_statistics_match_numpy(monkeypatch, chunk, shape):
    monkeypatch.setattr(model.statistics, "CHUNK_IMAGES", chunk)
    images = _random_images(shape)
    found = channel_statistics(torch.from_numpy(images))
    expected = _numpy_statistics(images)
    assert sorted(found) == ["max", "mean", "min", "std"]
    for name, values in expected.items():
        assert found[name].dtype == torch.float64
        np.testing.assert_allclose(
            found[name].numpy(), values, rtol=1e-12, err_msg=name
        )


def test_values_stay_on_the_0_255_scale():
    images = np.zeros((4, 2, 2, 1), dtype=np.uint8)
    images[:2] = 255
    found = channel_statistics(torch.from_numpy(images))
    assert found["mean"].tolist() == [127.5]
    assert found["std"].tolist() == [127.5]
    assert found["min"].tolist() == [0.0]
    assert found["max"].tolist() == [255.0]


def test_constant_channels_have_zero_std():
    images = np.empty((5, 3, 3, 2), dtype=np.uint8)
    images[..., 0] = 7
    images[..., 1] = 200
    found = channel_statistics(torch.from_numpy(images))
    assert found["mean"].tolist() == [7.0, 200.0]
    assert found["std"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("shape", "shown"),
    [((4, 4, 3), "(4, 4, 3)"), ((2, 4, 4, 3, 1), "(2, 4, 4, 3, 1)")],
    ids=["three_dims", "five_dims"],
)
def test_wrong_number_of_dimensions_is_refused(shape, shown):
    images = torch.zeros(shape, dtype=torch.uint8)
    expected = f"expected images of shape (N, H, W, C) but got {shown}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        channel_statistics(images)


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="expected at least one image"):
        channel_statistics(torch.zeros((0, 4, 4, 3), dtype=torch.uint8))
