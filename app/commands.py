"""Faust CLI commands of the app (``faust -A app --help`` lists them)."""

from __future__ import annotations

import asyncio

import click
from faust.cli import option

from app.faust_app import app, settings
from app.generator import PaymentGenerator, open_truth, produce


def _bootstrap() -> str:
    return ",".join(url.split("://", 1)[1] for url in settings.broker.split(";"))


@app.command(
    option(
        "--rate",
        type=click.FloatRange(min=0.1),
        default=100.0,
        show_default=True,
        help="Payments per second.",
    ),
    option(
        "--duration",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        help="Seconds to run.",
    ),
    option(
        "--fraud-ratio",
        type=click.FloatRange(0.0, 1.0),
        default=0.01,
        show_default=True,
        help="Share of payments that start an injected fraud burst.",
    ),
    option("--seed", type=int, default=1, show_default=True, help="Random seed."),
    option(
        "--cards",
        type=click.IntRange(min=1),
        default=5000,
        show_default=True,
        help="Number of distinct cards.",
    ),
    option(
        "--truth",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Write the injected bursts (JSON lines) to this file.",
    ),
)
async def generate(
    self: object,
    rate: float,
    duration: float,
    fraud_ratio: float,
    seed: int,
    cards: int,
    truth: str | None,
) -> None:
    """Produce synthetic payments (with fraud bursts) to the payments topic."""
    generator = PaymentGenerator(seed=seed, cards=cards, fraud_ratio=fraud_ratio)
    truth_file = open_truth(truth)
    try:
        await produce(_bootstrap(), settings.topic_payments, rate, duration, generator, truth_file)
    finally:
        if truth_file is not None:
            truth_file.close()
    await asyncio.sleep(0)
