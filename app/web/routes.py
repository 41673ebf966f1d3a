"""The worker's HTTP endpoints and web timers, registered on the Faust app by ``wire()``.

    GET /cards/{card_id}   one card's state, routed to the worker that owns it (cards)
    GET /alerts            this worker's recent alerts (?card=&rule=&limit=) (alerts)
    GET /stats             throughput, latency, DLQ, alerts, lag, rules (?history=)
    GET /metrics           Prometheus text (observability)
    GET /healthz           alive and detecting (health)
    GET /readyz            tables recovered, rules topic read (health)
    GET /                  the live dashboard and /static/{name} (dashboard)

Each path also answers with a trailing slash.
"""

from __future__ import annotations

from faust.web import View

from app.web.alerts import AlertsView
from app.web.cards import CardView
from app.web.dashboard import DashboardView, StaticView
from app.web.health import HealthView, ReadyView, refresh_broker_offsets, sample_every_second
from app.web.observability import MetricsView, StatsView
from app.worker.faust_app import app


def _register(view: type[View], *paths: str) -> None:
    # Registered at import, before Faust's own blueprints, so "/" is the dashboard
    # rather than Faust's placeholder index (aiohttp serves the first match).
    for path in paths:
        app.page(path, name=f"{view.__name__}:{path}")(view)


_register(DashboardView, "/")
_register(StaticView, "/static/{name}")
_register(CardView, "/cards/{card_id}", "/cards/{card_id}/")
_register(AlertsView, "/alerts", "/alerts/")
_register(StatsView, "/stats", "/stats/")
_register(HealthView, "/healthz", "/healthz/")
_register(ReadyView, "/readyz", "/readyz/")
_register(MetricsView, "/metrics", "/metrics/")
app.timer(1.0, name="web.sample_every_second")(sample_every_second)
app.timer(2.0, name="web.refresh_broker_offsets")(refresh_broker_offsets)
