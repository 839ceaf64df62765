"""The metric history: one Parquet file per flow run, Hive-partitioned by date.

Layout: ``<root>/history/date=YYYY-MM-DD/<run-id>.parquet``, where the date is
the UTC date of the run's ``evaluated_at``. Each file holds exactly the
``MetricHistory`` columns; the date lives only in the folder name, so pyarrow
datasets, ``pandas.read_parquet``, polars and DuckDB read the folder directly
with Hive partitioning.

One file per run plus an atomic rename (``tasks.store.write_table``) means
concurrent re-evaluations never lose or mix each other's rows, and a re-run of
the same run id replaces its own file instead of adding duplicates.
"""

from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow

from tasks.errors import TableError, VigilError
from tasks.schemas import METRICS, SPLITS, MetricHistory, Metrics
from tasks.store import read_arrow, validate, write_table

HISTORY = "history"
PARTITION = "date"
SUFFIX = ".parquet"
# pyarrow's dataset discovery skips names that start with these, and so do we:
# a write in flight is a '.'-prefixed temporary file (tasks.store.atomic_path).
HIDDEN_PREFIXES = (".", "_")
COLUMNS: tuple[str, ...] = tuple(MetricHistory.to_schema().columns)


def history_folder(root: Path) -> Path:
    """The folder that holds the whole metric history."""
    return Path(root) / HISTORY


def partition_name(day: date) -> str:
    """The Hive partition folder of one UTC day, e.g. ``date=2024-05-01``."""
    return f"{PARTITION}={day.isoformat()}"


def history_path(root: Path, run_id: str, evaluated_at: datetime) -> Path:
    """Where the history file of one run evaluated at ``evaluated_at`` lives."""
    check_run_id(run_id)
    day = to_utc(evaluated_at).date()
    return history_folder(root) / partition_name(day) / f"{run_id}{SUFFIX}"


def to_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused, its zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise VigilError(
            f"evaluated_at {moment.isoformat()} has no timezone; "
            "pass a timezone-aware datetime, e.g. datetime.now(timezone.utc)"
        )
    return moment.astimezone(timezone.utc)


def check_run_id(run_id: str) -> str:
    """Refuse a run id that cannot be a visible file name in one folder."""
    unsafe = (
        not run_id
        or "/" in run_id
        or "\\" in run_id
        or run_id.startswith(HIDDEN_PREFIXES)
    )
    if unsafe:
        raise VigilError(
            f"run id {run_id!r} cannot name a history file: it must be non-empty, "
            "contain no path separator and not start with '.' or '_'"
        )
    return run_id


def single_run_id(metrics: pd.DataFrame) -> str:
    """The one run id of a metrics frame; refuse an empty or mixed frame."""
    run_ids = sorted(metrics["run_id"].unique())
    if not run_ids:
        raise VigilError("no metric rows to append to the history")
    if len(run_ids) > 1:
        raise VigilError(
            f"metrics to append mix run ids {', '.join(run_ids)}; the history "
            "holds one file per run, append each run separately"
        )
    return check_run_id(str(run_ids[0]))


def append_history(root: Path, metrics: pd.DataFrame, evaluated_at: datetime) -> Path:
    """Write one run's metric rows to the history, replacing that run's file."""
    validated = validate(metrics, Metrics, "metrics to append to the history")
    run_id = single_run_id(validated)
    moment = to_utc(evaluated_at)
    path = history_path(root, run_id, moment)
    frame = validated.assign(evaluated_at=pd.Timestamp(moment))[list(COLUMNS)]
    context = {"run_id": run_id, "evaluated_at": moment.isoformat()}
    write_table(frame, MetricHistory, path, context)
    # Written first, removed second: a crash in between leaves two copies, which
    # read_history resolves, rather than none.
    remove_other_copies(root, run_id, keep=path)
    return path


def remove_other_copies(root: Path, run_id: str, keep: Path) -> None:
    """Delete the run's file under any other date (a retry after midnight)."""
    name = f"{run_id}{SUFFIX}"
    for partition in partitions(history_folder(root)):
        candidate = partition / name
        if candidate != keep and candidate.is_file():
            candidate.unlink(missing_ok=True)


def partitions(folder: Path) -> list[Path]:
    """The visible subfolders of the history folder, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p))


def is_hidden(path: Path) -> bool:
    """Whether readers of the dataset skip ``path`` (temporary or private)."""
    return path.name.startswith(HIDDEN_PREFIXES)


def partition_date(partition: Path) -> date | None:
    """The date of a ``date=YYYY-MM-DD`` folder; None for any other folder."""
    key, _, value = partition.name.partition("=")
    if key != PARTITION:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def history_files(root: Path) -> tuple[list[tuple[date, Path]], list[str]]:
    """Every run's history file with its partition date, and layout problems."""
    folder = history_folder(root)
    found: list[tuple[date, Path]] = []
    problems = stray_files(folder)
    for partition in partitions(folder):
        day = partition_date(partition)
        if day is None:
            problems.append(
                f"folder {partition} is not a date partition "
                f"({PARTITION}=YYYY-MM-DD); ignored"
            )
            continue
        for path in sorted(partition.iterdir()):
            if is_hidden(path):
                continue
            if path.suffix != SUFFIX or not path.is_file():
                problems.append(
                    f"{path} is not a history file (<run-id>{SUFFIX}); ignored"
                )
                continue
            found.append((day, path))
    newest, superseded = newest_copies(found)
    return newest, problems + superseded


