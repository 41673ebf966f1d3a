"""Closing a case through the workers' ``POST /cases/{case_id}/close``: the one close path
there is (it closes the case row and publishes the label to the labels topic).

On AWS the workers' load balancer is internal and the VPC has no route to the internet,
while the function URL's handler must reach Slack; so the close runs in a second function
inside the VPC (``handler`` below), invoked by the first. Locally the action handler
calls :func:`close_case` itself.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.notifier.adapters.redaction import REDACTOR
from lambdas.notifier.models.env import ConfigError

logger = Logger(service="fraud-slack-closer")
# No proxy, ever: the target is the workers' own address (loopback, or the VPC's ALB).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOKEN_KEYS = ("api_token", "token")
REQUEST_KEYS = ("case_id", "disposition", "note", "closed_by")
# Below the action handler's own wait for this function (Slack waits 3 s for an answer).
TIMEOUT_S = 2.0


def close_case(
    api_url: str,
    token: str,
    request: dict[str, str],
    timeout_s: float,
) -> dict[str, Any]:
    """``{"status": HTTP status, "body": the API's JSON answer}``; status 0 when the
    workers could not be reached (the body's ``error`` says why, without the token)."""
    REDACTOR.add(token)
    url = f"{api_url.rstrip('/')}/cases/{quote(request['case_id'], safe='')}/close"
    data = json.dumps({key: request[key] for key in ("disposition", "note", "closed_by")}).encode()
    http = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with _OPENER.open(http, timeout=timeout_s) as response:
            return {"status": response.status, "body": _json(response.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": _json(exc.read())}
    except OSError as exc:
        return {"status": 0, "body": {"error": f"workers unreachable: {type(exc).__name__}"}}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"error": "the workers' answer is not JSON"}
    return body if isinstance(body, dict) else {"error": "the workers' answer is not an object"}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.slack_actions.closer.handler``), invoked by the action
    handler with ``{"case_id", "disposition", "note", "closed_by", "token"}``: the token is
    the action handler's (it reads it from Secrets Manager, which this function, in a VPC
    without a Secrets Manager endpoint of its own, could not)."""
    api_url = os.environ.get("CASES_API_URL", "").strip()
    if not api_url:
        raise ConfigError("CASES_API_URL is required")
    request = {key: str(event.get(key, "")) for key in REQUEST_KEYS}
    answer = close_case(api_url, str(event.get("token", "")), request, timeout_s=TIMEOUT_S)
    logger.info("close asked", extra={"case_id": request["case_id"], "status": answer["status"]})
    return answer
