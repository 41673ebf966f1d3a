"""Deployment and local infrastructure (not imported by the app)."""
