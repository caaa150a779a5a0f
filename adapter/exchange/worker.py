"""Delivers outbox messages to partners' FHIR endpoints with `requests`.

Success is any 2xx. Timeouts, connection failures, 408, 429 and 5xx are retried with
exponential backoff and jitter; any other answer (the partner refuses the message) and
running out of attempts dead-letter it for a person to look at (`lac-adapter outbox`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import requests
from sqlalchemy.engine import Engine

from . import credentials, outbox
from .partners import Registry

log = logging.getLogger("adapter.exchange")
RETRYABLE = {408, 425, 429}


class DeliveryWorker:
    def __init__(self, engine: Engine, registry: Registry, name: str | None = None,
                 session: requests.Session | None = None):
        self.engine = engine
        self.registry = registry
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.session = session or requests.Session()

    def run_once(self, limit: int = 10) -> int:
        """Deliver what is due now; returns how many messages were attempted."""
        batch = outbox.claim(self.engine, self.name, self.registry.delivery, limit)
        for message in batch:
            delivered, status, error, retryable = self._send(message)
            outcome = outbox.record(self.engine, message, self.name, self.registry.delivery, delivered=delivered,
                                    status=status, error=error, retryable=retryable)
            log.info("message %s to %s: %s (HTTP %s)", message.message_id, message.destination, outcome, status)
        return len(batch)

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Deliver until `stop` is set, waking every `poll_seconds` when idle."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - the worker must outlive a bad moment of the database
                log.exception("delivery round failed")
                busy = 0
            if not busy:
                stop.wait(poll_seconds)

    def _send(self, message: outbox.Message) -> tuple[bool, int | None, str | None, bool]:
        from urllib.parse import urlsplit

        extra: dict[str, str] = {}
        if message.destination.startswith("url:"):
            # an absolute endpoint (e.g. a Subscription's rest-hook), not a partner in the registry
            url = message.path
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                return False, None, f"{url!r} is not an absolute http(s) URL", False
            if message.destination.startswith("url:subscription/"):
                from .subscriptions import delivery_headers

                found = delivery_headers(self.engine, message.destination)
                if found is None:
                    return False, None, f"{message.destination[4:]} was deleted or is no longer active", False
                extra = found
        else:
            partner = self.registry.get(message.destination)
            if partner is None or not partner.base_url:
                return False, None, f"no FHIR endpoint for partner {message.destination} in the registry", False
            url = f"{partner.base_url}/{message.path.lstrip('/')}"
            try:
                extra = credentials.outbound_headers(partner, session=self.session,
                                                     timeout=self.registry.delivery.timeout_seconds)
            except credentials.CredentialsError as exc:
                return False, None, f"cannot authenticate to {partner.ods}: {exc}", exc.retryable
        headers = {**extra, "Content-Type": message.content_type, "Accept": "application/fhir+json",
                   "X-Request-Id": message.message_id, "X-Correlation-Id": message.correlation_id}
        if message.body is None and message.destination.startswith("url:"):
            del headers["Content-Type"]  # a rest-hook notification without payload has no body
        try:
            response = self.session.request(message.method, url, data=message.body, headers=headers,
                                            timeout=self.registry.delivery.timeout_seconds)
        except requests.RequestException as exc:
            return False, None, f"{type(exc).__name__}: {exc}", True
        if 200 <= response.status_code < 300:
            return True, response.status_code, None, False
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE
        return False, response.status_code, response.text[:500], retryable


def start_background(engine: Engine, registry: Registry, poll_seconds: float = 1.0) -> threading.Event:
    """Run a delivery worker in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    worker = DeliveryWorker(engine, registry)
    threading.Thread(target=worker.run, args=(stop, poll_seconds), name="outbox-delivery", daemon=True).start()
    return stop
