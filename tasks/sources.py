"""Decode every supported data source into in-memory uint8 arrays.

Every source ends as a ``DecodedSource``: class names plus "train" and "test"
splits of images (N, H, W, C) uint8 and labels (N,) int64. Nothing is fetched
from the network unless ``SourceSpec.download`` asks for it, and then only for
the torchvision sets. Problems with the input raise ``DatasetError`` with one
line that names the offending path or value and what was expected.
"""

import io
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from model.splits import stratified_split
from tasks.errors import DatasetError

SOURCES = (
    "digits",
    "cifar10",
    "cifar100",
    "mnist",
    "fashionmnist",
    "imagefolder",
    "parquet",
)

# Where the torchvision sets live when SourceSpec.path is None.
DEFAULT_TORCHVISION_ROOT = Path.home() / ".cache" / "vigil" / "torchvision"

# source -> (torchvision.datasets class, the folder it reads under its root)
TORCHVISION_SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "mnist": ("MNIST", "MNIST"),
    "fashionmnist": ("FashionMNIST", "FashionMNIST"),
}

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
IMAGE_COLUMN_NAMES = ("img", "image")
LABEL_COLUMN_NAMES = ("label", "labels")
PATH_EXPECTATIONS = {
    "imagefolder": "a folder of <class>/<image> files, or train/ and test/ of them",
    "parquet": "a Parquet file, or a folder holding train.parquet and test.parquet",
}

Split = tuple[np.ndarray, np.ndarray]
Describe = Callable[[int], str]


@dataclass(frozen=True)
class SourceSpec:
    """Which data source to decode and how to split it.

    ``path`` is the folder or file for imagefolder and parquet, and the
    torchvision root for the torchvision sets (default
    ``DEFAULT_TORCHVISION_ROOT``, ``~/.cache/vigil/torchvision``).
    """

    source: str = "digits"
    path: Path | None = None
    download: bool = False
    test_fraction: float = 0.2
    seed: int = 0


# More classes than this is a label column gone wrong (ImageNet has 1,000);
# every class costs rows in the metric and confusion tables.
MAX_CLASSES = 1000
# torch.Generator.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1

# Names that say which split a file or folder holds, not which data set it is.
SPLIT_NAMES = ("train", "test", "training", "testing", "data", "images")


def dataset_name(path: Path) -> str:
    """A data set's name from its path: ``cifar10/train.parquet`` is cifar10."""
    if path.name.lower() in SPLIT_NAMES and path.parent.name:
        return path.parent.name
    return path.name


@dataclass(frozen=True)
class DecodedSource:
    """Decoded images and labels of one source, by split name."""

    name: str
    class_names: list[str]
    splits: dict[str, Split]


class _ParquetPart(NamedTuple):
    """Undecoded rows of one Parquet file."""

    file: Path
    blobs: list[bytes]
    labels: np.ndarray
    class_names: list[str] | None


def load_source(spec: SourceSpec) -> DecodedSource:
    """Decode the source that ``spec`` names into uint8 train and test splits."""
    check_spec(spec)
    decoded = _load(spec)
    if len(decoded.class_names) < 2:
        raise DatasetError(
            f"{decoded.name} has {len(decoded.class_names)} class "
            f"({', '.join(decoded.class_names)}); expected at least two classes"
        )
    return decoded


def check_spec(spec: SourceSpec) -> SourceSpec:
    """Refuse a spec that cannot name a source, before reading any data."""
    if spec.source not in SOURCES:
        raise DatasetError(
            f"unknown source {spec.source!r}; expected one of {', '.join(SOURCES)}"
        )
    if not 0.0 < spec.test_fraction < 1.0:
        raise DatasetError(
            f"test_fraction {spec.test_fraction} is out of range; "
            "expected a fraction strictly between 0 and 1"
        )
    if not 0 <= spec.seed <= MAX_SEED:
        raise DatasetError(f"seed {spec.seed} is out of range; expected 0 to 2**63 - 1")
    if spec.source == "digits" and spec.path is not None:
        raise DatasetError(
            f"source 'digits' is built in and takes no --data (got {spec.path}); "
            "expected --source imagefolder or parquet for data of your own"
        )
    return spec


