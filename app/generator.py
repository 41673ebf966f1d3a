"""Synthetic payments with injected fraud (Faker-built cards and merchants).

Deterministic for a seed: the same seed and clock give the same stream, and the
injected fraud is reported so tests and the demo know the ground truth: bursts of
high-value payments (``fraud_ratio``) and, with ``pattern_ratio``, the patterns the other
rule kinds catch (``PATTERNS``; the rules are in ``examples/rules/kinds.yaml``), among them
impossible travel (payments with positions), events other than payments (a password
reset then a payout), a payment far above the card's usual, a large payment the
cardholder never confirms (an absence) and a payment from a takeover ring's device (on a
list: ``ring_entries``), each with its genuine counterpart where a rule
could mistake one for the other (the confirmed large payment: ``fraud`` false in its truth).
``backfill`` sends a backlog that ends now first, so rules with long windows (an absence
alerts only once its key's partition has moved past its deadline) fire within minutes.
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
from app.detection.lists import LIST, Entry
from app.detection.models import Payment, iso_from_ms, ms_from_iso
from app.detection.pan import contains_pan
from app.lists.topic import new_entry
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
    it: ``burst`` for ``high-value-burst``, else the rule id of ``examples/rules/kinds.yaml``).

    ``last_ts`` is when the fraud is complete: its last payment, or for an absence the
    deadline by which the missing payment did not come. ``card_id`` is the account for a
    pattern of events without a card. ``fraud`` false: a genuine pattern
    injected beside its fraud (``GENUINE``), which the rule of its name must not alert."""

    card_id: str
    txn_ids: tuple[str, ...]
    first_ts: str
    last_ts: str
    pattern: str = "burst"
    fraud: bool = True

    def to_json(self) -> str:
        return json.dumps(
            {
                "card_id": self.card_id,
                "txn_ids": list(self.txn_ids),
                "first_ts": self.first_ts,
                "last_ts": self.last_ts,
                "pattern": self.pattern,
                "fraud": self.fraud,
            }
        )


