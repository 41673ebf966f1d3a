"""app.delivery.published: the bounded set of alert ids already published."""

from __future__ import annotations

from app.delivery.published import RecentIds


def test_recent_ids_keep_the_newest_and_stay_bounded() -> None:
    ids = RecentIds(capacity=3)
    for item in ["a", "b", "a", "c", "d"]:
        ids.add(item)
    assert "a" not in ids  # the oldest went first
    assert all(item in ids for item in ["b", "c", "d"])
    assert len(ids) == 3
