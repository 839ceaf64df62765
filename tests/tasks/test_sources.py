"""Tests for decoding data sources into uint8 arrays (tasks/sources.py)."""

import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from model.splits import stratified_split
from tasks.errors import DatasetError, VigilError
from tasks.sources import (
    SOURCES,
    DecodedSource,
    SourceSpec,
    dataset_name,
    load_source,
)

CIFAR10_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
needs_cifar10 = pytest.mark.skipif(
    not CIFAR10_DIR.is_dir(),
    reason=f"the real CIFAR-10 copy is absent at {CIFAR10_DIR}",
)


# --- fixture helpers --------------------------------------------------------------


def _random_images(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Make distinct random uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), np.uint8)


def _smooth_rgb(height_px: int, width_px: int, shift: int) -> np.ndarray:
    """Make a smooth RGB gradient, which JPEG keeps close to its pixels."""
    rows = np.linspace(0, 200, height_px, dtype=np.float64)[:, None]
    cols = np.linspace(0, 200, width_px, dtype=np.float64)[None, :]
    base = (rows + cols) / 2 + shift
    return np.stack([base, base[::-1], np.full_like(base, 90.0)], axis=-1).astype(
        np.uint8
    )


def _save(path: Path, array: np.ndarray) -> None:
    """Write an array as an image file, format chosen by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)


def _encode_png(array: np.ndarray) -> bytes:
    """Encode an array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_hf_parquet(
    path: Path,
    images: list[bytes | None],
    labels: list[int | None],
    names: list[str] | None = None,
    image_column: str = "img",
    label_column: str = "label",
) -> None:
    """Write a Parquet file in the Hugging Face datasets image layout."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [
        None if blob is None else {"bytes": blob, "path": f"{row}.png"}
        for row, blob in enumerate(images)
    ]
    table = pa.table(
        {
            image_column: pa.array(rows, type=image_type),
            label_column: pa.array(labels, type=pa.int64()),
        }
    )
    if names is not None:
        features = {
            image_column: {"_type": "Image"},
            label_column: {"names": names, "_type": "ClassLabel"},
        }
        info = json.dumps({"info": {"features": features}})
        table = table.replace_schema_metadata({"huggingface": info})
    pq.write_table(table, path)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the raw big-endian idx format of MNIST."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Magic: two zero bytes, type 0x08 (unsigned byte), then the number of dims.
    header = struct.pack(">I", 0x0800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _assert_same(a: DecodedSource, b: DecodedSource) -> None:
    """Assert two decoded sources hold identical names and arrays."""
    assert a.name == b.name and a.class_names == b.class_names
    assert a.splits.keys() == b.splits.keys()
    for split in a.splits:
        np.testing.assert_array_equal(a.splits[split][0], b.splits[split][0])
        np.testing.assert_array_equal(a.splits[split][1], b.splits[split][1])


# --- digits -------------------------------------------------------------------


def test_digits_shapes_dtypes_and_counts() -> None:
    decoded = load_source(SourceSpec("digits"))
    assert decoded.name == "digits"
    assert decoded.class_names == [str(d) for d in range(10)]
    assert set(decoded.splits) == {"train", "test"}
    train_images, train_labels = decoded.splits["train"]
    test_images, test_labels = decoded.splits["test"]
    assert train_images.dtype == np.uint8 and test_images.dtype == np.uint8
    assert train_labels.dtype == np.int64 and test_labels.dtype == np.int64
    assert train_images.shape[1:] == (8, 8, 1) and test_images.shape[1:] == (8, 8, 1)
    assert len(train_images) == len(train_labels)
    assert len(test_images) == len(test_labels)
    assert len(train_labels) + len(test_labels) == 1797


def test_digits_scaled_to_full_byte_range() -> None:
    bunch = load_digits()
    raw = bunch.images.astype(np.int64)
    # value * 255 / 16, rounded half up, in integer arithmetic.
    expected = ((raw * 255 + 8) // 16).astype(np.uint8)[..., None]
    kept, held_out = stratified_split(torch.from_numpy(bunch.target), 0.2, 0)
    decoded = load_source(SourceSpec("digits"))
    np.testing.assert_array_equal(decoded.splits["train"][0], expected[kept.numpy()])
    np.testing.assert_array_equal(decoded.splits["test"][0], expected[held_out.numpy()])
    np.testing.assert_array_equal(
        decoded.splits["test"][1], bunch.target[held_out.numpy()]
    )
    all_images = np.concatenate([decoded.splits["train"][0], decoded.splits["test"][0]])
    assert all_images.min() == 0 and all_images.max() == 255
    assert 128 in all_images  # raw 8 -> 127.5 rounds up


def test_digits_split_is_stratified() -> None:
    class_counts = np.bincount(load_digits().target, minlength=10)
    decoded = load_source(SourceSpec("digits", test_fraction=0.3))
    test_counts = np.bincount(decoded.splits["test"][1], minlength=10)
    train_counts = np.bincount(decoded.splits["train"][1], minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, class_counts)
    assert np.all(np.abs(test_counts - 0.3 * class_counts) <= 1)


def test_digits_same_spec_gives_identical_arrays() -> None:
    _assert_same(
        load_source(SourceSpec("digits", seed=3)),
        load_source(SourceSpec("digits", seed=3)),
    )


def test_digits_seed_changes_split() -> None:
    first = load_source(SourceSpec("digits", seed=0)).splits["test"][0]
    second = load_source(SourceSpec("digits", seed=1)).splits["test"][0]
    assert not np.array_equal(first, second)


# --- torchvision sets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "folder", "first_class"),
    [("mnist", "MNIST", "0 - zero"), ("fashionmnist", "FashionMNIST", "T-shirt/top")],
)
def test_mnist_layout_root_loads_offline(
    tmp_path: Path, source: str, folder: str, first_class: str
) -> None:
    train_images = _random_images(6, (28, 28), seed=1)
    test_images = _random_images(4, (28, 28), seed=2)
    train_labels = np.array([0, 9, 3, 3, 5, 1], dtype=np.uint8)
    test_labels = np.array([7, 2, 2, 8], dtype=np.uint8)
    raw = tmp_path / folder / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)

    decoded = load_source(SourceSpec(source, path=tmp_path))

    assert decoded.name == source
    assert len(decoded.class_names) == 10 and decoded.class_names[0] == first_class
    images, labels = decoded.splits["train"]
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(images[..., 0], train_images)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, train_labels)
    np.testing.assert_array_equal(decoded.splits["test"][0][..., 0], test_images)
    np.testing.assert_array_equal(decoded.splits["test"][1], test_labels)


@pytest.mark.parametrize(
    ("source", "folder"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST"),
        ("fashionmnist", "FashionMNIST"),
    ],
)
def test_missing_torchvision_root_names_path_and_download(
    tmp_path: Path, source: str, folder: str
) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"{folder} under .*nowhere") as caught:
        load_source(SourceSpec(source, path=root))
    assert "pass --download to fetch it" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not root.exists()  # nothing was fetched or created


def test_damaged_cifar_root_wraps_torchvision_error(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="torchvision could not read") as caught:
        load_source(SourceSpec("cifar10", path=tmp_path))
    assert "cifar-10-batches-py" in str(caught.value)
    assert "--download" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_out_of_range_torchvision_label(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    for prefix, labels in (("train", [1, 10]), ("t10k", [2, 3])):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", _random_images(2, (28, 28), 0))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array(labels, np.uint8))
    with pytest.raises(DatasetError, match=r"label 10 at row 1 .* expected 0\.\.9"):
        load_source(SourceSpec("mnist", path=tmp_path))


# --- image folders ----------------------------------------------------------------


def test_imagefolder_split_layout_keeps_pixels_and_order(tmp_path: Path) -> None:
    images = _random_images(7, (6, 5, 3), seed=4)
    # Created out of order: classes and files must come back sorted by name.
    _save(tmp_path / "train" / "zebra" / "b.png", images[0])
    _save(tmp_path / "train" / "zebra" / "a.png", images[1])
    _save(tmp_path / "train" / "ant" / "c.png", images[2])
    _save(tmp_path / "train" / "ant" / "10.png", images[3])
    _save(tmp_path / "test" / "zebra" / "x.PNG", images[4])
    _save(tmp_path / "test" / "ant" / "y.png", images[5])
    _save(tmp_path / "test" / "ant" / ".hidden.png", images[6])
    (tmp_path / "test" / "ant" / "notes.txt").write_text("not an image")

    decoded = load_source(SourceSpec("imagefolder", path=tmp_path))

    assert decoded.name == tmp_path.name
    assert decoded.class_names == ["ant", "zebra"]
    train_images, train_labels = decoded.splits["train"]
    assert train_images.dtype == np.uint8 and train_images.shape == (4, 6, 5, 3)
    np.testing.assert_array_equal(train_images, images[[3, 2, 1, 0]])
    np.testing.assert_array_equal(train_labels, [0, 0, 1, 1])
    assert train_labels.dtype == np.int64
    np.testing.assert_array_equal(decoded.splits["test"][0], images[[5, 4]])
    np.testing.assert_array_equal(decoded.splits["test"][1], [0, 1])


def test_imagefolder_single_tree_is_split_by_fraction(tmp_path: Path) -> None:
    images = _random_images(10, (4, 4, 3), seed=5)
    expected = {}
    for index, image in enumerate(images):
        label = index % 2
        _save(tmp_path / ("cat", "dog")[label] / f"{index:02d}.png", image)
        expected[image.tobytes()] = label

    decoded = load_source(SourceSpec("imagefolder", path=tmp_path, test_fraction=0.2))

    assert decoded.class_names == ["cat", "dog"]
    train_images, train_labels = decoded.splits["train"]
    test_images, test_labels = decoded.splits["test"]
    np.testing.assert_array_equal(np.bincount(train_labels), [4, 4])
    np.testing.assert_array_equal(np.bincount(test_labels), [1, 1])
    pairs = [
        (image.tobytes(), int(label))
        for image, label in zip(
            np.concatenate([train_images, test_images]),
            np.concatenate([train_labels, test_labels]),
            strict=True,
        )
    ]
    assert sorted(pairs) == sorted(expected.items())


def test_imagefolder_same_spec_gives_identical_arrays(tmp_path: Path) -> None:
    for index, image in enumerate(_random_images(12, (3, 3, 3), seed=6)):
        _save(tmp_path / f"class{index % 3}" / f"{index}.png", image)
    spec = SourceSpec("imagefolder", path=tmp_path, seed=7)
    _assert_same(load_source(spec), load_source(spec))


def test_imagefolder_reads_jpeg_close_to_written_pixels(tmp_path: Path) -> None:
    written = [_smooth_rgb(16, 16, shift) for shift in (0, 20, 40, 10)]
    for name, image in zip(
        ["a.jpg", "b.JPEG", "c.jpeg", "d.jpg"], written, strict=True
    ):
        _save(tmp_path / "train" / "only" / name, image)
    _save(tmp_path / "test" / "only" / "e.jpg", written[0])
    # A second class: one-class data sets are refused.
    _save(tmp_path / "train" / "other" / "f.jpg", written[1])
    _save(tmp_path / "test" / "other" / "g.jpg", written[1])

    decoded = load_source(SourceSpec("imagefolder", path=tmp_path))

    train_images = decoded.splits["train"][0][:4]  # class "only" sorts first
    assert train_images.shape == (4, 16, 16, 3)
    error = np.abs(train_images.astype(np.int16) - np.stack(written).astype(np.int16))
    assert error.mean() < 3  # JPEG is lossy, but a smooth gradient survives


def test_imagefolder_grayscale_tree_has_one_channel(tmp_path: Path) -> None:
    images = _random_images(4, (5, 7), seed=8)
    for index, image in enumerate(images):
        _save(tmp_path / "train" / f"c{index % 2}" / f"{index}.png", image)
        _save(tmp_path / "test" / f"c{index % 2}" / f"{index}.png", image)

    decoded = load_source(SourceSpec("imagefolder", path=tmp_path))

    train_images = decoded.splits["train"][0]
    assert train_images.shape == (4, 5, 7, 1)
    np.testing.assert_array_equal(train_images[..., 0], images[[0, 2, 1, 3]])


def test_imagefolder_mixed_gray_and_colour_becomes_rgb(tmp_path: Path) -> None:
    gray = _random_images(1, (4, 4), seed=9)[0]
    colour = _random_images(1, (4, 4, 3), seed=10)[0]
    rgba = _random_images(1, (4, 4, 4), seed=11)[0]
    _save(tmp_path / "a" / "0.png", gray)
    _save(tmp_path / "a" / "1.png", colour)
    _save(tmp_path / "b" / "0.png", rgba)
    _save(tmp_path / "b" / "1.png", colour)

    decoded = load_source(SourceSpec("imagefolder", path=tmp_path, test_fraction=0.5))

    images = np.concatenate([decoded.splits["train"][0], decoded.splits["test"][0]])
    assert images.shape == (4, 4, 4, 3)
    as_bytes = {image.tobytes() for image in images}
    assert np.repeat(gray[..., None], 3, axis=2).tobytes() in as_bytes
    assert rgba[..., :3].tobytes() in as_bytes
    assert colour.tobytes() in as_bytes


# --- Parquet ------------------------------------------------------------------------


def test_parquet_with_hf_metadata(tmp_path: Path) -> None:
    images = _random_images(12, (5, 6, 3), seed=12)
    labels = [index % 3 for index in range(12)]
    file = tmp_path / "pets.parquet"
    names = ["bird", "ant", "cow"]  # label order, deliberately not sorted
    _write_hf_parquet(file, [_encode_png(image) for image in images], labels, names)

    decoded = load_source(SourceSpec("parquet", path=file, test_fraction=0.25))

    assert decoded.name == "pets"
    assert decoded.class_names == names
    train_images, train_labels = decoded.splits["train"]
    test_images, test_labels = decoded.splits["test"]
    assert train_images.dtype == np.uint8 and train_images.shape == (9, 5, 6, 3)
    assert train_labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(test_labels), [1, 1, 1])
    decoded_pairs = sorted(
        (image.tobytes(), int(label))
        for image, label in zip(
            np.concatenate([train_images, test_images]),
            np.concatenate([train_labels, test_labels]),
            strict=True,
        )
    )
    written_pairs = sorted(
        (image.tobytes(), label) for image, label in zip(images, labels, strict=True)
    )
    assert decoded_pairs == written_pairs


def test_parquet_without_metadata_names_labels_by_number(tmp_path: Path) -> None:
    images = _random_images(8, (3, 3), seed=13)
    labels = [0, 0, 1, 1, 3, 3, 0, 1]  # label 2 unused: names still run to the max
    file = tmp_path / "gray.parquet"
    _write_hf_parquet(
        file,
        [_encode_png(image) for image in images],
        labels,
        image_column="image",
        label_column="labels",
    )

    decoded = load_source(SourceSpec("parquet", path=file, test_fraction=0.4))

    assert decoded.class_names == ["0", "1", "2", "3"]
    assert decoded.splits["train"][0].shape[1:] == (3, 3, 1)


def test_parquet_folder_uses_train_and_test_files(tmp_path: Path) -> None:
    train = _random_images(5, (4, 4, 3), seed=14)
    test = _random_images(3, (4, 4, 3), seed=15)
    names = ["no", "yes"]
    _write_hf_parquet(
        tmp_path / "train.parquet",
        [_encode_png(i) for i in train],
        [1, 0, 1, 1, 0],
        names,
    )
    _write_hf_parquet(
        tmp_path / "test.parquet", [_encode_png(i) for i in test], [0, 1, 1]
    )

    decoded = load_source(SourceSpec("parquet", path=tmp_path))

    assert decoded.name == tmp_path.name
    assert decoded.class_names == names
    np.testing.assert_array_equal(decoded.splits["train"][0], train)
    np.testing.assert_array_equal(decoded.splits["train"][1], [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(decoded.splits["test"][0], test)
    np.testing.assert_array_equal(decoded.splits["test"][1], [0, 1, 1])


def test_parquet_same_spec_gives_identical_arrays(tmp_path: Path) -> None:
    images = _random_images(10, (2, 2, 3), seed=16)
    file = tmp_path / "data.parquet"
    _write_hf_parquet(
        file, [_encode_png(i) for i in images], [i % 2 for i in range(10)]
    )
    spec = SourceSpec("parquet", path=file, seed=4)
    _assert_same(load_source(spec), load_source(spec))


# --- bad input ---------------------------------------------------------------------


def test_dataset_error_is_a_vigil_error() -> None:
    assert issubclass(DatasetError, VigilError)


def test_unknown_source_lists_valid_sources() -> None:
    with pytest.raises(DatasetError, match="unknown source 'svhn'") as caught:
        load_source(SourceSpec("svhn"))
    assert ", ".join(SOURCES) in str(caught.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_test_fraction_outside_open_unit_interval(fraction: float) -> None:
    with pytest.raises(DatasetError, match=r"test_fraction .* between 0 and 1"):
        load_source(SourceSpec("digits", test_fraction=fraction))


@pytest.mark.parametrize("source", ["imagefolder", "parquet"])
def test_path_none_for_source_that_needs_one(source: str) -> None:
    with pytest.raises(DatasetError, match=f"source '{source}' needs a path"):
        load_source(SourceSpec(source))


@pytest.mark.parametrize("source", ["imagefolder", "parquet"])
def test_missing_path_is_named(tmp_path: Path, source: str) -> None:
    with pytest.raises(DatasetError, match="absent.*does not exist"):
        load_source(SourceSpec(source, path=tmp_path / "absent"))


def test_imagefolder_path_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "one.png"
    _save(file, _random_images(1, (2, 2), seed=0)[0])
    with pytest.raises(DatasetError, match="one.png is not a folder"):
        load_source(SourceSpec("imagefolder", path=file))


def test_corrupt_image_file_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "good.png", _random_images(1, (2, 2), seed=0)[0])
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*broken\.png"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_truncated_image_file_is_named(tmp_path: Path) -> None:
    good = tmp_path / "a" / "whole.png"
    _save(good, _random_images(1, (32, 32, 3), seed=0)[0])
    (tmp_path / "a" / "cut.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"cannot decode image .*cut\.png"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_mixed_image_sizes_name_two_files(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "big.png", _random_images(1, (8, 8, 3), seed=0)[0])
    _save(tmp_path / "b" / "small.png", _random_images(1, (4, 6, 3), seed=1)[0])
    with pytest.raises(DatasetError, match=r"big\.png is 8x8 but .*small\.png is 6x4"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_empty_folder_has_no_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="holds no class folders"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_class_folder_without_images(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "0.png", _random_images(1, (2, 2), seed=0)[0])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"class folder .*b holds no images"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_empty_test_tree(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "a" / "0.png", _random_images(1, (2, 2), seed=0)[0])
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError, match=r"test holds no class folders"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_train_tree_without_test_tree(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "a" / "0.png", _random_images(1, (2, 2), seed=0)[0])
    with pytest.raises(DatasetError, match="has train/ but no test/"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_train_and_test_class_lists_must_match(tmp_path: Path) -> None:
    image = _random_images(1, (2, 2), seed=0)[0]
    for folder in ("train/a", "train/b", "test/a", "test/c"):
        _save(tmp_path / folder / "0.png", image)
    with pytest.raises(DatasetError, match="only in train: b; only in test: c"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_split_that_leaves_test_empty(tmp_path: Path) -> None:
    images = _random_images(2, (2, 2), seed=0)
    _save(tmp_path / "a" / "0.png", images[0])
    _save(tmp_path / "b" / "0.png", images[1])
    with pytest.raises(DatasetError, match="left the test split empty"):
        load_source(SourceSpec("imagefolder", path=tmp_path))


def test_parquet_without_image_column(tmp_path: Path) -> None:
    file = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"pixels": [b"x"], "label": [0]}), file)
    with pytest.raises(
        DatasetError, match=r"plain\.parquet has no image column.*pixels"
    ):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_without_label_column(tmp_path: Path) -> None:
    file = tmp_path / "unlabelled.parquet"
    _write_hf_parquet(
        file, [_encode_png(np.zeros((2, 2), np.uint8))], [0], label_column="y"
    )
    with pytest.raises(DatasetError, match=r"unlabelled\.parquet has no label column"):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_label_beyond_class_names(tmp_path: Path) -> None:
    file = tmp_path / "named.parquet"
    blobs = [_encode_png(image) for image in _random_images(4, (2, 2), seed=0)]
    _write_hf_parquet(file, blobs, [0, 1, 5, 2], names=["a", "b", "c"])
    with pytest.raises(
        DatasetError, match=r"label 5 at row 2 of .*named\.parquet .*expected 0\.\.2"
    ):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_negative_label(tmp_path: Path) -> None:
    file = tmp_path / "negative.parquet"
    blobs = [_encode_png(image) for image in _random_images(3, (2, 2), seed=0)]
    _write_hf_parquet(file, blobs, [0, -1, 1])
    with pytest.raises(DatasetError, match=r"label -1 at row 1 .*out of range"):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_corrupt_image_names_row(tmp_path: Path) -> None:
    file = tmp_path / "bad.parquet"
    good = _encode_png(np.zeros((2, 2), np.uint8))
    _write_hf_parquet(file, [good, good, b"not an image"], [0, 1, 0])
    with pytest.raises(
        DatasetError, match=r"cannot decode image row 2 of .*bad\.parquet"
    ) as raised:
        load_source(SourceSpec("parquet", path=file))
    assert "BytesIO" not in str(raised.value)


def test_parquet_row_without_image(tmp_path: Path) -> None:
    file = tmp_path / "holes.parquet"
    _write_hf_parquet(file, [_encode_png(np.zeros((2, 2), np.uint8)), None], [0, 1])
    with pytest.raises(DatasetError, match=r"row 1 of .*holes\.parquet has no image"):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_row_without_label(tmp_path: Path) -> None:
    file = tmp_path / "unknown.parquet"
    blobs = [_encode_png(image) for image in _random_images(3, (2, 2), seed=0)]
    _write_hf_parquet(file, blobs, [0, 1, None])
    with pytest.raises(DatasetError, match=r"row 2 of .*unknown\.parquet has no label"):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_files_with_different_class_names(tmp_path: Path) -> None:
    blobs = [_encode_png(image) for image in _random_images(2, (2, 2), seed=0)]
    _write_hf_parquet(tmp_path / "train.parquet", blobs, [0, 1], names=["a", "b"])
    _write_hf_parquet(tmp_path / "test.parquet", blobs, [0, 1], names=["a", "c"])
    with pytest.raises(DatasetError, match="class names differ between"):
        load_source(SourceSpec("parquet", path=tmp_path))


def test_parquet_without_rows(tmp_path: Path) -> None:
    file = tmp_path / "empty.parquet"
    _write_hf_parquet(file, [], [])
    with pytest.raises(DatasetError, match=r"empty\.parquet holds no rows"):
        load_source(SourceSpec("parquet", path=file))


def test_file_that_is_not_parquet(tmp_path: Path) -> None:
    file = tmp_path / "fake.parquet"
    file.write_bytes(b"just some text")
    with pytest.raises(DatasetError, match=r"cannot read .*fake\.parquet"):
        load_source(SourceSpec("parquet", path=file))


def test_parquet_folder_without_test_file(tmp_path: Path) -> None:
    _write_hf_parquet(
        tmp_path / "train.parquet", [_encode_png(np.zeros((2, 2), np.uint8))], [0]
    )
    with pytest.raises(DatasetError, match="has no test.parquet"):
        load_source(SourceSpec("parquet", path=tmp_path))


# --- the real CIFAR-10 copy ------------------------------------------------------


def _channel_means(decoded: DecodedSource) -> np.ndarray:
    """Mean of each colour channel over every split, on a 0..1 scale."""
    sums = sum(
        images.reshape(-1, 3).sum(axis=0, dtype=np.float64)
        for images, _ in decoded.splits.values()
    )
    pixels = sum(
        images.shape[0] * images.shape[1] * images.shape[2]
        for images, _ in decoded.splits.values()
    )
    return sums / pixels / 255


def _class_counts(decoded: DecodedSource) -> np.ndarray:
    """Count images per class over every split."""
    labels = np.concatenate([labels for _, labels in decoded.splits.values()])
    return np.bincount(labels, minlength=len(decoded.class_names))


@pytest.mark.cifar10
@needs_cifar10
def test_real_cifar10_parquet_and_image_folder() -> None:
    train = load_source(SourceSpec("parquet", path=CIFAR10_DIR / "train.parquet"))
    assert train.name == "cifar10"
    assert train.class_names == CIFAR10_NAMES
    assert train.splits["train"][0].shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(_class_counts(train), [5000] * 10)
    np.testing.assert_allclose(_channel_means(train), [0.491, 0.482, 0.447], atol=0.01)

    test = load_source(SourceSpec("imagefolder", path=CIFAR10_DIR / "test"))
    assert test.name == "cifar10"
    assert test.class_names == CIFAR10_NAMES
    assert test.splits["test"][0].shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(_class_counts(test), [1000] * 10)
    np.testing.assert_allclose(_channel_means(test), [0.491, 0.482, 0.447], atol=0.01)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/data/cifar10/train", "cifar10"),
        ("/data/cifar10/test", "cifar10"),
        ("/data/cifar10/Train", "cifar10"),
        ("/data/pets", "pets"),
        ("/data/pets/shifted", "shifted"),
    ],
    ids=["train-folder", "test-folder", "capitalised", "plain", "nested"],
)
def test_dataset_names_skip_split_folder_names(path: str, expected: str) -> None:
    assert dataset_name(Path(path)) == expected


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    for index in range(5):
        _save(tmp_path / "lonely" / "cats" / f"{index}.png", _smooth_rgb(8, 8, index))
    with pytest.raises(DatasetError, match="lonely has 1 class .*at least two classes"):
        load_source(SourceSpec("imagefolder", path=tmp_path / "lonely"))


def test_digits_takes_no_data_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'digits' is built in and takes no --data"):
        load_source(SourceSpec("digits", path=tmp_path))


def test_labels_implying_too_many_classes_are_refused(tmp_path: Path) -> None:
    encoded = _encode_png(_smooth_rgb(4, 4, 0))
    table = pa.table(
        {
            "img": [{"bytes": encoded, "path": f"{i}.png"} for i in range(4)],
            "label": [0, 1, 0, 5000],
        }
    )
    pq.write_table(table, tmp_path / "wide.parquet")
    with pytest.raises(DatasetError, match="label 5000 implies 5001 classes"):
        load_source(SourceSpec("parquet", path=tmp_path / "wide.parquet"))
