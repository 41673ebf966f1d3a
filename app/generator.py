"""Synthetic payments with injected fraud (Faker-built cards and merchants).

Deterministic for a seed: the same seed and clock give the same stream, and the
injected fraud is reported so tests and the demo know the ground truth: bursts of
high-value payments (``fraud_ratio``) and, with ``pattern_ratio``, the patterns the other
rule kinds catch (``PATTERNS``; the rules are in ``examples/rules/kinds.yaml``), among them
impossible travel (payments with positions) and events other than payments (a password
reset then a payout).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from faker import Faker

from app.detection.geo import distance_km
from app.detection.models import Payment, iso_from_ms, ms_from_iso
from app.detection.pan import contains_pan
from app.worker.kafka_security import kafka_options

CURRENCY_BY_COUNTRY = {
    "US": "USD",
    "GB": "GBP",
    "FR": "EUR",
    "DE": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "JP": "JPY",
    "CA": "CAD",
    "AU": "AUD",
    "BR": "BRL",
    "IN": "INR",
    "SG": "SGD",
    "CH": "CHF",
    "SE": "SEK",
}
MCCS = ("5411", "5812", "5999", "4111", "5732", "5944", "7995", "4829", "5311", "5541")
# Where a card-present terminal in each country is: its largest city (the positions the
# impossible-travel pattern gives its payments).
CITIES = {
    "US": (40.7128, -74.006),
    "GB": (51.5072, -0.1276),
    "FR": (48.8566, 2.3522),
    "DE": (52.52, 13.405),
    "ES": (40.4168, -3.7038),
    "IT": (41.9028, 12.4964),
    "NL": (52.3676, 4.9041),
    "JP": (35.6762, 139.6503),
    "CA": (43.6532, -79.3832),
    "AU": (-33.8688, 151.2093),
    "BR": (-23.5558, -46.6396),
    "IN": (19.076, 72.8777),
    "SG": (1.3521, 103.8198),
    "CH": (47.3769, 8.5417),
    "SE": (59.3293, 18.0686),
}


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str
    account_id: str
    country: str
    device_id: str
    ip: str
    bin: str = ""


# The BINs (first 6 or 8 digits) of the cards: those of the networks' well-known test card
# numbers, and two 8-digit ones in those ranges. A card's is chosen from its token, not from
# the random stream, so a seed gives the same payments as before payments had a BIN.
BINS = ("411111", "424242", "555555", "222300", "378282", "601100", "41111122", "55555544")


def card_bin(card_id: str) -> str:
    return BINS[int(card_id[4:12], 16) % len(BINS)]


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    mcc: str
    country: str


@dataclass(frozen=True, slots=True)
class Burst:
    """Injected fraud: its payments, and which pattern they follow (the rule that catches
    it: ``burst`` for ``high-value-burst``, else the rule id of ``examples/rules/kinds.yaml``)."""

    card_id: str
    txn_ids: tuple[str, ...]
    first_ts: str
    last_ts: str
    pattern: str = "burst"

    def to_json(self) -> str:
        return json.dumps(
            {
                "card_id": self.card_id,
                "txn_ids": list(self.txn_ids),
                "first_ts": self.first_ts,
                "last_ts": self.last_ts,
                "pattern": self.pattern,
            }
        )


# The patterns ``pattern_ratio`` injects, each the rule id that catches it.
TESTING_THEN_CASH_OUT = "testing-then-cash-out"
NEW_DEVICE_HIGH_VALUE = "new-device-high-value"
IMPOSSIBLE_TRAVEL = "impossible-travel"
RESET_THEN_PAYOUT = "reset-then-payout"
PATTERNS = (TESTING_THEN_CASH_OUT, NEW_DEVICE_HIGH_VALUE, IMPOSSIBLE_TRAVEL, RESET_THEN_PAYOUT)
# An impossible trip is at least this long, and takes at most 10 minutes.
_FAR_KM = 2000


# An event other than a payment, every field empty: each pattern fills in what its type has.
_EVENT = Payment("", "", "", Decimal(0), "", "", "", "", "", "", "", 0)


def card_token(rng: random.Random) -> str:
    """``tok_`` and 16 hex digits, the ninth a letter: at most 8 decimal digits in a row, so
    a token can never read as a card number (13-19 digits). Of 16 random hex digits, about
    6 tokens in 100 000 held one (a run of 13 or more decimal digits in a network's range,
    Luhn-valid; about 60 in 100 000 passed the Luhn check alone): the validator refused
    them, and every payment of their cards."""
    return f"tok_{rng.getrandbits(32):08x}{rng.choice('abcdef')}{rng.getrandbits(28):07x}"


class PaymentGenerator:
    """Yields payments; ``fraud_ratio`` is the share of payments that start a burst."""

    def __init__(
        self,
        seed: int = 1,
        cards: int = 5000,
        merchants: int = 500,
        fraud_ratio: float = 0.01,
        burst_size: int = 3,
        high_value_share: float = 0.002,
        pattern_ratio: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        faker = Faker()
        faker.seed_instance(seed)
        if contains_pan(str(seed)):
            # The seed is in every txn id: the validator would refuse them all.
            raise ValueError("the seed reads as a card number; choose another")
        countries = list(CURRENCY_BY_COUNTRY)
        self.cards = [
            Card(
                card_id=card_token(self.rng),
                # 10, 12 and 8 hex digits: too short to hold a card number.
                account_id="acct_" + faker.hexify("^" * 10),
                country=self.rng.choice(countries),
                device_id="dev_" + faker.hexify("^" * 12),
                ip=faker.ipv4_public(),
            )
            for _ in range(cards)
        ]
        self.cards = [replace(card, bin=card_bin(card.card_id)) for card in self.cards]
        self.merchants = [
            Merchant(
                merchant_id="m_" + faker.hexify("^" * 8),
                mcc=self.rng.choice(MCCS),
                country=self.rng.choice(countries),
            )
            for _ in range(merchants)
        ]
        self.fraud_ratio = fraud_ratio
        self.burst_size = burst_size
        self.high_value_share = high_value_share
        # The share of payments that start each of PATTERNS (0: none, and the stream is
        # exactly what it was before patterns existed).
        self.pattern_ratio = pattern_ratio
        self._seed = seed
        self._counter = 0

    def _txn_id(self) -> str:
        self._counter += 1
        # "_", not a separator: "txn-4000-000000123" would read as a 13-digit Visa number.
        # The counter alone reaches 13 digits only after 10^12 payments.
        return f"txn-{self._seed}_{self._counter:09d}"

    def _payment(
        self, card: Card, amount: Decimal, ts_ms: int, merchant: Merchant | None = None
    ) -> Payment:
        merchant = merchant or self.rng.choice(self.merchants)
        country = card.country if self.rng.random() < 0.9 else merchant.country
        return Payment(
            txn_id=self._txn_id(),
            card_id=card.card_id,
            account_id=card.account_id,
            amount=amount,
            currency=CURRENCY_BY_COUNTRY[country],
            merchant_id=merchant.merchant_id,
            mcc=merchant.mcc,
            country=country,
            device_id=card.device_id,
            ip=card.ip,
            ts=iso_from_ms(ts_ms),
            ts_ms=ts_ms,
            bin=card.bin,
        )

    def _normal_amount(self) -> Decimal:
        if self.rng.random() < self.high_value_share:
            return Decimal(self.rng.randint(1000_00, 3000_00)) / 100
        # Log-normal around 40: most card payments are small.
        cents = min(int(self.rng.lognormvariate(3.7, 1.0) * 100), 999_99)
        return Decimal(max(cents, 50)) / 100

    def burst(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """``burst_size`` high-value payments on one card, a few seconds of event time apart."""
        card = self.rng.choice(self.cards)
        payments = []
        for _ in range(self.burst_size):
            amount = Decimal(self.rng.randint(1000_00, 4999_99)) / 100
            payments.append(self._payment(card, amount, ts_ms))
            ts_ms += self.rng.randint(200, 5_000)
        truth = Burst(
            card.card_id, tuple(p.txn_id for p in payments), payments[0].ts, payments[-1].ts
        )
        return payments, truth

    def testing_then_cash_out(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A card tested with a payment under 2, then 500 or more spent at another merchant
        20 s to 2 minutes later."""
        card = self.rng.choice(self.cards)
        tested_at, spent_at = self.rng.sample(self.merchants, 2)
        test = self._payment(card, Decimal(self.rng.randint(50, 199)) / 100, ts_ms, tested_at)
        later = ts_ms + self.rng.randint(20_000, 120_000)
        amount = Decimal(self.rng.randint(500_00, 999_99)) / 100
        spend = self._payment(card, amount, later, spent_at)
        truth = Burst(
            card.card_id, (test.txn_id, spend.txn_id), test.ts, spend.ts, TESTING_THEN_CASH_OUT
        )
        return [test, spend], truth

    def new_device_high_value(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A card used as usual, then 5 to 60 s later for 500 or more from a device it has
        never used (the truth is that payment)."""
        card = self.rng.choice(self.cards)
        usual = self._payment(card, self._normal_amount(), ts_ms)
        taken = replace(card, device_id=f"dev_{self.rng.getrandbits(48):012x}")
        later = ts_ms + self.rng.randint(5_000, 60_000)
        amount = Decimal(self.rng.randint(500_00, 2_000_00)) / 100
        fraud = self._payment(taken, amount, later)
        truth = Burst(card.card_id, (fraud.txn_id,), fraud.ts, fraud.ts, NEW_DEVICE_HIGH_VALUE)
        return [usual, fraud], truth

    def impossible_travel(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A card used at a terminal at home (with its position), then 1 to 10 minutes
        later at one in a city at least 2 000 km away: faster than 12 000 km/h."""
        card = self.rng.choice(self.cards)
        home = CITIES[card.country]
        far = [c for c in CITIES if distance_km(home, CITIES[c]) >= _FAR_KM]
        away = self.rng.choice(far)
        later = ts_ms + self.rng.randint(60_000, 10 * 60_000)
        trip = []
        for country, at in ((card.country, ts_ms), (away, later)):
            lat, lon = CITIES[country]
            payment = self._payment(card, self._normal_amount(), at)
            currency = CURRENCY_BY_COUNTRY[country]
            trip.append(payment._replace(country=country, currency=currency, lat=lat, lon=lon))
        first, second = trip
        truth = Burst(
            card.card_id, (first.txn_id, second.txn_id), first.ts, second.ts, IMPOSSIBLE_TRAVEL
        )
        return trip, truth

    def reset_then_payout(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """Account takeover: a password reset from the account's usual device, then 30 s to
        10 minutes later a payout of 500 to 5 000 from a device it has never used. Neither
        event has a card (the payout goes to a bank account): they are keyed by account."""
        card = self.rng.choice(self.cards)
        blank = _EVENT._replace(account_id=card.account_id, country=card.country)
        reset = blank._replace(
            txn_id=self._txn_id(),
            type="password_reset",
            device_id=card.device_id,
            ip=card.ip,
            ts=iso_from_ms(ts_ms),
            ts_ms=ts_ms,
        )
        later = ts_ms + self.rng.randint(30_000, 10 * 60_000)
        payout = blank._replace(
            txn_id=self._txn_id(),
            type="payout",
            amount=Decimal(self.rng.randint(500_00, 5_000_00)) / 100,
            currency=CURRENCY_BY_COUNTRY[card.country],
            device_id=f"dev_{self.rng.getrandbits(48):012x}",
            ip=f"198.51.100.{self.rng.randint(1, 254)}",
            ts=iso_from_ms(later),
            ts_ms=later,
        )
        truth = Burst(
            card.card_id, (reset.txn_id, payout.txn_id), reset.ts, payout.ts, RESET_THEN_PAYOUT
        )
        return [reset, payout], truth

    def payments(self, ts_ms: int) -> tuple[list[Payment], Burst | None]:
        """The next payment, or a whole burst or pattern, stamped from event time ``ts_ms``
        (a pattern's later payments later)."""
        if self.rng.random() < self.fraud_ratio:
            burst, truth = self.burst(ts_ms)
            return burst, truth
        if self.pattern_ratio and self.rng.random() < self.pattern_ratio * len(PATTERNS):
            inject = (
                self.testing_then_cash_out,
                self.new_device_high_value,
                self.impossible_travel,
                self.reset_then_payout,
            )
            return inject[self.rng.randrange(len(inject))](ts_ms)
        return [self._payment(self.rng.choice(self.cards), self._normal_amount(), ts_ms)], None

    def stream(
        self, count: int, start_ms: int, step_ms: int = 10
    ) -> Iterator[tuple[Payment, Burst | None]]:
        """``count`` payments with event times from ``start_ms``.

        A burst's ground truth comes with its first payment. A burst's payments follow each
        other; a pattern's later payments (minutes later) wait for their event time among
        the others, so the stream stays in event-time order."""
        produced, ts_ms = 0, start_ms
        waiting: list[tuple[int, str, Payment]] = []
        while produced < count:
            while waiting and waiting[0][0] <= ts_ms and produced < count:
                yield heapq.heappop(waiting)[2], None
                produced += 1
            if produced >= count:
                break
            batch, truth = self.payments(ts_ms)
            if truth is not None and truth.pattern != "burst":
                for later in batch[1:]:
                    heapq.heappush(waiting, (later.ts_ms, later.txn_id, later))
                batch = batch[:1]
            for index, payment in enumerate(batch[: count - produced]):
                yield payment, truth if index == 0 else None
            produced += len(batch)
            # Keep every card's events in event-time order: the next payment follows the burst.
            ts_ms = max(ts_ms, batch[-1].ts_ms) + step_ms

    def history(
        self, count: int, end_ms: int, step_ms: int = 10
    ) -> list[tuple[Payment, Burst | None]]:
        """``stream`` moved back in event time so that its newest payment is at ``end_ms``:
        a backlog that ends now, none of it ahead of the workers' clocks (which refuse a
        payment dated ahead: FRAUD_MAX_FUTURE_SKEW)."""
        items = list(self.stream(count, 0, step_ms))
        if not items:
            return []
        shift = end_ms - max(p.ts_ms for p, _ in items)
        return [
            (_shifted(p, shift), None if b is None else _shifted_burst(b, shift)) for p, b in items
        ]


def _shifted(payment: Payment, shift_ms: int) -> Payment:
    ts_ms = payment.ts_ms + shift_ms
    return payment._replace(ts=iso_from_ms(ts_ms), ts_ms=ts_ms)


def _shifted_burst(burst: Burst, shift_ms: int) -> Burst:
    first, last = ms_from_iso(burst.first_ts), ms_from_iso(burst.last_ts)
    if first is None or last is None:
        raise ValueError(f"a burst's times are not ISO 8601: {burst}")
    return replace(
        burst, first_ts=iso_from_ms(first + shift_ms), last_ts=iso_from_ms(last + shift_ms)
    )


async def produce(
    bootstrap: str,
    topic: str,
    rate: float,
    duration: float,
    generator: PaymentGenerator,
    truth_file: IO[str] | None = None,
    log: Any = print,
) -> int:
    """Send payments at ``rate``/s for ``duration`` s (event time = wall clock), keyed by card."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=2,
        acks=1,
        max_batch_size=256 * 1024,
        **kafka_options(),
    )
    sent, bursts = 0, 0
    tick = 0.01
    # A burst's later payments wait here until their event time comes round, so the
    # stream stays (nearly) in event-time order, as real traffic is.
    scheduled: list[tuple[int, str, Payment]] = []

    async def send(payment: Payment) -> None:
        # An event without a card (a password reset, a payout) is keyed by its account.
        key = payment.card_id or payment.account_id
        await producer.send(topic, payment.to_json(), key=key.encode())

    try:
        await producer.start()  # inside: a start that fails leaves connections to close
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            now_ms = int(time.time() * 1000)
            while scheduled and scheduled[0][0] <= now_ms:
                await send(heapq.heappop(scheduled)[2])
            due = int(min(elapsed + tick, duration) * rate) - sent
            for _ in range(max(due, 0)):
                batch, truth = generator.payments(now_ms)
                await send(batch[0])
                for later in batch[1:]:
                    heapq.heappush(scheduled, (later.ts_ms, later.txn_id, later))
                sent += len(batch)
                if truth is not None:
                    bursts += 1
                    if truth_file is not None:
                        truth_file.write(truth.to_json() + "\n")
            await asyncio.sleep(max(0.0, started + elapsed + tick - time.monotonic()))
        for _, _, payment in sorted(scheduled):
            await send(payment)
        await producer.flush()
    finally:
        await producer.stop()
        if truth_file is not None:
            truth_file.flush()
    log(f"generated {sent} payments ({bursts} fraud bursts) in {time.monotonic() - started:.1f} s")
    return sent
