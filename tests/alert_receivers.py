"""Where the tests' alerts arrive: a Slack-compatible webhook and an SMTP server on 127.0.0.1.

Both are real servers the real clients talk to (slack_sdk's ``WebhookClient`` through the Slack
provider's hook, smtplib through the SMTP provider's hook), started in background threads.
Each keeps what it received and lets a test wait for the n-th message: waits count events,
and their timeout only bounds a test that would otherwise hang.

- :class:`WebhookReceiver`: answers ``200 ok`` as Slack does (``status`` switches it to an
  error, as a revoked webhook would), keeps every POSTed JSON body;
- :class:`SmtpReceiver`: aiosmtpd's ``Controller``, keeps every message with its envelope.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from aleph2alma_dev.devstack import free_port

WAIT_LIMIT = 120.0  # seconds before a missing message fails the test instead of hanging it


class _Inbox:
    """Received items, and a condition to wait on until there are n of them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int, what: str, timeout: float = WAIT_LIMIT) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout=timeout):
                raise AssertionError(f"{what}: {len(self.items)} received, {count} expected")
            return list(self.items)


class WebhookReceiver:
    """A Slack-compatible incoming webhook at :attr:`url`."""

    def __init__(self) -> None:
        self.inbox = _Inbox()
        self.status = 200
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.inbox.add({"path": self.path, "json": json.loads(body or b"{}")})
                reply = b"ok" if receiver.status == 200 else b"invalid_token"
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/XXXX"

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (JSON form of ``AIRFLOW_CONN_*``) of this webhook."""
        return {"conn_type": "slackwebhook", "password": self.url}

    @property
    def texts(self) -> list[str]:
        return [str(item["json"].get("text", "")) for item in self.inbox.items]

    def wait_for(self, count: int) -> list[str]:
        self.inbox.wait_for(count, "webhook messages")
        return self.texts

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html", "plain"))
        return part.get_content() if part is not None else ""


class SmtpReceiver:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is given."""

    def __init__(self) -> None:
        self.inbox = _Inbox()
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                receiver.inbox.add(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def connection(self, from_email: str = "airflow@example.org") -> dict[str, Any]:
        """The Airflow connection of this server: no TLS, no login, no retries."""
        return {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": self.port,
            "extra": {
                "from_email": from_email,
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 0,
                "timeout": 10,
            },
        }

    @property
    def mails(self) -> list[Mail]:
        return list(self.inbox.items)

    def wait_for(self, count: int) -> list[Mail]:
        return list(self.inbox.wait_for(count, "e-mails"))

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
