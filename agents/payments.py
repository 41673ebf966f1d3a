"""The detection agent: decode, evaluate every card-keyed rule, update state, emit.

``payments.raw`` is keyed by card, so card rules need no repartition. Payments
that qualify for a rule grouped by another field (account, device, ip, ...)
are forwarded under that group's key to a repartition topic (agents.grouped).
A payment whose Kafka key is not its card id (null, a txn id, anything) sits in
a partition that does not hold its card's state: it is forwarded through the
same repartition topic to its card's partition and evaluated there, never
dropped. A well-keyed payment pays one bytes comparison for that. A key that holds a
card number is the exception: the payment is dead-lettered (``pan_in_key``, the key
masked in the DLQ copy), so the leak shows instead of being re-keyed away.

The consumer hands this agent each partition's fetched records as one batch
(``app.worker.transport``, ``agents.batch``), skipping Faust's per-message path.
"""

from __future__ import annotations

from agents.batch import Batch, batch_agent
from app.worker.faust_app import payments_topic

detect = batch_agent(payments_topic, "detect", Batch.add_payment)
