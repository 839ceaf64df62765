"""The artifact store: one root folder of Parquet tables and JSON records.

Every write goes to a temporary file in the destination folder and is then
renamed into place, so a reader never sees a half-written artifact. Every
table is validated against its pandera model before it is written and again
when it is read back.
"""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from tasks.errors import NotFoundError, StorageError, TableError
from tasks.schemas import FILE_SCHEMAS, TABLE_SCHEMAS

ROOT_ENV = "VIGIL_ARTIFACT_ROOT"
DEFAULT_ROOT = Path("artifacts")
SCHEMA_KEY = b"vigil.schema"
CONTEXT_KEY = b"vigil.context"
# How many offending rows an error message names before it stops.
ROWS_NAMED = 5


def resolve_root(root: str | Path | None = None) -> Path:
    """The artifact root: the argument, else $VIGIL_ARTIFACT_ROOT, else ./artifacts."""
    chosen = root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return Path(chosen).expanduser().absolute()


def process_umask() -> int:
    """The process's umask, read without changing it (Linux), else 0o022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def share_like_umask(path: Path, mode: int) -> None:
    """Give a temporary file or folder the mode a plain one would get.

    mkstemp and mkdtemp create private (0600, 0700) entries; artifacts are
    meant for teammates and workers running as other users too.
    """
    os.chmod(path, mode & ~process_umask())


def ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and parents), or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create folder {folder}: {error.strerror}; expected a writable "
            "artifact root (--artifact-root or $VIGIL_ARTIFACT_ROOT)"
        ) from None
    return folder


def staging_folder(parent: Path, prefix: str) -> Path:
    """A fresh hidden folder in ``parent`` to build an artifact in before renaming."""
    ensure_folder(parent)
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    except OSError as error:
        raise StorageError(f"cannot write in {parent}: {error.strerror}") from None
    share_like_umask(staging, 0o777)
    return staging


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success."""
    ensure_folder(path.parent)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise StorageError(f"cannot write in {path.parent}: {error.strerror}") from None
    os.close(handle)
    share_like_umask(Path(temporary), 0o666)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_json(record: dict[str, Any], path: Path) -> Path:
    """Write a small JSON record atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON record, naming the file when it is missing or damaged."""
    if not path.is_file():
        raise NotFoundError(f"no such record: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TableError(f"record {path} is not valid JSON: {error}") from None


def validate(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel], where: str | Path
) -> pd.DataFrame:
    """Validate ``frame``; on failure raise one line naming schema, columns, rows."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        raise TableError(
            f"table {where} breaks schema {schema.Config.name}: "
            + describe_failures(errors.failure_cases)
        ) from None


def describe_failures(failures: pd.DataFrame) -> str:
    """Summarise pandera's failure cases as 'column: check at rows [...]'."""
    parts = []
    grouped = failures.groupby(["schema_context", "check"], dropna=False, sort=False)
    for (context, check), cases in grouped:
        values = [str(v) for v in cases["failure_case"].unique()[:ROWS_NAMED]]
        if check == "column_in_schema":
            parts.append(f"unexpected column(s) {', '.join(values)}")
            continue
        if check == "column_in_dataframe":
            parts.append(f"missing column(s) {', '.join(values)}")
            continue
        rows = [int(i) for i in cases["index"].dropna().unique()[:ROWS_NAMED]]
        where = f" at rows {rows}" if rows else ""
        if context == "DataFrameSchema":
            # A table-wide check: pandera reports it once per column.
            parts.append(f"the table fails {check}{where}")
            continue
        for column, column_cases in cases.groupby("column", sort=False):
            rows = [
                int(i) for i in column_cases["index"].dropna().unique()[:ROWS_NAMED]
            ]
            where = f" at rows {rows}" if rows else ""
            shown = ", ".join(
                str(v) for v in column_cases["failure_case"].head(ROWS_NAMED)
            )
            parts.append(f"column '{column}' fails {check}{where} (values: {shown})")
    return "; ".join(parts)


def write_table(
    frame: pd.DataFrame,
    schema: type[pa.DataFrameModel],
    path: Path,
    context: dict[str, Any] | None = None,
) -> Path:
    """Validate ``frame`` and write it as Parquet atomically.

    ``context`` (the effective config of the run that made the table, say) is
    stored as JSON in the file's schema metadata next to the schema's name.
    """
    validated = validate(frame, schema, path)
    table = pyarrow.Table.from_pandas(validated, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[SCHEMA_KEY] = schema.Config.name.encode()
    metadata[CONTEXT_KEY] = json.dumps(context or {}, sort_keys=True).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


def _arrow_to_pandas_type(arrow_type: pyarrow.DataType) -> Any:
    # Pixel arrays stay Arrow-backed: one object per image would be slow.
    if pyarrow.types.is_fixed_size_list(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return None


def read_arrow(path: Path) -> pyarrow.Table:
    """Read a Parquet file, naming it when it is missing or not Parquet."""
    if not path.is_file():
        raise NotFoundError(f"no such table: {path}")
    try:
        return pq.read_table(path)
    except (pyarrow.ArrowInvalid, OSError) as error:
        message = f"table {path} is not a readable Parquet file: {error}"
        raise TableError(message) from None


def schema_for(path: Path, table: pyarrow.Table) -> type[pa.DataFrameModel]:
    """The pandera model of a stored table: named in its metadata, else by file."""
    name = (table.schema.metadata or {}).get(SCHEMA_KEY, b"").decode()
    if name in TABLE_SCHEMAS:
        return TABLE_SCHEMAS[name]
    if path.stem in FILE_SCHEMAS:
        return FILE_SCHEMAS[path.stem]
    raise TableError(
        f"table {path} names no known schema; expected a table written by vigil "
        f"(schemas: {', '.join(TABLE_SCHEMAS)})"
    )


def read_table(
    path: Path, schema: type[pa.DataFrameModel] | None = None
) -> pd.DataFrame:
    """Read a table and validate it against ``schema`` (default: its own)."""
    table = read_arrow(path)
    schema = schema or schema_for(path, table)
    frame = table.to_pandas(types_mapper=_arrow_to_pandas_type)
    return validate(frame, schema, path)


def table_context(path: Path) -> dict[str, Any]:
    """The JSON context stored with a table by ``write_table``."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(CONTEXT_KEY, b"{}"))
