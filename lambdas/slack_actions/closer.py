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
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.notifier.adapters.aws import aws_client
from lambdas.notifier.adapters.redaction import REDACTOR
from lambdas.notifier.adapters.secrets import credential
from lambdas.notifier.models.env import ConfigError

logger = Logger(service="fraud-slack-closer")
# No proxy, ever: the target is the workers' own address (loopback, or the VPC's ALB).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOKEN_KEYS = ("api_token", "token")
REQUEST_KEYS = ("case_id", "disposition", "note", "closed_by")


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


_closer: list[Callable[[dict[str, str]], dict[str, Any]]] = []


def _from_env() -> Callable[[dict[str, str]], dict[str, Any]]:
    api_url = os.environ.get("FRAUD_CASES_API_URL", "").strip()
    secret_arn = os.environ.get("FRAUD_API_TOKEN_SECRET_ARN", "").strip()
    if not api_url or not secret_arn:
        raise ConfigError("FRAUD_CASES_API_URL and FRAUD_API_TOKEN_SECRET_ARN are required")
    region = os.environ.get("AWS_REGION", "us-east-1")
    token = credential(
        None, secret_arn, TOKEN_KEYS, secrets_client=lambda: aws_client("secretsmanager", region)
    )
    return lambda request: close_case(api_url, token(), request, timeout_s=5.0)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.slack_actions.closer.handler``), invoked by the action
    handler with ``{"case_id", "disposition", "note", "closed_by"}``."""
    if not _closer:
        _closer.append(_from_env())
    request = {key: str(event.get(key, "")) for key in REQUEST_KEYS}
    answer = _closer[0](request)
    logger.info("close asked", extra={"case_id": request["case_id"], "status": answer["status"]})
    return answer
