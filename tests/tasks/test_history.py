"""Tests for the Hive-partitioned metric history (tasks/history.py)."""

import multiprocessing
import multiprocessing.synchronize
import os
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tasks.errors import TableError, VigilError
from tasks.history import append_history, read_history
from tasks.schemas import MetricHistory
from tasks.store import atomic_path, write_table

UTC = timezone.utc
MAY_1 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
MAY_2 = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
MAY_3 = datetime(2024, 5, 3, 9, 30, tzinfo=UTC)
HISTORY_COLUMNS = [
    "run_id",
    "model_name",
    "model_version",
    "snapshot_id",
    "split",
    "environment",
    "metric",
    "average",
    "class_index",
    "class_name",
    "value",
    "lower",
    "upper",
    "count",
    "evaluated_at",
]
ROWS_PER_RUN = 6


def metric_records(
    run_id: str, accuracy: float = 0.9, model_name: str = "digits-lenet"
) -> list[dict]:
    """Six valid Metrics rows of one run: two splits x three rows."""
    records = []
    for split in ("validation", "test"):
        base = {
            "run_id": run_id,
            "model_name": model_name,
            "model_version": 3,
            "snapshot_id": "snap0001",
            "split": split,
            "environment": "clean",
        }
        records += [
            {
                **base,
                "metric": "accuracy",
                "average": None,
                "class_index": None,
                "class_name": None,
                "value": accuracy,
                "lower": accuracy - 0.05,
                "upper": accuracy + 0.05,
                "count": 100,
            },
            {
                **base,
                "metric": "f1",
                "average": "macro",
                "class_index": None,
                "class_name": None,
                "value": accuracy - 0.01,
                "lower": None,
                "upper": None,
                "count": 100,
            },
            {
                **base,
                "metric": "recall",
                "average": None,
                "class_index": 1,
                "class_name": "one",
                "value": 0.8,
                "lower": 0.7,
                "upper": 0.9,
                "count": 10,
            },
        ]
    return records


def metrics_frame(run_id: str, **kwargs) -> pd.DataFrame:
    return pd.DataFrame(metric_records(run_id, **kwargs))


def files_under(root: Path) -> list[str]:
    """Every visible file under the history folder, relative to it."""
    folder = root / "history"
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


# --- writing ---------------------------------------------------------------------


def test_round_trip_returns_the_rows_with_time_and_partition_date(
    tmp_path: Path,
) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)

    history, problems = read_history(tmp_path)

    assert problems == []
    assert list(history.columns) == [*HISTORY_COLUMNS, "date"]
    assert len(history) == ROWS_PER_RUN
    assert set(history["date"]) == {date(2024, 5, 1)}
    assert set(history["evaluated_at"]) == {pd.Timestamp("2024-05-01 09:30", tz="UTC")}
    expected = pd.DataFrame(metric_records("run-a"))
    for column in ("split", "metric", "value", "count"):
        assert history[column].tolist() == expected[column].tolist()
    assert history["average"].isna().tolist() == expected["average"].isna().tolist()
    assert history["lower"].isna().sum() == 2


def test_file_lies_in_the_utc_date_partition_without_a_date_column(
    tmp_path: Path,
) -> None:
    # 23:30 at UTC-2 on May 1st is 01:30 UTC on May 2nd.
    local = datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))

    path = append_history(tmp_path, metrics_frame("run-a"), local)

    assert path == tmp_path / "history" / "date=2024-05-02" / "run-a.parquet"
    stored = pq.read_table(path)
    assert stored.schema.names == HISTORY_COLUMNS
    assert stored.schema.field("evaluated_at").type == pyarrow.timestamp("us", "UTC")
    assert stored.schema.metadata[b"vigil.schema"] == b"MetricHistory"


def test_pyarrow_and_pandas_read_the_folder_as_a_hive_dataset(tmp_path: Path) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    append_history(tmp_path, metrics_frame("run-b"), MAY_2)
    append_history(tmp_path, metrics_frame("run-c"), MAY_2)
    expected_dates = {
        "run-a": "2024-05-01",
        "run-b": "2024-05-02",
        "run-c": "2024-05-02",
    }

    dataset = ds.dataset(tmp_path / "history", partitioning="hive", format="parquet")
    from_arrow = dataset.to_table().to_pandas()
    from_pandas = pd.read_parquet(tmp_path / "history")

    for frame in (from_arrow, from_pandas):
        assert len(frame) == 3 * ROWS_PER_RUN
        assert frame["run_id"].value_counts().to_dict() == dict.fromkeys(
            expected_dates, ROWS_PER_RUN
        )
        for run_id, day in expected_dates.items():
            rows = frame[frame["run_id"] == run_id]
            assert set(rows["date"].astype(str)) == {day}
            assert {t.date().isoformat() for t in rows["evaluated_at"]} == {day}


