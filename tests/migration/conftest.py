"""tests/migration imports betterdb-agent-cache (a dev dependency); its analytics must be off before it loads."""

from __future__ import annotations

import os

# The reference reads this switch before it would create its PostHog client (betterdb_agent_cache/analytics.py).
os.environ["BETTERDB_TELEMETRY"] = "false"
