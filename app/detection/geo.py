"""Where an event happened, and how far apart two places are.

An event's place is its own ``lat``/``lon`` when it carries them, else the centroid of its
``country`` (``data/country_centroids.csv``: its header says where the data comes from and
under which licence). A country without a centroid there, or an event with neither, has no
place. Distances are great-circle distances on a sphere of the Earth's mean radius
(haversine).

A centroid says only which country: two events of which one at least is placed by its
country's centroid cannot be told apart when their countries are the same or share a land
border (New York and a US centroid in Kansas are 1 700 km apart; Detroit and Windsor, a
US and a Canadian centroid, 2 400 km), so such a pair has no distance (``apart``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from app.detection.models import Payment

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
CENTROIDS_FILE = Path(__file__).with_name("data") / "country_centroids.csv"

Place = tuple[float, float]  # (latitude, longitude) in degrees


def _load(path: Path) -> tuple[dict[str, Place], dict[str, frozenset[str]]]:
    with path.open(encoding="utf-8") as rows:
        table = list(csv.DictReader(line for line in rows if not line.startswith("#")))
    centroids = {row["country"]: (float(row["lat"]), float(row["lon"])) for row in table}
    borders = {row["country"]: frozenset(row["borders"].split()) for row in table}
    return centroids, borders


# Each country's centroid, and the countries it shares a land border with.
CENTROIDS, BORDERS = _load(CENTROIDS_FILE)


def place(event: Payment) -> Place | None:
    """The event's own position, else its country's centroid; None if it has neither."""
    if event.lat is not None and event.lon is not None:
        return event.lat, event.lon
    return CENTROIDS.get(event.country)


def located(event: Payment) -> bool:
    return event.lat is not None or event.country in CENTROIDS


def distance_km(a: Place, b: Place) -> float:
    """The great-circle distance between two places (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def place_text(event: Payment) -> str:
    """What a pool entry keeps of an event's place beside its country: its own position,
    exactly (``repr`` of a float reads back the same), or "" for its country's centroid."""
    if event.lat is None or event.lon is None:
        return ""
    return f"{event.lat!r},{event.lon!r}"


def place_of_text(country: str, text: str) -> Place:
    """The place an entry's country and ``place_text`` stand for."""
    if not text:
        return CENTROIDS[country]
    lat, _, lon = text.partition(",")
    return float(lat), float(lon)


def apart(country_a: str, text_a: str, country_b: str, text_b: str) -> float | None:
    """The distance in km between two events' places, each given by its country and
    ``place_text``; None if a centroid cannot tell them apart (see the module's note)."""
    if (not text_a or not text_b) and (
        country_a == country_b or country_b in BORDERS.get(country_a, ())
    ):
        return None
    return distance_km(place_of_text(country_a, text_a), place_of_text(country_b, text_b))