def _load(spec: SourceSpec) -> DecodedSource:
    """Dispatch to the loader of ``spec.source``."""
    if spec.source == "digits":
        return _load_digits(spec)
    if spec.source in TORCHVISION_SETS:
        return _load_torchvision(spec)
    if spec.source == "imagefolder":
        return _load_imagefolder(spec)
    if spec.source == "parquet":
        return _load_parquet(spec)
    raise DatasetError(
        f"unknown source {spec.source!r}; expected one of {', '.join(SOURCES)}"
    )


# --- shared helpers ---------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message, or its type name."""
    lines = str(exc).strip().splitlines()
    # PIL names in-memory files by their object repr, which says nothing.
    first = (
        re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", lines[0]) if lines else ""
    )
    return first or type(exc).__name__


def _require_path(spec: SourceSpec) -> Path:
    """Return the spec's path, which must exist for this source."""
    expected = PATH_EXPECTATIONS[spec.source]
    if spec.path is None:
        raise DatasetError(
            f"source {spec.source!r} needs a path (--data); expected {expected}"
        )
    path = Path(spec.path)
    if not path.exists():
        raise DatasetError(f"{spec.source}: {path} does not exist; expected {expected}")
    return path


def _split_by_fraction(
    images: np.ndarray, labels: np.ndarray, spec: SourceSpec, where: str
) -> dict[str, Split]:
    """Split one labelled set into train and test, stratified by label."""
    kept, held_out = stratified_split(
        torch.from_numpy(labels), spec.test_fraction, spec.seed
    )
    if len(held_out) == 0:
        raise DatasetError(
            f"splitting {where} by test_fraction {spec.test_fraction} left the "
            "test split empty; expected at least two images in some class"
        )
    train_idx, test_idx = kept.numpy(), held_out.numpy()
    return {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
    }


def _check_label_range(labels: np.ndarray, class_count: int, where: str) -> None:
    """Reject labels below 0 or at or above the number of class names."""
    bad = np.flatnonzero((labels < 0) | (labels >= class_count))
    if len(bad) > 0:
        raise DatasetError(
            f"label {labels[bad[0]]} at row {bad[0]} of {where} is out of range; "
            f"expected 0..{class_count - 1} for {class_count} class names"
        )


def _decode_image(source: Path | bytes, index: int, describe: Describe) -> np.ndarray:
    """Decode one encoded image into (H, W) for 'L' mode, else (H, W, 3)."""
    try:
        with Image.open(
            io.BytesIO(source) if isinstance(source, bytes) else source
        ) as image:
            # Arrays of 'L' and 'RGB' images come without a conversion copy.
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot decode image {describe(index)} ({_first_line(exc)}); "
            f"expected a readable image file ({', '.join(IMAGE_EXTENSIONS)})"
        ) from exc


def _stack_images(arrays: list[np.ndarray], describe: Describe) -> np.ndarray:
    """Stack decoded images into (N, H, W, C): C = 1 when all are 'L', else 3."""
    first_size = arrays[0].shape[:2]
    for index, array in enumerate(arrays):
        if array.shape[:2] != first_size:
            raise DatasetError(
                f"images differ in size: {describe(0)} is {_size(arrays[0])} but "
                f"{describe(index)} is {_size(array)} (width x height); expected one "
                "size for all images"
            )
    channels = 1 if all(array.ndim == 2 for array in arrays) else 3
    stacked = np.empty((len(arrays), *first_size, channels), dtype=np.uint8)
    for index, array in enumerate(arrays):
        # A grayscale image among colour ones repeats its one channel, as PIL does.
        stacked[index] = array[..., None] if array.ndim == 2 else array
    return stacked


def _size(array: np.ndarray) -> str:
    """Format an image array's size as PIL does, width x height."""
    return f"{array.shape[1]}x{array.shape[0]}"


def _decode_images(sources: Sequence[Path | bytes], describe: Describe) -> np.ndarray:
    """Decode encoded images in order into one (N, H, W, C) uint8 array."""
    # Serial on purpose: a thread pool gave no clear gain on 32x32 JPEGs, as
    # PIL's per-image Python overhead holds the GIL for most of the time.
    arrays = [_decode_image(source, i, describe) for i, source in enumerate(sources)]
    return _stack_images(arrays, describe)