def test_a_write_in_flight_is_invisible_to_every_reader(tmp_path: Path) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    target = tmp_path / "history" / "date=2024-05-01" / "run-b.parquet"

    with atomic_path(target) as temporary:
        # A half-written file, as a crash mid-write would leave it.
        temporary.write_bytes(b"PAR1 half a file")
        assert temporary.parent == target.parent
        assert temporary.name.startswith(".")
        dataset = ds.dataset(tmp_path / "history", partitioning="hive")
        assert [Path(f).name for f in dataset.files] == ["run-a.parquet"]
        assert len(dataset.to_table()) == ROWS_PER_RUN
        assert len(pd.read_parquet(tmp_path / "history")) == ROWS_PER_RUN
        history, problems = read_history(tmp_path)
        assert (len(history), problems) == (ROWS_PER_RUN, [])


def test_rerunning_a_run_replaces_its_file(tmp_path: Path) -> None:
    append_history(tmp_path, metrics_frame("run-a", accuracy=0.9), MAY_1)
    later = MAY_1 + timedelta(hours=2)
    append_history(tmp_path, metrics_frame("run-a", accuracy=0.8), later)

    history, problems = read_history(tmp_path)

    assert problems == []
    assert len(history) == ROWS_PER_RUN
    accuracy = history[history["metric"] == "accuracy"]["value"]
    assert accuracy.tolist() == [0.8, 0.8]
    assert set(history["evaluated_at"]) == {pd.Timestamp(later)}
    assert files_under(tmp_path) == ["date=2024-05-01/run-a.parquet"]


def test_a_retry_after_midnight_moves_the_file_to_the_new_date(tmp_path: Path) -> None:
    before = datetime(2024, 5, 1, 23, 59, tzinfo=UTC)
    after = datetime(2024, 5, 2, 0, 1, tzinfo=UTC)
    append_history(tmp_path, metrics_frame("run-a"), before)
    append_history(tmp_path, metrics_frame("run-b"), before)

    append_history(tmp_path, metrics_frame("run-a"), after)

    history, problems = read_history(tmp_path)
    assert problems == []
    assert history["run_id"].value_counts().to_dict() == {
        "run-a": ROWS_PER_RUN,
        "run-b": ROWS_PER_RUN,
    }
    assert files_under(tmp_path) == [
        "date=2024-05-01/run-b.parquet",
        "date=2024-05-02/run-a.parquet",
    ]
    assert set(history.loc[history["run_id"] == "run-a", "date"]) == {date(2024, 5, 2)}


def test_mixed_run_ids_are_refused(tmp_path: Path) -> None:
    mixed = pd.concat([metrics_frame("run-a"), metrics_frame("run-b")])

    with pytest.raises(VigilError, match="mix run ids run-a, run-b"):
        append_history(tmp_path, mixed, MAY_1)
    assert not (tmp_path / "history").exists()


def test_empty_metrics_are_refused(tmp_path: Path) -> None:
    empty = metrics_frame("run-a").iloc[:0]

    with pytest.raises(VigilError, match="no metric rows to append"):
        append_history(tmp_path, empty, MAY_1)


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VigilError, match="has no timezone"):
        append_history(tmp_path, metrics_frame("run-a"), datetime(2024, 5, 1))


def test_invalid_metrics_name_the_schema(tmp_path: Path) -> None:
    frame = metrics_frame("run-a").assign(count=-1)

    with pytest.raises(TableError, match="breaks schema Metrics: column 'count'"):
        append_history(tmp_path, frame, MAY_1)


@pytest.mark.parametrize("run_id", ["../escape", ".hidden", "_private", "a/b"])
def test_a_run_id_that_cannot_name_a_visible_file_is_refused(
    tmp_path: Path, run_id: str
) -> None:
    with pytest.raises(VigilError, match="cannot name a history file"):
        append_history(tmp_path, metrics_frame(run_id), MAY_1)


# --- concurrent writers ---------------------------------------------------------------

WRITERS = 4
RUNS_PER_WRITER = 3


