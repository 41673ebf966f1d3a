"""Start a Faust worker on ECS with ``FRAUD_WEB_HOST`` set to its task's own IP address.

    python -c "<this file>" worker -l info    # the worker task's entry point and command

A worker advertises ``FRAUD_WEB_HOST`` to the others (its URL in the group's assignment),
and ``/cards/{card_id}`` asked of any worker (through the load balancer, say) is forwarded
to the worker holding the card's partition at that address. Unset, the app advertises
127.0.0.1 for a 0.0.0.0 bind: every forward would go back to the asking task. On Fargate
each task has its own address in a private subnet, known only once it runs: the task
metadata endpoint v4 (``ECS_CONTAINER_METADATA_URI_V4``, set by ECS in every container)
gives it. Then this process becomes ``faust -A app <arguments>``, the image's own entry
point, so signals and the exit status are the worker's.

A ``FRAUD_WEB_HOST`` already set wins. Exit 2 when the address cannot be read: a worker that
advertised a wrong one would answer card lookups with 503s, silently.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

ATTEMPTS = 5
RETRY_DELAY_S = 1.0


def task_address(metadata: Mapping[str, Any]) -> str:
    """The first IPv4 address of the container's (awsvpc) network."""
    for network in metadata.get("Networks") or []:
        for address in network.get("IPv4Addresses") or []:
            if isinstance(address, str) and address:
                return address
    raise LookupError("the task metadata names no IPv4 address (is the task awsvpc?)")


def read_metadata(url: str) -> Mapping[str, Any]:
    """The container's metadata; retried briefly (the agent may still be starting)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: Mapping[str, Any] = json.load(response)
                return body
        except OSError:
            if attempt == ATTEMPTS:
                raise
            time.sleep(RETRY_DELAY_S)
    raise AssertionError("unreachable")


def exec_faust(arguments: Sequence[str], env: Mapping[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("faust", ["faust", "-A", "app", *arguments], dict(env))


def main(
    arguments: Sequence[str],
    env: Mapping[str, str] | None = None,
    metadata: Callable[[str], Mapping[str, Any]] = read_metadata,
    execute: Callable[[Sequence[str], Mapping[str, str]], int] = exec_faust,
) -> int:
    source = dict(os.environ if env is None else env)
    if not source.get("FRAUD_WEB_HOST", "").strip():
        url = source.get("ECS_CONTAINER_METADATA_URI_V4", "").strip()
        if not url:
            print(
                "worker: ECS_CONTAINER_METADATA_URI_V4 is not set (not on ECS?): set"
                " FRAUD_WEB_HOST to the address other workers reach this one at",
                file=sys.stderr,
            )
            return 2
        try:
            source["FRAUD_WEB_HOST"] = task_address(metadata(url))
        except (OSError, ValueError, LookupError) as exc:
            print(f"worker: cannot read this task's address from {url}: {exc}", file=sys.stderr)
            return 2
    print(f"worker: FRAUD_WEB_HOST={source['FRAUD_WEB_HOST']}", flush=True)
    return execute(list(arguments) or ["worker", "-l", "info"], source)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