def stray_files(folder: Path) -> list[str]:
    """Problems for visible files directly in the history folder."""
    if not folder.is_dir():
        return []
    return [
        f"{path} lies outside any date partition; ignored"
        for path in sorted(folder.iterdir())
        if path.is_file() and not is_hidden(path)
    ]


def newest_copies(
    found: list[tuple[date, Path]],
) -> tuple[list[tuple[date, Path]], list[str]]:
    """Per run id keep the file written last; name any older copy as a problem."""
    by_run: dict[str, list[tuple[date, Path]]] = {}
    for day, path in found:
        by_run.setdefault(path.stem, []).append((day, path))
    kept, problems = [], []
    for copies in by_run.values():
        copies.sort(key=lambda copy: (copy[1].stat().st_mtime_ns, copy[0]))
        kept.append(copies[-1])
        problems += [
            f"{path} is an older copy of run {path.stem} (kept {copies[-1][1]}); "
            "ignored"
            for _, path in copies[:-1]
        ]
    return sorted(kept, key=lambda copy: (copy[0], copy[1].name)), problems


def read_history_file(path: Path, day: date) -> pd.DataFrame:
    """One validated history file with its partition date as a ``date`` column."""
    try:
        frame = read_arrow(path).to_pandas()
    except pyarrow.ArrowException as error:
        message = f"table {path} is not a readable Parquet file: {error}"
        raise TableError(message) from None
    frame = validate(frame, MetricHistory, path)
    check_consistent(frame, path, day)
    return frame.assign(**{PARTITION: day})


def check_consistent(frame: pd.DataFrame, path: Path, day: date) -> None:
    """Refuse a file whose rows belong to another run or another date."""
    foreign = sorted(set(frame["run_id"]) - {path.stem})
    if foreign:
        raise TableError(
            f"table {path} holds rows of run(s) {', '.join(foreign)} "
            f"but is named for run {path.stem}"
        )
    days = sorted({moment.date() for moment in frame["evaluated_at"]} - {day})
    if days:
        shown = ", ".join(d.isoformat() for d in days)
        raise TableError(
            f"table {path} holds rows evaluated on {shown} (UTC) "
            f"but lies in partition {partition_name(day)}"
        )


def empty_history() -> pd.DataFrame:
    """A history frame with no rows and the right columns and dtypes."""
    frame = validate(
        pd.DataFrame({column: [] for column in COLUMNS}), MetricHistory, "history"
    )
    return frame.assign(**{PARTITION: pd.Series([], dtype=object)})


def check_filters(
    metric: str | None, split: str | None, since: date | None, until: date | None
) -> None:
    """Refuse filter values that could only ever match nothing."""
    if metric is not None and metric not in METRICS:
        raise VigilError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if split is not None and split not in SPLITS:
        raise VigilError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if since is not None and until is not None and since > until:
        raise VigilError(f"since {since} is after until {until}")


def in_range(day: date, since: date | None, until: date | None) -> bool:
    """Whether ``day`` lies in the closed range [since, until]."""
    return (since is None or day >= since) and (until is None or day <= until)


def one_line(error: Exception) -> str:
    """An error message folded onto one line."""
    return " ".join(str(error).split())


def read_history(
    root: Path,
    model_name: str | None = None,
    metric: str | None = None,
    split: str | None = None,
    since: date | None = None,
    until: date | None = None,
    environment: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The history's rows, filtered and sorted by evaluated_at, and its problems.

    Files are read one by one so that a damaged file is reported and skipped
    while the others' rows still come back. ``date`` (a ``datetime.date``) is
    taken from the partition; ``since`` and ``until`` are inclusive and skip
    files by their folder, without opening them.
    """
    check_filters(metric, split, since, until)
    files, problems = history_files(root)
    frames = []
    for day, path in files:
        if not in_range(day, since, until):
            continue
        try:
            frames.append(read_history_file(path, day))
        except VigilError as error:
            problems.append(one_line(error))
    history = pd.concat(frames, ignore_index=True) if frames else empty_history()
    wanted = {
        "model_name": model_name,
        "metric": metric,
        "split": split,
        "environment": environment,
    }
    for column, value in wanted.items():
        if value is not None:
            history = history[history[column] == value]
    ordered = history.sort_values(["evaluated_at", "run_id"], kind="stable")
    return ordered.reset_index(drop=True), problems