# The patterns ``pattern_ratio`` injects, each the rule id that catches it.
TESTING_THEN_CASH_OUT = "testing-then-cash-out"
NEW_DEVICE_HIGH_VALUE = "new-device-high-value"
IMPOSSIBLE_TRAVEL = "impossible-travel"
RESET_THEN_PAYOUT = "reset-then-payout"
TEN_TIMES_USUAL_SPEND = "ten-times-usual-spend"
LARGE_PAYMENT_UNCONFIRMED = "large-payment-unconfirmed"
BLOCKED_DEVICE = "blocked-device"
PATTERNS = (
    TESTING_THEN_CASH_OUT,
    NEW_DEVICE_HIGH_VALUE,
    IMPOSSIBLE_TRAVEL,
    RESET_THEN_PAYOUT,
    TEN_TIMES_USUAL_SPEND,
    LARGE_PAYMENT_UNCONFIRMED,
    BLOCKED_DEVICE,
)
# The blocked-device rule's list and the devices of the takeover ring on it: the demo puts
# them on the list (``ring_entries``) before the first payment.
BLOCKED_DEVICES = "blocked_devices"
RING_DEVICES = ("dev_ring_7f3a01", "dev_ring_7f3a02", "dev_ring_7f3a03")
# The merchant codes the default rules' device-many-cards reads (gambling, money transfer).
_DEVICE_RULE_MCCS = ("4829", "7995")
# Genuine patterns injected as often, each named after the rule that must not alert on it:
# the large payment the cardholder does confirm in time.
GENUINE = (LARGE_PAYMENT_UNCONFIRMED,)
# The absence rule's window (examples/rules/kinds.yaml): a confirmation comes within it.
_CONFIRM_WITHIN_MS = 1800 * 1000
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
        # The share of payments that start each of PATTERNS and GENUINE (0: none, and the
        # stream is exactly what it was before patterns existed).
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
        event has a card (the payout goes to a bank account): they are keyed by account.

        The account is one of its own, with no card among the generated ones (a wallet): were
        it a card's, its events would reach the account's state from two partitions of the
        payments topic (the card's, the account's), and in a backlog (the demo's backfill)
        one partition's run ahead of the other's by more than the allowed lateness, dead-
        lettered as late (docs/design/known-limits.md)."""
        card = self.rng.choice(self.cards)
        account = f"acct_{self.rng.getrandbits(40):010x}"
        blank = _EVENT._replace(account_id=account, country=card.country)
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
            account, (reset.txn_id, payout.txn_id), reset.ts, payout.ts, RESET_THEN_PAYOUT
        )
        return [reset, payout], truth

    def ten_times_usual_spend(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A stolen card's one big purchase: 5 usual payments of 10 to 60 a minute or so
        apart, then 2 000 to 5 000 (far above 10 times the card's average) 1 to 5 minutes
        after the last (the truth is that payment). On a card of its own: a generated card's
        other payments (a burst of 1 000 or more) could lift its average past a tenth."""
        card = self._card_of_its_own()
        usual = []
        for _ in range(5):
            usual.append(self._payment(card, Decimal(self.rng.randint(10_00, 60_00)) / 100, ts_ms))
            ts_ms += self.rng.randint(20_000, 90_000)
        later = ts_ms + self.rng.randint(60_000, 5 * 60_000)
        big = self._payment(card, Decimal(self.rng.randint(2_000_00, 5_000_00)) / 100, later)
        truth = Burst(card.card_id, (big.txn_id,), big.ts, big.ts, TEN_TIMES_USUAL_SPEND)
        return [*usual, big], truth

    def _card_of_its_own(self) -> Card:
        """A card none of the stream's other payments use, so a pattern's truth holds
        whatever else the stream holds."""
        return replace(
            self.rng.choice(self.cards),
            card_id=card_token(self.rng),
            account_id=f"acct_{self.rng.getrandbits(40):010x}",
            device_id=f"dev_{self.rng.getrandbits(48):012x}",
        )

    def _large_payment(self, card: Card, ts_ms: int) -> tuple[Merchant, Payment]:
        merchant = self.rng.choice(self.merchants)
        amount = Decimal(self.rng.randint(500_00, 2_000_00)) / 100
        return merchant, self._payment(card, amount, ts_ms, merchant)

    def large_payment_unconfirmed(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A large payment (500 to 2 000) that no small confirmation charge (1 or less)
        follows on the card: the absence rule alerts once the card's partition has moved
        30 minutes and the allowed lateness past it. Its truth's ``last_ts`` is that deadline
        (when the fraud shows), not the payment's time.

        On a card of its own (a stolen one, used once): one of the generated cards could
        receive a charge of 1 or less within the 30 minutes (a card tested, another
        pattern's confirmation), and the truth would be wrong."""
        card = self._card_of_its_own()
        _, large = self._large_payment(card, ts_ms)
        deadline = iso_from_ms(large.ts_ms + _CONFIRM_WITHIN_MS)
        truth = Burst(card.card_id, (large.txn_id,), large.ts, deadline, LARGE_PAYMENT_UNCONFIRMED)
        return [large], truth

    def large_payment_confirmed(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """The genuine counterpart: a large payment, then the merchant's confirmation charge
        (0.01 to 1.00 at the same merchant) 10 s to 25 minutes later, within the window. The
        absence rule must not alert; the truth says so (``fraud`` false)."""
        card = self.rng.choice(self.cards)
        merchant, large = self._large_payment(card, ts_ms)
        later = ts_ms + self.rng.randint(10_000, 25 * 60_000)
        charge = self._payment(card, Decimal(self.rng.randint(1, 100)) / 100, later, merchant)
        truth = Burst(
            card.card_id,
            (large.txn_id, charge.txn_id),
            large.ts,
            charge.ts,
            LARGE_PAYMENT_UNCONFIRMED,
            fraud=False,
        )
        return [large, charge], truth

    def blocked_device(self, ts_ms: int) -> tuple[list[Payment], Burst]:
        """A card used from a device of the takeover ring on the ``blocked_devices`` list
        (``RING_DEVICES``; the list rule reads it), at a merchant that is not a gambling or
        money-transfer one: a ring device is many cards' (keyed by card, on every partition),
        and at those merchants the default device-many-cards rule would gather them by
        device, a key fed from several partitions, late in a backlog (the demo's backfill;
        docs/design/known-limits.md)."""
        card = replace(self.rng.choice(self.cards), device_id=self.rng.choice(RING_DEVICES))
        calm = [m for m in self.merchants if m.mcc not in _DEVICE_RULE_MCCS] or self.merchants
        merchant = self.rng.choice(calm)
        payment = self._payment(card, self._normal_amount(), ts_ms, merchant)
        truth = Burst(card.card_id, (payment.txn_id,), payment.ts, payment.ts, BLOCKED_DEVICE)
        return [payment], truth

    def payments(self, ts_ms: int) -> tuple[list[Payment], Burst | None]:
        """The next payment, or a whole burst or pattern, stamped from event time ``ts_ms``
        (a pattern's later payments later)."""
        if self.rng.random() < self.fraud_ratio:
            burst, truth = self.burst(ts_ms)
            return burst, truth
        inject = (
            self.testing_then_cash_out,
            self.new_device_high_value,
            self.impossible_travel,
            self.reset_then_payout,
            self.ten_times_usual_spend,
            self.large_payment_unconfirmed,
            self.large_payment_confirmed,  # GENUINE
            self.blocked_device,
        )
        if self.pattern_ratio and self.rng.random() < self.pattern_ratio * len(inject):
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


def ring_entries(now_ms: int) -> list[Entry]:
    """The ``blocked_devices`` entries of the ring's devices, as ``lists add`` makes them
    (until removed): publish them before the generator's payments."""
    return [
        new_entry(LIST, BLOCKED_DEVICES, device, reason="takeover ring", by="demo", now_ms=now_ms)
        for device in RING_DEVICES
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


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=2,
        acks=1,
        max_batch_size=256 * 1024,
        **kafka_options(),
    )


def _key(payment: Payment) -> bytes:
    # An event without a card (a password reset, a payout) is keyed by its account.
    return (payment.card_id or payment.account_id).encode()


async def backfill(
    bootstrap: str,
    topic: str,
    generator: PaymentGenerator,
    seconds: float,
    rate: float,
    truth_file: IO[str] | None = None,
    log: Any = print,
    end_ms: int | None = None,
) -> tuple[int, list[Burst]]:
    """Send a backlog of about ``seconds`` of event time ending at ``end_ms`` (now), ``rate``
    payments per second of it, as fast as the broker takes them, in event-time order, with
    its truth; returns how many it sent, and the truth.

    Sent before live traffic, each partition's event time runs through the backlog into the
    present: a rule whose alert waits for time to pass (an absence, 30 minutes) fires on the
    backlog's early patterns as soon as a worker has read it, and the patterns spread over
    minutes (impossible travel, a card's usual spending) are already complete."""
    end = int(time.time() * 1000) if end_ms is None else end_ms
    items = generator.history(int(seconds * rate), end, step_ms=max(1, round(1000 / rate)))
    truths = [truth for _, truth in items if truth is not None]
    producer = _producer(bootstrap)
    try:
        await producer.start()
        for payment, _ in items:
            await producer.send(topic, payment.to_json(), key=_key(payment))
        await producer.flush()
    finally:
        await producer.stop()
    if truth_file is not None:
        truth_file.writelines(truth.to_json() + "\n" for truth in truths)
        truth_file.flush()
    span = (end - items[0][0].ts_ms) / 1000 if items else 0.0
    frauds = sum(t.fraud for t in truths)
    log(f"backfilled {len(items)} payments over {span:.0f} s of event time ({frauds} frauds)")
    return len(items), truths


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
    producer = _producer(bootstrap)
    sent, bursts = 0, 0
    tick = 0.01
    # A burst's later payments wait here until their event time comes round, so the
    # stream stays (nearly) in event-time order, as real traffic is.
    scheduled: list[tuple[int, str, Payment]] = []

    async def send(payment: Payment) -> None:
        await producer.send(topic, payment.to_json(), key=_key(payment))

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
                    bursts += truth.fraud
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
