"""The worker's web server: views (cards, alerts, stats, health, dashboard) and metrics."""