def _cut(array: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Cut an array along its first axis into consecutive parts of given lengths."""
    return np.split(array, np.cumsum(counts)[:-1])


# --- digits -----------------------------------------------------------------


def _load_digits(spec: SourceSpec) -> DecodedSource:
    """Load scikit-learn's bundled 8x8 digits, scaled from 0..16 to 0..255."""
    # Imported here: scikit-learn is slow to import and only digits needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    class_names = [str(name) for name in bunch.target_names]
    splits = _split_by_fraction(images, labels, spec, "digits")
    return DecodedSource(name="digits", class_names=class_names, splits=splits)


# --- torchvision sets ---------------------------------------------------------


def _load_torchvision(spec: SourceSpec) -> DecodedSource:
    """Load a torchvision set's train and test splits from its root folder."""
    root = Path(spec.path) if spec.path is not None else DEFAULT_TORCHVISION_ROOT
    folder = TORCHVISION_SETS[spec.source][1]
    if not spec.download and not (root / folder).is_dir():
        raise DatasetError(
            f"{spec.source}: expected torchvision's {folder} under {root}; "
            "pass --download to fetch it"
        )
    train, class_names = _torchvision_split(spec, root, train=True)
    test, _ = _torchvision_split(spec, root, train=False)
    splits = {"train": train, "test": test}
    for split_name, (_, labels) in splits.items():
        where = f"the {split_name} split of {spec.source} under {root}"
        _check_label_range(labels, len(class_names), where)
    return DecodedSource(name=spec.source, class_names=class_names, splits=splits)


def _torchvision_split(
    spec: SourceSpec, root: Path, train: bool
) -> tuple[Split, list[str]]:
    """Read one split of a torchvision set as (images, labels) and class names."""
    # Imported here: torchvision is slow to import and only these sets need it.
    import torchvision.datasets

    class_name, folder = TORCHVISION_SETS[spec.source]
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        dataset = dataset_class(str(root), train=train, download=spec.download)
    # torchvision fails with RuntimeError, OSError, assertions or pickle errors
    # depending on the set and the damage; each must reach the user as one line.
    except Exception as exc:
        hint = "check the network" if spec.download else "pass --download to fetch it"
        raise DatasetError(
            f"{spec.source}: torchvision could not read {root / folder} "
            f"({_first_line(exc)}); expected an intact copy of torchvision's "
            f"{folder}; {hint}"
        ) from exc
    data = dataset.data
    images = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if images.ndim == 3:
        images = images[..., None]  # MNIST-like sets are (N, H, W) grayscale
    labels = np.asarray(dataset.targets, dtype=np.int64)
    split = (np.ascontiguousarray(images, dtype=np.uint8), labels)
    return split, [str(name) for name in dataset.classes]


# --- image folders ------------------------------------------------------------


def _load_imagefolder(spec: SourceSpec) -> DecodedSource:
    """Load a tree of class folders, or train/ and test/ trees of them."""
    root = _require_path(spec)
    if not root.is_dir():
        raise DatasetError(
            f"imagefolder: {root} is not a folder; expected <class>/<image> "
            "folders, or train/ and test/ each holding them"
        )
    name = dataset_name(root.resolve())
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train and has_test:
        class_names, splits = _read_split_trees(root)
        return DecodedSource(name=name, class_names=class_names, splits=splits)
    if has_train or has_test:
        present, absent = ("train", "test") if has_train else ("test", "train")
        raise DatasetError(
            f"imagefolder: {root} has {present}/ but no {absent}/; expected both "
            "train/ and test/, or one tree of <class>/ folders"
        )
    class_files = _class_files(root)
    paths, labels = _flatten(class_files)
    images = _decode_images(paths, lambda i: str(paths[i]))
    splits = _split_by_fraction(images, labels, spec, str(root))
    return DecodedSource(name=name, class_names=list(class_files), splits=splits)


def _read_split_trees(root: Path) -> tuple[list[str], dict[str, Split]]:
    """Read root/train and root/test, which must hold the same class folders."""
    train_files, test_files = _class_files(root / "train"), _class_files(root / "test")
    if list(train_files) != list(test_files):
        only_train = sorted(set(train_files) - set(test_files))
        only_test = sorted(set(test_files) - set(train_files))
        raise DatasetError(
            f"imagefolder: class folders differ between {root / 'train'} and "
            f"{root / 'test'} (only in train: {', '.join(only_train) or '-'}; "
            f"only in test: {', '.join(only_test) or '-'}); expected the same classes"
        )
    train_paths, train_labels = _flatten(train_files)
    test_paths, test_labels = _flatten(test_files)
    # One decode for both trees, so that size and channel checks span them.
    paths = train_paths + test_paths
    train_images, test_images = _cut(
        _decode_images(paths, lambda i: str(paths[i])),
        [len(train_paths), len(test_paths)],
    )
    splits = {
        "train": (train_images, train_labels),
        "test": (test_images, test_labels),
    }
    return list(train_files), splits


def _class_files(tree: Path) -> dict[str, list[Path]]:
    """Map each class folder of a tree, in sorted order, to its sorted images."""
    class_dirs = sorted(
        entry for entry in tree.iterdir() if entry.is_dir() and not _hidden(entry)
    )
    if not class_dirs:
        raise DatasetError(
            f"imagefolder: {tree} holds no class folders; expected "
            f"{tree}/<class>/<image> files"
        )
    class_files = {folder.name: _image_files(folder) for folder in class_dirs}
    for folder in class_dirs:
        if not class_files[folder.name]:
            raise DatasetError(
                f"imagefolder: class folder {folder} holds no images; expected "
                f"files ending in {', '.join(IMAGE_EXTENSIONS)}"
            )
    return class_files


def _image_files(folder: Path) -> list[Path]:
    """List a folder's visible image files in sorted order."""
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and not _hidden(entry)
        and entry.suffix.lower() in IMAGE_EXTENSIONS
    )


