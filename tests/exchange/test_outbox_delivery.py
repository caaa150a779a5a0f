"""Outbox delivery to a real adapter on loopback: retries, dead letters, leases, no duplicates."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from adapter.exchange import outbox
from adapter.exchange.partners import DeliveryRules, OutboundAuth, Partner, Registry
from adapter.exchange.worker import DeliveryWorker
from adapter.store.database import make_engine, prepare
from adapter.store.tables import outbox_table
from tests.support.auth import ADMIN_TOKEN, admin_session
from tests.support.server import (
    free_port,
    postgres_database,
    require_postgres,
    running_server,
)

ADMIN_HTTP = admin_session()

FAST = DeliveryRules(max_attempts=4, base_seconds=0.05, max_seconds=0.2, lease_seconds=0.5, timeout_seconds=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def sender_engine(request, tmp_path):
    if request.param == "postgresql":
        require_postgres()
        with postgres_database() as url:
            engine = make_engine(url)
            prepare(engine)
            yield engine
            engine.dispose()
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'sender.sqlite3'}")
    prepare(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def receiver(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'receiver.sqlite3'}") as base:
        yield base


# The receiver authenticates our deliveries; here with a static token read from the environment,
# as a deployment would configure `outbound_auth = { type = "bearer", token_env = ... }`.
os.environ.setdefault("TEST_RECEIVER_TOKEN", ADMIN_TOKEN)
TO_RECEIVER = OutboundAuth(type="bearer", token_env="TEST_RECEIVER_TOKEN")


def registry_for(base: str) -> Registry:
    return Registry(self_ods="HOME", partners={"OOA": Partner(ods="OOA", name="Out-of-area trust", base_url=base,
                                                              outbound_auth=TO_RECEIVER)},
                    delivery=FAST)


def enqueue_patient(engine, family: str) -> str:
    body = json.dumps({"resourceType": "Patient", "name": [{"family": family}]}).encode()
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        return outbox.enqueue(conn, destination="OOA", method="POST", path="Patient", body=body,
                              content_type="application/fhir+json", kind="test", patient=f"Patient/{family}")


def received(base: str, family: str) -> int:
    return ADMIN_HTTP.get(f"{base}/Patient", params={"family:exact": family, "_summary": "count"}).json()["total"]


def status_of(engine, message_id: str) -> outbox.Message:
    with engine.connect() as conn:
        return next(m for m in outbox.messages(conn, limit=1000) if m.message_id == message_id)


def test_delivered_once_even_when_sent_again_with_the_same_request_id(sender_engine, receiver):
    worker = DeliveryWorker(sender_engine, registry_for(receiver))
    mid = enqueue_patient(sender_engine, "Onceonly")
    assert worker.run_once() == 1
    assert status_of(sender_engine, mid).status == "delivered"
    # the sender lost the answer and sends again: the receiver answers from its record
    with sender_engine.connect().execution_options(write=True) as conn, conn.begin():
        conn.execute(update(outbox_table).where(outbox_table.c.message_id == mid).values(status="pending"))
    assert worker.run_once() == 1
    assert received(receiver, "Onceonly") == 1


def test_receiver_down_then_up_is_delivered_later_exactly_once(sender_engine, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    worker = DeliveryWorker(sender_engine, registry_for(base))
    mid = enqueue_patient(sender_engine, "Laterdelivered")
    worker.run_once()
    first = status_of(sender_engine, mid)
    assert first.status == "pending" and first.attempts == 1 and "Connection" in first.last_error
    from tests.support import server as support

    original = support.free_port
    support.free_port = lambda: port  # bring the receiver up on the port the sender knows
    try:
        with running_server(f"sqlite:///{tmp_path / 'late.sqlite3'}") as up:
            assert up == base
            deadline = time.monotonic() + 10
            while status_of(sender_engine, mid).status != "delivered" and time.monotonic() < deadline:
                worker.run_once()
                time.sleep(0.05)
            assert status_of(sender_engine, mid).status == "delivered"
            assert received(base, "Laterdelivered") == 1
    finally:
        support.free_port = original


def test_refused_message_is_dead_lettered_and_can_be_retried(sender_engine, receiver):
    worker = DeliveryWorker(sender_engine, registry_for(receiver))
    bad = json.dumps({"resourceType": "Patient", "gender": 12}).encode()
    with sender_engine.connect().execution_options(write=True) as conn, conn.begin():
        mid = outbox.enqueue(conn, destination="OOA", method="POST", path="Patient", body=bad,
                             content_type="application/fhir+json", kind="test")
    worker.run_once()
    dead = status_of(sender_engine, mid)
    assert dead.status == "dead" and dead.last_status == 422
    with sender_engine.connect().execution_options(write=True) as conn, conn.begin():
        assert outbox.retry(conn) >= 1
    assert status_of(sender_engine, mid).status == "pending"


def test_unreachable_partner_is_dead_lettered_after_the_attempt_limit(sender_engine):
    worker = DeliveryWorker(sender_engine, registry_for(f"http://127.0.0.1:{free_port()}/fhir"))
    mid = enqueue_patient(sender_engine, "Neverthere")
    deadline = time.monotonic() + 10
    while status_of(sender_engine, mid).status != "dead" and time.monotonic() < deadline:
        worker.run_once()
        time.sleep(0.05)
    message = status_of(sender_engine, mid)
    assert message.status == "dead" and message.attempts == FAST.max_attempts


def test_a_worker_that_dies_mid_delivery_is_taken_over_after_its_lease(sender_engine, receiver):
    registry = registry_for(receiver)
    mid = enqueue_patient(sender_engine, "Takenover")
    claimed = outbox.claim(sender_engine, "doomed-worker", FAST)
    assert [m.message_id for m in claimed] == [mid]
    # the doomed worker had sent it before dying, but never recorded the outcome
    ADMIN_HTTP.post(f"{receiver}/Patient", data=claimed[0].body,
                  headers={"Content-Type": "application/fhir+json", "X-Request-Id": mid})
    survivor = DeliveryWorker(sender_engine, registry, name="survivor")
    assert survivor.run_once() == 0            # still leased to the doomed worker
    time.sleep(FAST.lease_seconds + 0.1)
    assert survivor.run_once() == 1
    assert status_of(sender_engine, mid).status == "delivered"
    assert received(receiver, "Takenover") == 1


def test_two_workers_never_deliver_the_same_message(sender_engine, receiver):
    registry = registry_for(receiver)
    ids = [enqueue_patient(sender_engine, f"Parallel{i}") for i in range(20)]
    workers = [DeliveryWorker(sender_engine, registry, name=f"w{n}") for n in range(2)]
    threads = [threading.Thread(target=lambda w=w: [w.run_once(limit=3) for _ in range(15)]) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = [status_of(sender_engine, mid) for mid in ids]
    assert all(m.status == "delivered" and m.attempts == 1 for m in messages)
    assert sum(received(receiver, f"Parallel{i}") for i in range(20)) == 20


def test_cancelling_a_patients_messages(sender_engine):
    mid = enqueue_patient(sender_engine, "Withdrawn")
    with sender_engine.connect().execution_options(write=True) as conn, conn.begin():
        assert outbox.cancel_for_patient(conn, "Patient/Withdrawn") == 1
    assert status_of(sender_engine, mid).status == "cancelled"
    assert outbox.claim(sender_engine, "any", FAST) == []


def test_backoff_grows_with_jitter_and_is_capped():
    rules = DeliveryRules(base_seconds=1, max_seconds=10)
    for attempt, nominal in ((1, 1), (2, 2), (3, 4), (6, 10), (10, 10)):
        delays = [outbox.backoff(attempt, rules) for _ in range(50)]
        assert all(0.5 * nominal <= d <= 1.5 * nominal for d in delays)
    assert timedelta(seconds=outbox.backoff(1, rules)) < timedelta(seconds=2)
