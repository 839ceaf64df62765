"""Prefect flows, deployments and the ``vigil`` command line."""

import os

# vigil never phones home: the temporary local Prefect server that flows start
# without PREFECT_API_URL inherits this, as does any server vigil starts.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
