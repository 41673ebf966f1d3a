"""The Slack action handler (lambdas/slack_actions) served on loopback, as the Lambda
function URL serves it on AWS: each HTTP request becomes a function URL event (payload
version 2.0), the handler's answer becomes the HTTP answer.

Configured by the handler's own environment (``lambdas.slack_actions.config``); locally
the close is made directly against a worker (``CASES_API_URL`` and
``FRAUD_API_TOKEN``), and the replay table is created in DynamoDB Local if missing.

    python -m infra.local.slack_actions --port 3001
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from infra.local.slack_receiver import serve_until_signalled
from lambdas.notifier.adapters.aws import aws_client
from lambdas.notifier.adapters.idempotency import ensure_table
from lambdas.notifier.models.env import ConfigError
from lambdas.slack_actions.config import ActionsConfig
from lambdas.slack_actions.handler import MAX_BODY_CHARS, Actions


def local_slack(
    receiver_url: str, web_url: str, token: str, cases_table: str, replay_table: str
) -> tuple[dict[str, str], dict[str, str]]:
    """For ``make demo`` with the local Slack stand-in: the notifier's Slack settings (a bot
    token, so a case's message is updated as its alerts join) and this server's
    environment (a signing secret made for the session, the worker's close API, the
    session's API token, response_url on the stand-in)."""
    notifier = {
        "SLACK_BOT_TOKEN": "xoxb-local-demo",
        "SLACK_CHANNEL": "#fraud-demo",
        "SLACK_API_BASE_URL": f"{receiver_url}/api/",
        "CASES_TABLE": cases_table,
    }
    actions = {
        "REPLAY_TABLE": replay_table,
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "CASES_API_URL": web_url,
        "FRAUD_API_TOKEN": token,
        "SLACK_RESPONSE_URL_PREFIX": f"{receiver_url}/",
    }
    return notifier, actions


class ActionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, actions: Actions, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _RequestHandler)
        self.actions = actions

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def actions_from(config: ActionsConfig) -> Actions:
    """The handler for ``config``, its replay table made (DynamoDB Local) if missing."""
    client = aws_client("dynamodb", config.region, config.dynamodb_endpoint)
    ensure_table(client, config.replay_table)
    return Actions(config, dynamodb_client=client)


class _RequestHandler(BaseHTTPRequestHandler):
    server: ActionServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the handler logs what matters (refusals, closes)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_CHARS:
            self._answer(413, "too large")
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        event = {
            "version": "2.0",
            "rawPath": self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body,
            "isBase64Encoded": False,
            "requestContext": {"http": {"method": "POST", "sourceIp": self.client_address[0]}},
        }
        answer = self.server.actions.handle(event)
        self._answer(int(answer.get("statusCode", 200)), str(answer.get("body", "")))

    def _answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.slack_actions",
        description="Serve the Slack action handler on 127.0.0.1 (its function URL locally).",
    )
    parser.add_argument("--port", type=int, default=3001, help="TCP port (0: any free one)")
    args = parser.parse_args(argv)
    try:
        server = ActionServer(actions_from(ActionsConfig.from_env()), args.port)
    except ConfigError as exc:
        print(f"slack actions: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"slack actions: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    serve_until_signalled(
        server,
        "slack-actions",
        f"slack actions listening on http://127.0.0.1:{server.port}/ (the interactivity URL)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
