"""The Faust worker: the app and its settings, the start-up partition check, its
counters and the bookkeeping of failures that /healthz judges."""
