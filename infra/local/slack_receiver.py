"""A local stand-in for Slack: prints each alert it receives as one line on stdout.

Accepts incoming-webhook POSTs (and response_url POSTs) on any path (point
``SLACK_WEBHOOK_URL`` at ``http://127.0.0.1:PORT/services/local``) and
``chat.postMessage`` and ``chat.update`` under ``/api/``
(point ``SLACK_API_BASE_URL`` at ``http://127.0.0.1:PORT/api/``), answering as Slack
does. Binds 127.0.0.1 only.

    python -m infra.local.slack_receiver --port 3000
"""

from __future__ import annotations

import argparse
import html
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, TextIO
from urllib.parse import parse_qs

_MAX_BODY = 1 << 20
_DATE_TOKEN = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


def plain(text: str) -> str:
    """Slack mrkdwn -> plain text on one line (date tokens and links to their labels)."""
    text = _DATE_TOKEN.sub(r"\1", text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return " ".join(html.unescape(text).split())


def _button_urls(blocks: Any) -> list[str]:
    urls: list[str] = []
    if not isinstance(blocks, list):
        return urls
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "actions":
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and isinstance(element.get("url"), str):
                urls.append(element["url"])
    return urls


def _header_text(blocks: Any) -> str | None:
    if isinstance(blocks, list):
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "header":
                text = (block.get("text") or {}).get("text")
                if isinstance(text, str):
                    return text
    return None


def render_line(message: dict[str, Any], *, where: str, now: float | None = None) -> str:
    """One compact line for a posted message: time, destination, text, inspection link."""
    clock = time.strftime("%H:%M:%S", time.localtime(time.time() if now is None else now))
    text = message.get("text")
    body = plain(text) if isinstance(text, str) and text else _header_text(message.get("blocks"))
    line = f"{clock} slack {where} {body or '(no text)'}"
    for url in _button_urls(message.get("blocks")):
        line += f" -> {url}"
    return line


class SlackReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, out: TextIO | None = None) -> None:
        super().__init__(("127.0.0.1", port), _RequestHandler)
        self.out = out if out is not None else sys.stdout
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, message: dict[str, Any], where: str) -> None:
        line = render_line(message, where=where)
        with self._lock:
            self.messages.append(message)
            print(line, file=self.out, flush=True)


class _RequestHandler(BaseHTTPRequestHandler):
    server: SlackReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs would interleave with the alert lines the demo is watching.
        pass

    def _reply(self, status: int, body: str, content_type: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply_json(self, payload: dict[str, Any]) -> None:
        self._reply(200, json.dumps(payload), "application/json; charset=utf-8")

    def do_GET(self) -> None:
        self._reply(200, "slack receiver\n", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._reply(413, "request_too_large", "text/plain")
            return
        raw = self.rfile.read(length)
        if self.path.startswith("/api/"):
            self._api(self.path[len("/api/") :].split("?")[0], raw)
        else:
            self._webhook(raw)

    def _webhook(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            message = None
        if not isinstance(message, dict):
            self._reply(400, "invalid_payload", "text/plain")
            return
        if not message.get("text") and not message.get("blocks"):
            self._reply(400, "no_text", "text/plain")
            return
        # A POST to a message's response_url (lambdas/slack_actions) replaces or answers it.
        where = "response" if "replace_original" in message else "webhook"
        self.server.record(message, where)
        self._reply(200, "ok", "text/plain")

    def _api(self, method: str, raw: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        params: dict[str, Any]
        if "json" in content_type:
            try:
                loaded = json.loads(raw or b"{}")
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._reply_json({"ok": False, "error": "invalid_json"})
                return
            params = loaded if isinstance(loaded, dict) else {}
        else:
            params = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            if isinstance(params.get("blocks"), str):
                try:
                    params["blocks"] = json.loads(params["blocks"])
                except json.JSONDecodeError:
                    self._reply_json({"ok": False, "error": "invalid_blocks"})
                    return
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") and not params.get("token"):
            self._reply_json({"ok": False, "error": "not_authed"})
            return
        if method == "auth.test":
            self._reply_json({"ok": True, "user": "local", "team": "local"})
            return
        if method == "chat.update":
            self._update(params)
            return
        if method != "chat.postMessage":
            self._reply_json({"ok": False, "error": "unknown_method"})
            return
        channel = params.get("channel")
        if not channel:
            self._reply_json({"ok": False, "error": "channel_not_found"})
            return
        if not params.get("text") and not params.get("blocks"):
            self._reply_json({"ok": False, "error": "no_text"})
            return
        ts = f"{time.time():.6f}"
        self.server.record({**params, "ts": ts}, f"#{str(channel).lstrip('#')}")
        self._reply_json({"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts}})

    def _update(self, params: dict[str, Any]) -> None:
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            self._reply_json({"ok": False, "error": "channel_not_found"})
            return
        if not ts or not any(m.get("ts") == ts for m in self.server.messages):
            self._reply_json({"ok": False, "error": "message_not_found"})
            return
        self.server.record(params, f"#{str(channel).lstrip('#')} update {ts}")
        self._reply_json({"ok": True, "channel": channel, "ts": ts})


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.slack_receiver",
        description="Print Slack webhook and chat.postMessage calls, one line per message.",
    )
    parser.add_argument("--port", type=_port, default=3000, help="TCP port (0: any free one)")
    args = parser.parse_args(argv)
    try:
        server = SlackReceiver(args.port)
    except OSError as exc:
        print(f"slack receiver: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    base = f"http://127.0.0.1:{server.port}"
    serve_until_signalled(
        server,
        "slack-receiver",
        f"slack receiver listening on {base} "
        f"(SLACK_WEBHOOK_URL={base}/services/local, SLACK_API_BASE_URL={base}/api/)",
    )
    return 0


def serve_until_signalled(server: ThreadingHTTPServer, name: str, banner: str) -> None:
    """Serve in a thread, say ``banner`` on stderr, stop at SIGINT or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    print(banner, file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    sys.exit(main())
