"""The repartition topic's consumer: rules grouped by something other than the card
(account, device, ip, or several), and payments re-keyed by card.

The detect agent forwards each payment that qualifies for such a rule to the
repartition topic under its group-by name and key, to the partition that key hashes
to, so each key's payments meet in one partition and one table. It also forwards,
under its card and to the card's partition, a payment whose Kafka key was not its
card id; those are evaluated here exactly as the detect agent would have. A batch's
forwarded payments for one partition travel together, already validated, in one
record (``app.detection.forwarding``); a record of the version before that (one
payment, keyed by group) is still decided. Batches come from the consumer as for the
detect agent (``agents.batch``).
"""

from __future__ import annotations

from agents.batch import Batch, batch_agent
from app.worker.faust_app import regroup_topic

detect_grouped = batch_agent(regroup_topic, "detect-grouped", Batch.add_forwarded)
