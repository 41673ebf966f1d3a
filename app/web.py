"""Web views on the worker's Faust web server."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from app.faust_app import app
from app.stats import stats


@app.page("/stats/")
class StatsView(View):
    """Throughput, DLQ and alert counts and decision-latency percentiles of this worker."""

    async def get(self, request: Request) -> Response:
        body: dict[str, Any] = stats.snapshot()
        return self.json(body)