def _hidden(path: Path) -> bool:
    """Tell whether a file or folder is hidden by the dot convention."""
    return path.name.startswith(".")


def _flatten(class_files: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
    """Turn class -> files into one file list and int64 labels by class order."""
    paths = [path for files in class_files.values() for path in files]
    counts = [len(files) for files in class_files.values()]
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return paths, labels


# --- Parquet --------------------------------------------------------------------


def _load_parquet(spec: SourceSpec) -> DecodedSource:
    """Load one Parquet file, or a folder's train.parquet and test.parquet."""
    path = _require_path(spec)
    files = _parquet_files(path)
    parts = [_read_parquet(file) for file in files]
    class_names = _settle_class_names(parts)
    for part in parts:
        _check_label_range(part.labels, len(class_names), str(part.file))
    blobs = [blob for part in parts for blob in part.blobs]
    images = _decode_images(blobs, _row_describer(parts))
    pieces = _cut(images, [len(part.blobs) for part in parts])
    if len(parts) == 2:
        splits = {
            "train": (pieces[0], parts[0].labels),
            "test": (pieces[1], parts[1].labels),
        }
    else:
        splits = _split_by_fraction(pieces[0], parts[0].labels, spec, str(path))
    name = dataset_name(
        path.resolve() if path.is_dir() else path.resolve().with_suffix("")
    )
    return DecodedSource(name=name, class_names=class_names, splits=splits)


def _parquet_files(path: Path) -> list[Path]:
    """Return [path] for a file, or a folder's [train.parquet, test.parquet]."""
    if not path.is_dir():
        return [path]
    files = [path / "train.parquet", path / "test.parquet"]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise DatasetError(
            f"parquet: {path} has no {' or '.join(missing)}; expected a Parquet "
            "file, or a folder holding train.parquet and test.parquet"
        )
    return files


def _read_parquet(file: Path) -> _ParquetPart:
    """Read the encoded images, labels and class names of one Parquet file."""
    try:
        schema = pq.read_schema(file)
        image_column = _image_column(schema, file)
        label_column = _label_column(schema, file)
        table = pq.read_table(file, columns=[image_column, label_column])
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(
            f"parquet: cannot read {file} ({_first_line(exc)}); expected a Parquet file"
        ) from exc
    if table.num_rows == 0:
        raise DatasetError(f"parquet: {file} holds no rows; expected labelled images")
    return _ParquetPart(
        file=file,
        blobs=_image_blobs(table.column(image_column), file),
        labels=_labels(table.column(label_column), file),
        class_names=_hf_class_names(schema, label_column),
    )


def _is_image_type(data_type: pa.DataType) -> bool:
    """Tell whether a column type is Hugging Face's {bytes, path} image struct."""
    if not pa.types.is_struct(data_type):
        return False
    index = data_type.get_field_index("bytes")
    return index >= 0 and _is_binary(data_type.field(index).type)


def _is_binary(data_type: pa.DataType) -> bool:
    """Tell whether a type holds raw bytes."""
    return pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type)


