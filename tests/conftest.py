"""Hypothesis profiles for the whole suite.

``make test`` (and so CI) runs the ``ci`` profile: derandomized, so a run tests the same
examples on every machine and a red CI is reproducible from the commit alone; and with no
per-example deadline nor the too-slow health check, which are timings (a busy CI machine
must not fail a test whose answer is right). ``make test-slow`` runs the unit tests again
under ``explore``: fresh random examples on each run, which is how a test's blind spot is
found (and then pinned with ``@example``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", settings.get_profile("untimed"), derandomize=True)
settings.register_profile("explore", settings.get_profile("untimed"), derandomize=False)
