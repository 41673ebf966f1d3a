"""app/web/dashboard.py: the dashboard and its static files."""

from __future__ import annotations

import aiohttp

from app.worker.stats import WorkerStats
from tests.unit.web.fakes import get, run


def test_dashboard_and_its_static_files_are_served_with_a_strict_policy(
    worker: WorkerStats,
) -> None:
    async def check(session: aiohttp.ClientSession, base: str) -> None:
        async with session.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "/static/dashboard.js" in page and "http" not in page.replace("http-equiv", "")
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with session.get(f"{base}/static/{name}") as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
        for name in ("nope.js", ".hidden.js", "dashboard.py", "%2e%2e%2fweb.py"):
            status, _ = await get(session, f"{base}/static/{name}")
            assert status == 404, name

    run(check)