def _describe_columns(schema: pa.Schema) -> str:
    """List a schema's columns with their types, for error messages."""
    return ", ".join(f"{field.name} ({field.type})" for field in schema)


def _image_column(schema: pa.Schema, file: Path) -> str:
    """Find the image column: a {bytes, path} struct, preferably img or image."""
    structs = [field.name for field in schema if _is_image_type(field.type)]
    named = [name for name in IMAGE_COLUMN_NAMES if name in structs]
    if named or structs:
        return (named or structs)[0]
    raise DatasetError(
        f"parquet: {file} has no image column; expected a struct column "
        f"{{bytes: binary, path: string}} such as img or image, found: "
        f"{_describe_columns(schema)}"
    )


def _label_column(schema: pa.Schema, file: Path) -> str:
    """Find the integer label column, named label or labels."""
    for name in LABEL_COLUMN_NAMES:
        index = schema.get_field_index(name)
        if index >= 0 and pa.types.is_integer(schema.field(index).type):
            return name
    raise DatasetError(
        f"parquet: {file} has no label column; expected an integer column "
        f"named {' or '.join(LABEL_COLUMN_NAMES)}, found: {_describe_columns(schema)}"
    )


def _image_blobs(column: pa.ChunkedArray, file: Path) -> list[bytes]:
    """Take the encoded bytes of every row of an image struct column."""
    field_index = column.type.get_field_index("bytes")
    blobs: list[bytes] = []
    for chunk in column.chunks:
        # flatten() folds the struct's own nulls into the child array.
        blobs.extend(chunk.flatten()[field_index].to_pylist())
    missing = next((row for row, blob in enumerate(blobs) if blob is None), None)
    if missing is not None:
        raise DatasetError(
            f"parquet: row {missing} of {file} has no image bytes; expected "
            "encoded image bytes in every row"
        )
    return blobs


def _labels(column: pa.ChunkedArray, file: Path) -> np.ndarray:
    """Convert an integer label column without nulls to int64."""
    if column.null_count > 0:
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        raise DatasetError(
            f"parquet: row {np.flatnonzero(nulls)[0]} of {file} has no label; "
            "expected an integer label in every row"
        )
    return column.to_numpy().astype(np.int64)


def _hf_class_names(schema: pa.Schema, label_column: str) -> list[str] | None:
    """Read ClassLabel names from Hugging Face's schema metadata, if present."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        names = json.loads(raw)["info"]["features"][label_column]["names"]
    except (ValueError, KeyError, TypeError):
        return None  # metadata without a ClassLabel: fall back to label numbers
    return [str(name) for name in names] if isinstance(names, list) else None


def _settle_class_names(parts: list[_ParquetPart]) -> list[str]:
    """Agree on class names across files: metadata names, else "0".."K-1"."""
    named = [part for part in parts if part.class_names is not None]
    for part in named[1:]:
        if part.class_names != named[0].class_names:
            raise DatasetError(
                f"parquet: class names differ between {named[0].file} and "
                f"{part.file}; expected the same huggingface label names"
            )
    if named:
        return list(named[0].class_names or [])
    top_label = max(int(part.labels.max()) for part in parts)
    if top_label >= MAX_CLASSES:
        raise DatasetError(
            f"parquet: label {top_label} implies {top_label + 1} classes and the file "
            f"names none; expected labels below {MAX_CLASSES}, or class names in "
            "the huggingface metadata"
        )
    return [str(label) for label in range(top_label + 1)]


def _row_describer(parts: list[_ParquetPart]) -> Describe:
    """Return a function naming the file and row of a position across parts."""
    starts = np.cumsum([0] + [len(part.blobs) for part in parts[:-1]]).tolist()

    def describe(index: int) -> str:
        """Name the row of one position."""
        part_index = bisect_right(starts, index) - 1
        return f"row {index - starts[part_index]} of {parts[part_index].file}"

    return describe
