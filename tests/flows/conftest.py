"""Flow tests share one Prefect test harness (a temporary local server)."""

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

# The harness waits this long for its server; the first start migrates SQLite.
HARNESS_START_SECONDS = 120


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=HARNESS_START_SECONDS):
        yield
