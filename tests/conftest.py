"""Hypothesis profiles for the whole suite.

``make test`` (and so CI) runs the ``ci`` profile: derandomized, so a run tests the same
examples on every machine and a red CI is reproducible from the commit alone.
``make test-slow`` runs the unit tests again under ``explore``: fresh random examples on each
run, which is how a test's blind spot is found (and then pinned with ``@example``).
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
