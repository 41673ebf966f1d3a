"""Is this request Slack's, and new? Signature and age by slack_sdk's verifier, replays
by a conditional put that expires by itself.

The order matters: a request is checked for its signature before it may write anything,
so a forger cannot fill the replay table. Each refusal has a reason for the log; none of
them carries the secret or the signature.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError
from slack_sdk.signature import Clock, SignatureVerifier

# slack_sdk's verifier refuses a timestamp further than this from its clock.
MAX_AGE_S = 5 * 60
# A replay record outlives the window in which the verifier would still take the request.
REPLAY_TTL_S = 2 * MAX_AGE_S
KEY_PREFIX = "slack-action#"
KEY_ATTR, EXPIRY_ATTR = "id", "expiration"


class Refused(Exception):
    """A request not taken; ``reason`` is one short log-safe phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplayStore:
    """Each (timestamp, signature) recorded once, in a table keyed ``id`` with a TTL on
    ``expiration`` (the notifier's idempotency table has the same shape)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def first_time(self, timestamp: str, signature: str, now: float) -> bool:
        digest = hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    KEY_ATTR: {"S": KEY_PREFIX + digest},
                    EXPIRY_ATTR: {"N": str(int(now) + REPLAY_TTL_S)},
                },
                ConditionExpression=f"attribute_not_exists({KEY_ATTR})",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


class Guard:
    def __init__(
        self,
        signing_secret: Callable[[], str],
        replays: ReplayStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = signing_secret
        self._replays = replays
        self._clock = clock

    def check(self, headers: Mapping[str, str], body: str) -> None:
        """Return if the request is Slack's and new; raise :class:`Refused` otherwise."""
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = lowered.get("x-slack-request-timestamp")
        signature = lowered.get("x-slack-signature")
        if not timestamp or not signature:
            raise Refused("unsigned: no X-Slack-Signature or X-Slack-Request-Timestamp")
        if not timestamp.isdigit():
            raise Refused("bad timestamp: not a number of seconds")
        now = self._clock()
        age = now - int(timestamp)
        if abs(age) > MAX_AGE_S:
            raise Refused(f"stale: timestamp {age:.0f} s away from now (limit {MAX_AGE_S} s)")
        verifier = SignatureVerifier(self._secret(), clock=_FixedClock(now))
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise Refused("bad signature")
        if not self._replays.first_time(timestamp, signature, now):
            raise Refused("replayed: this timestamp and signature were seen before")


class _FixedClock(Clock):
    """slack_sdk's clock interface, at the instant the age was checked (one clock)."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now