def write_runs(
    root: str, writer: int, start: multiprocessing.synchronize.Barrier
) -> None:
    """One writer process: append its own runs as soon as all writers are ready."""
    start.wait()
    for number in range(RUNS_PER_WRITER):
        run_id = f"writer{writer}-run{number}"
        accuracy = 0.5 + writer / 10 + number / 100
        append_history(Path(root), metrics_frame(run_id, accuracy=accuracy), MAY_1)


def test_concurrent_writers_never_lose_or_mix_rows(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    writers = [
        context.Process(target=write_runs, args=(str(tmp_path), writer, start))
        for writer in range(WRITERS)
    ]
    for process in writers:
        process.start()
    # Read while they write: every run seen must be whole, never half-written.
    while any(process.is_alive() for process in writers):
        history, problems = read_history(tmp_path)
        assert problems == []
        assert set(history["run_id"].value_counts()) <= {ROWS_PER_RUN}
        time.sleep(0.01)
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0

    history, problems = read_history(tmp_path)

    assert problems == []
    expected = {
        f"writer{w}-run{n}": round(0.5 + w / 10 + n / 100, 10)
        for w in range(WRITERS)
        for n in range(RUNS_PER_WRITER)
    }
    assert history["run_id"].value_counts().to_dict() == dict.fromkeys(
        expected, ROWS_PER_RUN
    )
    accuracy = history[history["metric"] == "accuracy"]
    for run_id, rows in accuracy.groupby("run_id"):
        assert rows["value"].round(10).tolist() == [expected[run_id]] * 2
    for path in (tmp_path / "history").rglob("*.parquet"):
        assert set(pq.read_table(path).column("run_id").to_pylist()) == {path.stem}


# --- damaged and invalid files --------------------------------------------------------


def damage_by_garbage(path: Path) -> None:
    path.write_bytes(b"this is not parquet at all")


def damage_by_truncation(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [damage_by_garbage, damage_by_truncation])
def test_a_damaged_file_is_reported_and_the_others_still_read(
    tmp_path: Path, damage
) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    broken = append_history(tmp_path, metrics_frame("run-b"), MAY_2)
    append_history(tmp_path, metrics_frame("run-c"), MAY_3)
    damage(broken)

    history, problems = read_history(tmp_path)

    assert sorted(set(history["run_id"])) == ["run-a", "run-c"]
    assert len(history) == 2 * ROWS_PER_RUN
    assert len(problems) == 1
    assert str(broken) in problems[0]
    assert "not a readable Parquet file" in problems[0]
    assert "\n" not in problems[0]


def test_a_file_that_breaks_the_schema_is_reported_by_schema_name(
    tmp_path: Path,
) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    path = tmp_path / "history" / "date=2024-05-02" / "run-b.parquet"
    path.parent.mkdir(parents=True)
    bad = metrics_frame("run-b").assign(count=-1, evaluated_at=pd.Timestamp(MAY_2))
    pq.write_table(pyarrow.Table.from_pandas(bad, preserve_index=False), path)

    history, problems = read_history(tmp_path)

    assert set(history["run_id"]) == {"run-a"}
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert "breaks schema MetricHistory" in problems[0]
    assert "column 'count'" in problems[0]


def test_a_stored_date_column_breaks_the_schema(tmp_path: Path) -> None:
    path = append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    frame = pq.read_table(path).to_pandas().assign(date="2024-05-01")
    pq.write_table(pyarrow.Table.from_pandas(frame, preserve_index=False), path)

    history, problems = read_history(tmp_path)

    assert history.empty
    assert problems == [
        f"table {path} breaks schema MetricHistory: unexpected column(s) date"
    ]


def test_a_file_moved_to_another_run_or_date_is_reported(tmp_path: Path) -> None:
    written = append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    renamed = written.with_name("run-z.parquet")
    written.rename(renamed)
    other = append_history(tmp_path, metrics_frame("run-b"), MAY_1)
    moved = tmp_path / "history" / "date=2024-05-03" / "run-b.parquet"
    moved.parent.mkdir()
    other.rename(moved)

    history, problems = read_history(tmp_path)

    assert history.empty
    assert problems == [
        f"table {renamed} holds rows of run(s) run-a but is named for run run-z",
        f"table {moved} holds rows evaluated on 2024-05-01 (UTC) "
        "but lies in partition date=2024-05-03",
    ]


def test_stray_files_and_folders_are_reported(tmp_path: Path) -> None:
    append_history(tmp_path, metrics_frame("run-a"), MAY_1)
    folder = tmp_path / "history"
    (folder / "notes.txt").write_text("hello")
    (folder / "date=2024-05-01" / "readme.md").write_text("hello")
    (folder / "misc").mkdir()
    (folder / "date=yesterday").mkdir()

    history, problems = read_history(tmp_path)

    assert len(history) == ROWS_PER_RUN
    assert problems == [
        f"{folder / 'notes.txt'} lies outside any date partition; ignored",
        f"{folder / 'date=2024-05-01' / 'readme.md'} is not a history file "
        "(<run-id>.parquet); ignored",
        f"folder {folder / 'date=yesterday'} is not a date partition "
        "(date=YYYY-MM-DD); ignored",
        f"folder {folder / 'misc'} is not a date partition (date=YYYY-MM-DD); ignored",
    ]


def test_two_copies_of_a_run_keep_the_one_written_last(tmp_path: Path) -> None:
    kept = append_history(tmp_path, metrics_frame("run-a", accuracy=0.7), MAY_2)
    # What a crash between writing a new copy and removing the old one leaves.
    old = tmp_path / "history" / "date=2024-05-01" / "run-a.parquet"
    stale = metrics_frame("run-a", accuracy=0.9).assign(evaluated_at=MAY_1)
    write_table(stale, MetricHistory, old)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    history, problems = read_history(tmp_path)

    assert problems == [f"{old} is an older copy of run run-a (kept {kept}); ignored"]
    assert len(history) == ROWS_PER_RUN
    assert set(history.loc[history["metric"] == "accuracy", "value"]) == {0.7}


# --- reading with filters -------------------------------------------------------------


def three_days(root: Path) -> None:
    append_history(root, metrics_frame("run-a", accuracy=0.9), MAY_1)
    append_history(
        root, metrics_frame("run-b", accuracy=0.8, model_name="other"), MAY_2
    )
    append_history(root, metrics_frame("run-c", accuracy=0.7), MAY_3)


def test_filters_select_by_model_metric_split_and_environment(tmp_path: Path) -> None:
    three_days(tmp_path)

    history, problems = read_history(
        tmp_path, model_name="digits-lenet", metric="accuracy", split="test"
    )

    assert problems == []
    assert history["run_id"].tolist() == ["run-a", "run-c"]
    assert history["value"].tolist() == [0.9, 0.7]
    assert history.index.tolist() == [0, 1]
    nothing, _ = read_history(tmp_path, environment="shifted")
    assert nothing.empty


def test_a_date_range_skips_files_outside_it_without_opening_them(
    tmp_path: Path,
) -> None:
    three_days(tmp_path)
    damage_by_garbage(tmp_path / "history" / "date=2024-05-01" / "run-a.parquet")

    history, problems = read_history(
        tmp_path, since=date(2024, 5, 2), until=date(2024, 5, 2)
    )

    assert problems == []
    assert set(history["run_id"]) == {"run-b"}
    assert set(history["date"]) == {date(2024, 5, 2)}
    later, _ = read_history(tmp_path, since=date(2024, 5, 3))
    assert set(later["run_id"]) == {"run-c"}


def test_rows_are_sorted_by_evaluation_time(tmp_path: Path) -> None:
    append_history(tmp_path, metrics_frame("run-late"), MAY_3)
    append_history(tmp_path, metrics_frame("run-early"), MAY_1)
    append_history(tmp_path, metrics_frame("run-mid"), MAY_1 + timedelta(hours=1))

    history, _ = read_history(tmp_path, metric="accuracy", split="test")

    assert history["run_id"].tolist() == ["run-early", "run-mid", "run-late"]
    assert history["evaluated_at"].is_monotonic_increasing


def test_an_empty_history_has_the_right_columns(tmp_path: Path) -> None:
    history, problems = read_history(tmp_path)

    assert problems == []
    assert history.empty
    assert list(history.columns) == [*HISTORY_COLUMNS, "date"]
    assert str(history["evaluated_at"].dtype) == "datetime64[us, UTC]"
    assert list(MetricHistory.to_schema().columns) == HISTORY_COLUMNS


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"metric": "f1_macro"}, "unknown metric 'f1_macro'; valid: accuracy"),
        ({"split": "holdout"}, "unknown split 'holdout'; valid: train"),
        (
            {"since": date(2024, 5, 3), "until": date(2024, 5, 1)},
            "since 2024-05-03 is after until 2024-05-01",
        ),
    ],
)
def test_filters_that_can_match_nothing_are_refused(
    tmp_path: Path, filters: dict, message: str
) -> None:
    with pytest.raises(VigilError, match=message):
        read_history(tmp_path, **filters)
