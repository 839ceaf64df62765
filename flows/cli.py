"""The ``vigil`` command line."""

import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from model.training import TrainConfig
from tasks.errors import VigilError
from tasks.sources import SOURCES
from tasks.store import ROOT_ENV


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"vigil {version('vigil')}")
        raise typer.Exit()


app = typer.Typer(
    help="Train, evaluate and watch PyTorch image classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
artifacts_app = typer.Typer(help="Inspect the artifact store.", no_args_is_help=True)
app.add_typer(artifacts_app, name="artifacts")
# Wide when piped or captured, so that tables are not cut at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=200)
DEFAULTS = TrainConfig()

# Options shared by several commands.
RootOption = Annotated[
    Path | None,
    typer.Option("--artifact-root", envvar=ROOT_ENV, help="Artifact root folder."),
]
SourceOption = Annotated[str, typer.Option(help=f"Data source: {', '.join(SOURCES)}.")]
DataOption = Annotated[
    str | None,
    typer.Option(help="Folder or file of the source (torchvision root, tree, file)."),
]
DownloadOption = Annotated[
    bool, typer.Option(help="Let torchvision sets download (off: nothing downloads).")
]
TestFractionOption = Annotated[
    float, typer.Option(help="Test share when the source has no test split.")
]
ValidationOption = Annotated[
    float, typer.Option(help="Validation share carved from train.")
]
SeedOption = Annotated[int, typer.Option(help="Seed for splits and training.")]
ArchitectureOption = Annotated[str, typer.Option(help="Network architecture.")]
OptimizerOption = Annotated[str, typer.Option(help="sgd, adam or adamw.")]
LearningRateOption = Annotated[float, typer.Option(help="Learning rate.")]
BatchSizeOption = Annotated[int, typer.Option(help="Training batch size.")]
EpochsOption = Annotated[int, typer.Option(help="Training epochs.")]
ThreadsOption = Annotated[
    int, typer.Option(help="Intra-op threads when training on the CPU.")
]
DeviceOption = Annotated[
    str | None, typer.Option(help="Torch device (default: cuda if present, else cpu).")
]


class _HideUserErrorTracebacks(logging.Filter):
    """Drop tracebacks of user errors from console logs; the CLI says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], VigilError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    # Prefect's console handler sits on the root logger; its API handlers keep
    # the full traceback for the UI.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HideUserErrorTracebacks())


def _run(flow: Any, **parameters: Any) -> Any:
    """Run a flow in this process, its console logs free of user-error tracebacks."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    _quiet_user_errors()
    return flow(**parameters)


TRAINING_OPTIONS = (
    "architecture",
    "optimizer",
    "learning_rate",
    "batch_size",
    "epochs",
    "seed",
    "device",
    "cpu_threads",
)


def _training(options: dict[str, Any]) -> dict[str, Any]:
    """The training options among a command's arguments."""
    return {name: options[name] for name in TRAINING_OPTIONS}


def _root(root: Path | None) -> str | None:
    return str(root) if root else None


@app.command()
def run(
    source: SourceOption = "digits",
    data: DataOption = None,
    download: DownloadOption = False,
    test_fraction: TestFractionOption = 0.2,
    validation_fraction: ValidationOption = 0.1,
    architecture: ArchitectureOption = DEFAULTS.architecture,
    optimizer: OptimizerOption = DEFAULTS.optimizer,
    learning_rate: LearningRateOption = DEFAULTS.learning_rate,
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    epochs: EpochsOption = DEFAULTS.epochs,
    seed: SeedOption = DEFAULTS.seed,
    device: DeviceOption = None,
    cpu_threads: ThreadsOption = DEFAULTS.cpu_threads,
    model_name: Annotated[
        str | None, typer.Option(help="Registry name (default: <dataset>-<arch>).")
    ] = None,
    artifact_root: RootOption = None,
) -> None:
    """Run the whole pipeline: ingest, train, evaluate, register."""
    from flows.pipeline import pipeline, source_spec, train_config
    from tasks.registry import check_model_name
    from tasks.sources import check_spec

    # Refuse bad options before a Prefect server starts for nothing.
    check_spec(source_spec(source, data, download, test_fraction, seed))
    train_config(**_training(locals()))
    if model_name is not None:
        check_model_name(model_name)

    result = _run(
        pipeline,
        source=source,
        data=data,
        download=download,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        architecture=architecture,
        optimizer=optimizer,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        device=device,
        cpu_threads=cpu_threads,
        model_name=model_name,
        artifact_root=_root(artifact_root),
    )
    _print_headline(result["headline"])
    root = Path(result["artifact_root"])
    champion = "champion" if result["champion"] else "not champion"
    console.print(
        f"model    {result['model_name']} version {result['version']} ({champion})\n"
        f"snapshot {root / 'datasets' / result['dataset'] / result['snapshot_id']}\n"
        f"run      {root / 'runs' / result['run_id']}\n"
        f"registry {root / 'models' / result['model_name'] / str(result['version'])}"
    )


@app.command()
def ingest(
    source: SourceOption = "digits",
    data: DataOption = None,
    download: DownloadOption = False,
    test_fraction: TestFractionOption = 0.2,
    validation_fraction: ValidationOption = 0.1,
    seed: SeedOption = 0,
    artifact_root: RootOption = None,
) -> None:
    """Store a data source as a content-addressed snapshot."""
    from flows.pipeline import ingest as ingest_flow
    from flows.pipeline import source_spec
    from tasks.sources import check_spec

    check_spec(source_spec(source, data, download, test_fraction, seed))

    snapshot_id = _run(
        ingest_flow,
        source=source,
        data=data,
        download=download,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
        artifact_root=_root(artifact_root),
    )
    console.print(f"snapshot {snapshot_id}")


@app.command()
def train(
    snapshot: Annotated[str, typer.Option(help="Snapshot id (or a unique prefix).")],
    architecture: ArchitectureOption = DEFAULTS.architecture,
    optimizer: OptimizerOption = DEFAULTS.optimizer,
    learning_rate: LearningRateOption = DEFAULTS.learning_rate,
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    epochs: EpochsOption = DEFAULTS.epochs,
    seed: SeedOption = DEFAULTS.seed,
    device: DeviceOption = None,
    cpu_threads: ThreadsOption = DEFAULTS.cpu_threads,
    artifact_root: RootOption = None,
) -> None:
    """Train a network on a snapshot (the checkpoint stays in the run folder)."""
    from flows.pipeline import train as train_flow
    from flows.pipeline import train_config

    train_config(**_training(locals()))

    result = _run(
        train_flow,
        snapshot_id=snapshot,
        architecture=architecture,
        optimizer=optimizer,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        device=device,
        cpu_threads=cpu_threads,
        artifact_root=_root(artifact_root),
    )
    console.print(f"run        {result['run_id']}\ncheckpoint {result['checkpoint']}")


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    version: Annotated[str, typer.Option(help="Version number or alias.")] = "champion",
    run: Annotated[
        str | None, typer.Option(help="Evaluate a train run's checkpoint instead.")
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option(help="Snapshot id (default: the model's own).")
    ] = None,
    split: Annotated[
        list[str] | None, typer.Option(help="Split(s) to evaluate.")
    ] = None,
    artifact_root: RootOption = None,
) -> None:
    """Evaluate a registered model or a train run's checkpoint."""
    from flows.pipeline import evaluate as evaluate_flow

    result = _run(
        evaluate_flow,
        model_name=model,
        version=version,
        run_id=run,
        snapshot_id=snapshot,
        splits=tuple(split or ["test"]),
        artifact_root=_root(artifact_root),
    )
    _print_headline(result["headline"])
    console.print(f"metrics {result['metrics']}")


