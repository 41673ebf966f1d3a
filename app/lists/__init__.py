"""Named lists and suppressions: their topics (``topic``), their HTTP API (``http``); the
entries and the store every worker folds them into are pure (``app.detection.lists``)."""
