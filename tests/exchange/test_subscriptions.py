"""FHIR R4 rest-hook Subscriptions: a real adapter and a real receiving endpoint on loopback.

Notifications are written to the outbox in the transaction of the change and delivered by
the DeliveryWorker: with a payload, `PUT [endpoint]/[type]/[id]` with the resource; without,
`POST [endpoint]` with no body (R4 subscription.html, channel type rest-hook).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapter.exchange import outbox
from adapter.exchange.partners import DeliveryRules, Registry
from adapter.exchange.subscriptions import KIND
from adapter.exchange.worker import DeliveryWorker
from adapter.store.database import make_engine
from tests.support.auth import admin_session
from tests.support.server import postgres_database, require_postgres, running_server

ADMIN_HTTP = admin_session()

JSON = {"Content-Type": "application/fhir+json"}
REGISTRY = Registry(self_ods="X", delivery=DeliveryRules(max_attempts=2, base_seconds=0.05, max_seconds=0.1,
                                                         lease_seconds=5, timeout_seconds=5))


# -- a receiving endpoint ----------------------------------------------------------------------
class Receiver:
    def __init__(self):
        self.calls: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.calls.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


@contextmanager
def adapter_at(url: str):
    with running_server(url) as base:
        engine = make_engine(url)
        try:
            yield base, engine
        finally:
            engine.dispose()


@pytest.fixture
def adapter(tmp_path):
    with adapter_at(f"sqlite:///{tmp_path / 'subs.sqlite3'}") as pair:
        yield pair


# -- helpers ------------------------------------------------------------------------------------
def subscription(endpoint: str, criteria: str = "Task?status=requested", **channel) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "tell the LA about new Tasks",
            "criteria": criteria, "channel": {"type": "rest-hook", "endpoint": endpoint, **channel}}


def task(status: str = "requested") -> dict:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "for": {"reference": "Patient/child-1"}, "description": "initial health assessment"}


def create(base: str, resource: dict) -> dict:
    r = ADMIN_HTTP.post(f"{base}/{resource['resourceType']}", data=json.dumps(resource), headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()


def notifications(engine) -> list[outbox.Message]:
    with engine.connect() as conn:
        return [m for m in reversed(outbox.messages(conn, limit=1000)) if m.kind == KIND]


def deliver(engine) -> int:
    return DeliveryWorker(engine, REGISTRY, name="test").run_once()


def end_to_end(base: str, engine, receiver: Receiver) -> None:
    sub = create(base, subscription(receiver.url, payload="application/fhir+json",
                                    header=["Authorization: Bearer s3cret"]))
    assert sub["status"] == "active"
    assert ADMIN_HTTP.get(f"{base}/Subscription/{sub['id']}").json()["status"] == "active"

    matching = create(base, task("requested"))
    [message] = notifications(engine)
    assert message.destination == f"url:subscription/{sub['id']}"
    assert (message.method, message.path) == ("PUT", f"{receiver.url}/Task/{matching['id']}")
    assert message.patient == "Patient/child-1" and message.correlation_id == sub["id"]

    create(base, task("draft"))                       # does not match: no message
    assert len(notifications(engine)) == 1

    assert deliver(engine) == 1
    [call] = receiver.calls
    assert call["method"] == "PUT" and call["path"] == f"/hook/Task/{matching['id']}"
    assert call["headers"]["authorization"] == "Bearer s3cret"
    assert call["headers"]["content-type"] == "application/fhir+json"
    assert call["headers"]["x-request-id"] == message.message_id
    body = json.loads(call["body"])
    assert body["resourceType"] == "Task" and body["id"] == matching["id"] and body["status"] == "requested"
    assert notifications(engine)[0].status == "delivered"

    # an update that still matches notifies again; one that stops matching does not (R4: new value)
    matching["description"] = "rescheduled"
    assert ADMIN_HTTP.put(f"{base}/Task/{matching['id']}", data=json.dumps(matching), headers=JSON).status_code == 200
    matching["status"] = "cancelled"
    assert ADMIN_HTTP.put(f"{base}/Task/{matching['id']}", data=json.dumps(matching), headers=JSON).status_code == 200
    assert len(notifications(engine)) == 2


# -- tests --------------------------------------------------------------------------------------
def test_matching_write_is_put_to_the_endpoint_with_payload_and_headers(adapter, receiver):
    end_to_end(*adapter, receiver)


def test_on_postgresql(receiver):
    require_postgres()
    with postgres_database() as url, adapter_at(url) as (base, engine):
        end_to_end(base, engine, receiver)


def test_without_payload_an_empty_post_for_every_change_of_the_type(adapter, receiver):
    base, engine = adapter
    sub = create(base, subscription(receiver.url, criteria="Task"))
    written = create(base, task("draft"))
    r = ADMIN_HTTP.patch(f"{base}/Task/{written['id']}", data=json.dumps([{"op": "replace", "path": "/status",
                                                                          "value": "requested"}]),
                       headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    create(base, {"resourceType": "Patient", "name": [{"family": "Other"}]})   # another type: nothing
    messages = notifications(engine)
    assert [(m.method, m.path, m.body) for m in messages] == [("POST", receiver.url, None)] * 2
    assert all(m.destination == f"url:subscription/{sub['id']}" for m in messages)
    assert deliver(engine) == 2
    assert [(c["method"], c["path"], c["body"]) for c in receiver.calls] == [("POST", "/hook", b"")] * 2
    assert "authorization" not in receiver.calls[0]["headers"]


def test_a_transaction_bundle_notifies_for_its_entries(adapter, receiver):
    base, engine = adapter
    create(base, subscription(receiver.url, criteria="Task?status=requested"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": task("requested"), "request": {"method": "POST", "url": "Task"}},
        {"resource": task("draft"), "request": {"method": "POST", "url": "Task"}},
        {"resource": task("requested"), "request": {"method": "POST", "url": "Task"}}]}
    r = ADMIN_HTTP.post(base, data=json.dumps(bundle), headers=JSON)
    assert r.status_code == 200, r.text
    assert len(notifications(engine)) == 2


@pytest.mark.parametrize("change, element", [
    ({"criteria": "Task?no-such-param=1"}, "Subscription.criteria"),
    ({"criteria": "NoSuchType?status=active"}, "Subscription.criteria"),
    ({"criteria": "Task?_sort=status"}, "Subscription.criteria"),
    ({"channel": {"type": "rest-hook", "endpoint": "ftp://127.0.0.1/hook"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "hook"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "email", "endpoint": "mailto:la@example.org"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1/h", "payload": "application/fhir+xml"}},
     "Subscription.channel.payload"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1/h", "header": ["no colon"]}},
     "Subscription.channel.header"),
])
def test_an_unusable_subscription_is_refused_naming_the_element(adapter, change, element):
    base, _engine = adapter
    resource = {**subscription("http://127.0.0.1/hook"), **change}
    r = ADMIN_HTTP.post(f"{base}/Subscription", data=json.dumps(resource), headers=JSON)
    assert r.status_code == 422, r.text
    assert any(element in issue.get("expression", []) for issue in r.json()["issue"]), r.text


def test_deleting_the_subscription_stops_notifications(adapter, receiver):
    base, engine = adapter
    sub = create(base, subscription(receiver.url, payload="application/fhir+json"))
    create(base, task("requested"))                       # enqueued while the Subscription was active
    assert ADMIN_HTTP.delete(f"{base}/Subscription/{sub['id']}").status_code == 204
    create(base, task("requested"))                       # after the delete: nothing
    [message] = notifications(engine)
    assert deliver(engine) == 1                           # the queued one is not sent either
    assert receiver.calls == []
    [after] = notifications(engine)
    assert after.status == "dead" and "no longer active" in after.last_error


def test_a_subscription_switched_off_is_not_notified(adapter, receiver):
    base, engine = adapter
    sub = create(base, subscription(receiver.url))
    sub["status"] = "off"
    assert ADMIN_HTTP.put(f"{base}/Subscription/{sub['id']}", data=json.dumps(sub), headers=JSON).status_code == 200
    create(base, task("requested"))
    assert notifications(engine) == []


def test_a_subscription_past_its_end_is_not_notified(adapter, receiver):
    base, engine = adapter
    create(base, {**subscription(receiver.url), "end": "2020-01-01T00:00:00Z"})
    create(base, task("requested"))
    assert notifications(engine) == []