@app.command()
def reevaluate(
    model: Annotated[str, typer.Option(help="Registered model name.")] = "digits-lenet",
    version: Annotated[str, typer.Option(help="Version number or alias.")] = "champion",
    source: Annotated[
        str | None, typer.Option(help="Source to re-ingest (default: the model's).")
    ] = None,
    data: DataOption = None,
    artifact_root: RootOption = None,
) -> None:
    """Re-evaluate a registered model now, as the nightly deployment does."""
    from flows.reevaluate import reevaluate as reevaluate_flow

    state = _run(
        reevaluate_flow,
        model_name=model,
        version=version,
        source=source,
        data=data,
        artifact_root=_root(artifact_root),
        return_state=True,
    )
    if state.is_failed():
        # A user error reads as itself, not as Prefect's wrapper around it.
        cause = state.result(raise_on_failure=False)
        message = str(cause) if isinstance(cause, VigilError) else state.message
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)
    result = state.result()
    console.print(f"{result['message']}; history {result['history']}")


@app.command()
def serve(
    cron: Annotated[
        str, typer.Option(envvar="VIGIL_NIGHTLY_CRON", help="Nightly cron.")
    ] = "0 2 * * *",
    timezone: Annotated[
        str,
        typer.Option(envvar="VIGIL_NIGHTLY_TIMEZONE", help="IANA zone of the cron."),
    ] = "UTC",
) -> None:
    """Serve the deployments (pipeline, evaluate, reevaluate/nightly)."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    from flows.deployments import build_deployments

    if not PREFECT_API_URL.value():
        typer.echo(
            "error: vigil serve needs a Prefect server that outlives it; start one "
            "with `prefect server start` and set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api)",
            err=True,
        )
        raise typer.Exit(1)
    deployments = build_deployments(cron, timezone)
    # Stopping this process must leave the nightly schedule active.
    prefect_serve(*deployments, pause_on_shutdown=False)


@app.command()
def status(
    runs: Annotated[int, typer.Option(help="How many recent runs to list.")] = 10,
) -> None:
    """Report the server, the deployments, their schedules and the last runs."""
    from flows.status import read_status

    report = read_status(runs)
    console.print(f"server {report['server']}: {report['health']}")
    _print_rows("deployments", report["deployments"])
    _print_rows("last runs", report["runs"])


@app.command()
def history(
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    metric: Annotated[str | None, typer.Option(help="e.g. accuracy, f1.")] = None,
    split: Annotated[str | None, typer.Option(help="e.g. test.")] = None,
    environment: Annotated[str | None, typer.Option(help="e.g. clean.")] = None,
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First date.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last date.")
    ] = None,
    per_class: Annotated[
        bool, typer.Option(help="Include per-class rows, not only overall ones.")
    ] = False,
    artifact_root: RootOption = None,
) -> None:
    """Print a model's metric history over time."""
    from tasks.history import read_history
    from tasks.store import resolve_root

    frame, problems = read_history(
        resolve_root(_root(artifact_root)),
        model_name=model,
        metric=metric,
        split=split,
        since=since.date() if since else None,
        until=until.date() if until else None,
        environment=environment,
    )
    if not per_class:
        frame = frame[frame["class_index"].isna()]
    columns = ["date", "evaluated_at", "model_name", "model_version"]
    columns += ["environment", "split", "metric", "average", "value", "count"]
    rows = frame[columns].assign(
        evaluated_at=frame["evaluated_at"].dt.strftime("%H:%M:%S"),
        value=frame["value"].round(4),
    )
    _print_rows("metric history", rows.to_dict("records"))
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Train, evaluate and watch PyTorch image classifiers."""


def _print_headline(rows: list[dict[str, Any]]) -> None:
    table = Table("split", "metric", "value", "n")
    for row in rows:
        value = "n/a" if row["value"] is None else f"{row['value']:.4f}"
        table.add_row(row["split"], row["metric"], value, str(row["n"]))
    console.print(table)


@artifacts_app.command("list")
def artifacts_list(artifact_root: RootOption = None) -> None:
    """List datasets, runs and models with their key figures."""
    from tasks.catalog import list_datasets, list_models, list_runs
    from tasks.store import resolve_root

    root = resolve_root(_root(artifact_root))
    for title, rows in (
        ("datasets", list_datasets(root)),
        ("runs", list_runs(root)),
        ("models", list_models(root)),
    ):
        _print_rows(f"{title} under {root}", rows)


def _print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print(f"{title}: none")
        return
    table = Table(*rows[0], title=title, title_justify="left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)


@artifacts_app.command("show")
def artifacts_show(
    target: Annotated[
        str, typer.Argument(help="A table: a path, or runs/<run-id>/<table> etc.")
    ],
    rows: Annotated[int, typer.Option(min=0, help="Rows to print.")] = 20,
    artifact_root: RootOption = None,
) -> None:
    """Print one table after validating it against its schema."""
    from tasks.catalog import show_table
    from tasks.store import resolve_root

    schema, frame, path = show_table(resolve_root(_root(artifact_root)), target)
    console.print(f"{path}: {len(frame)} rows, valid against schema {schema}")
    with_pandas_options(lambda: console.print(frame.head(rows).to_string()))


def with_pandas_options(show: Any) -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        show()


def _exit_on_terminate(signal_number: int, frame: Any) -> None:
    # Unwinding (rather than dying on the signal) runs the exit handlers that
    # stop Prefect's temporary server.
    raise SystemExit(128 + signal_number)


def main() -> None:
    """Entry point of the ``vigil`` console script: user errors end in one line."""
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    try:
        app()
    except VigilError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
