"""Lambda entry point behind the function URL: a Slack interaction request -> a case closed.

A function URL hands the HTTP request over as a version 2.0 payload (``headers`` in lower
case, ``body`` maybe base64) and takes ``{"statusCode", "body"}`` back. Slack wants an
answer within 3 seconds: the close is bounded by ``timeout_s`` and the message is updated
through ``response_url`` before answering.

Answers: 401 for a refused request (unsigned, forged, stale, replayed), 400 for a signed
payload that is not one of our buttons, 200 otherwise (the outcome is in the message).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.notifier.adapters.aws import aws_client
from lambdas.notifier.adapters.secrets import credential
from lambdas.notifier.models.env import ConfigError
from lambdas.slack_actions import message
from lambdas.slack_actions.closer import TOKEN_KEYS, close_case
from lambdas.slack_actions.config import ActionsConfig
from lambdas.slack_actions.guard import Guard, Refused, ReplayStore

logger = Logger(service="fraud-slack-actions")
MAX_BODY_CHARS = 64 * 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Closer = Callable[[dict[str, str]], dict[str, Any]]


class Actions:
    """One container's handler: the guard, the close, the answer to Slack."""

    def __init__(
        self,
        config: ActionsConfig,
        *,
        dynamodb_client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        secrets = lambda: aws_client("secretsmanager", config.region)  # noqa: E731
        signing_secret = credential(
            config.signing_secret,
            config.signing_secret_arn,
            ("signing_secret", "secret"),
            secrets_client=secrets,
        )
        ddb = dynamodb_client or aws_client("dynamodb", config.region, config.dynamodb_endpoint)
        self.guard = Guard(signing_secret, ReplayStore(ddb, config.replay_table), clock)
        token = credential(
            config.api_token, config.api_token_secret_arn, TOKEN_KEYS, secrets_client=secrets
        )
        self.close: Closer
        if config.closer_function:
            client = aws_client("lambda", config.region)
            function = config.closer_function

            def invoke(request: dict[str, str]) -> dict[str, Any]:
                payload = json.dumps({**request, "token": token()}).encode()
                answer = client.invoke(FunctionName=function, Payload=payload)
                loaded = json.loads(answer["Payload"].read())
                if "FunctionError" in answer or not isinstance(loaded, dict):
                    return {"status": 0, "body": {"error": "the closer function failed"}}
                return loaded

            self.close = invoke
        else:
            assert config.cases_api_url is not None
            api_url = config.cases_api_url
            self.close = lambda request: close_case(
                api_url, token(), request, timeout_s=config.timeout_s
            )

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        """A function URL event -> its HTTP answer."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        source = ((event.get("requestContext") or {}).get("http") or {}).get("sourceIp")
        if len(body) > MAX_BODY_CHARS:
            return self._refused("body too large", source, 413)
        try:
            self.guard.check(headers, body)
        except Refused as refused:
            return self._refused(refused.reason, source, 401)
        try:
            closing = message.parse(body)
        except message.BadPayload as exc:
            logger.warning("slack request not understood", extra={"error": str(exc)})
            return {"statusCode": 400, "body": str(exc)}
        if closing is None:
            return {"statusCode": 200, "body": ""}  # the dashboard link: nothing to do
        answer = self.close(
            {
                "case_id": closing.case_id,
                "disposition": closing.disposition,
                "note": closing.note,
                "closed_by": closing.closed_by,
            }
        )
        status, reply = answer.get("status"), answer.get("body") or {}
        keys = {"case_id": closing.case_id, "disposition": closing.disposition, "status": status}
        if status == 200 and isinstance(reply.get("closed"), dict):
            logger.info("case closed from slack", extra={**keys, "by": closing.closed_by})
            update = message.closed_message(closing, reply["closed"])
        else:
            problem = str(reply.get("error") or f"the workers answered {status}")
            logger.warning("case not closed from slack", extra={**keys, "error": problem})
            update = message.refusal_message(closing, problem)
        self._respond(closing.response_url, update)
        return {"statusCode": 200, "body": ""}

    def _refused(self, reason: str, source: object, status: int) -> dict[str, Any]:
        # The reason only: never the secret, the signature or the body.
        logger.warning("slack request refused", extra={"reason": reason, "source_ip": source})
        return {"statusCode": status, "body": "refused"}

    def _respond(self, url: str, update: dict[str, Any]) -> None:
        """The message update through response_url; only to Slack (or the configured
        stand-in), so a signed payload cannot point the function elsewhere."""
        if not url.startswith(self.config.response_url_prefix):
            logger.warning("response_url refused: not Slack's", extra={"prefix": url[:40]})
            return
        request = urllib.request.Request(
            url,
            data=json.dumps(update).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=self.config.timeout_s) as response:
                response.read()
        except OSError as exc:
            # The case is closed either way; the message shows it at the next update.
            logger.warning("response_url failed", extra={"error": type(exc).__name__})


_actions: list[Actions] = []


def get_actions() -> Actions:
    if not _actions:
        try:
            _actions.append(Actions(ActionsConfig.from_env()))
        except ConfigError as exc:
            logger.error("slack actions misconfigured", extra={"error": str(exc)})
            raise
    return _actions[0]


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (``lambdas.slack_actions.handler.handler``)."""
    return get_actions().handle(event)
