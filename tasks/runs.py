"""Where one flow run's tables live: ``runs/<run-id>/``."""

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.errors import NotFoundError
from tasks.store import read_json, write_json

RECORD = "run.json"


def new_run_id(flow_run_id: str | None) -> str:
    """The flow run's id, or a fresh one when running outside Prefect."""
    return str(flow_run_id or uuid.uuid4())


def run_folder(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id


def find_run(root: Path, run_id: str) -> Path:
    """The run folder whose id is or starts with ``run_id``."""
    matches = sorted(
        path
        for path in (root / "runs").glob("*")
        if run_id and path.is_dir() and path.name.startswith(run_id)
    )
    if not run_id or not matches:
        raise NotFoundError(
            f"no run {run_id!r} under {root / 'runs'}; "
            "`vigil artifacts list` shows the runs"
        )
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5])
        raise NotFoundError(f"run id {run_id!r} is ambiguous: {names}")
    return matches[0]


def write_run_record(root: Path, run_id: str, record: dict[str, Any]) -> Path:
    """Write (or replace) the run's JSON record."""
    full = {
        "run_id": run_id,
        "written_at": datetime.now(timezone.utc).isoformat(),
        **record,
    }
    return write_json(full, run_folder(root, run_id) / RECORD)


def read_run_record(folder: Path) -> dict[str, Any]:
    return read_json(folder / RECORD)
