"""Outbox throughput and end-to-end delivery latency to a real adapter on loopback.

Run by hand from the repository root: `PYTHONPATH=. python bench/outbox.py [--messages N] [--workers W]`.
Messages are small Patient creates; latency is from enqueue to the recorded delivery.
Prints markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time

from adapter.exchange import outbox
from adapter.exchange.partners import DeliveryRules, OutboundAuth, Partner, Registry
from adapter.exchange.worker import DeliveryWorker
from adapter.store.database import make_engine, prepare
from tests.support.auth import ADMIN_TOKEN
from tests.support.server import running_server

# The receiving server wants a bearer token (running_server accepts the test tokens): the sender
# authenticates as the test administrator through a static outbound token read from this variable.
TOKEN_ENV = "LAC_BENCH_OUTBOX_TOKEN"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/receiver.sqlite3") as base:
        engine = make_engine(f"sqlite:///{tmp}/sender.sqlite3")
        prepare(engine)
        os.environ[TOKEN_ENV] = ADMIN_TOKEN
        receiver = Partner("OOA", "receiver", base_url=base,
                           outbound_auth=OutboundAuth(type="bearer", token_env=TOKEN_ENV))
        registry = Registry(self_ods="HOME", partners={"OOA": receiver},
                            delivery=DeliveryRules(lease_seconds=60))
        body = json.dumps({"resourceType": "Patient", "name": [{"family": "Outboxbench"}]}).encode()
        start = time.perf_counter()
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            for _ in range(args.messages):
                outbox.enqueue(conn, destination="OOA", method="POST", path="Patient", body=body,
                               content_type="application/fhir+json", kind="bench")
        enqueue_s = time.perf_counter() - start
        workers = [DeliveryWorker(engine, registry, name=f"bench-{i}") for i in range(args.workers)]
        start = time.perf_counter()
        threads = [threading.Thread(target=lambda w=w: [None for _ in iter(lambda: w.run_once(limit=20), 0)])
                   for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deliver_s = time.perf_counter() - start
        with engine.connect() as conn:
            rows = outbox.messages(conn, limit=args.messages)
        latencies = sorted((m.delivered_at - m.created).total_seconds() * 1000 for m in rows if m.delivered_at)
        delivered = len(latencies)
        print("| measure | value |\n|---|---|")
        print(f"| messages enqueued in one transaction | {args.messages} ({args.messages / enqueue_s:.0f}/s) |")
        print(f"| delivered by {args.workers} workers | {delivered} in {deliver_s:.1f} s: **{delivered / deliver_s:.0f} messages/s** |")
        print(f"| enqueue → delivered, p50 / p95 (all queued at once) | {statistics.median(latencies):.0f} ms / "
              f"{latencies[int(len(latencies) * 0.95) - 1]:.0f} ms |")
        single = DeliveryWorker(engine, registry, name="bench-single")
        one = []
        for _ in range(50):
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                mid = outbox.enqueue(conn, destination="OOA", method="POST", path="Patient", body=body,
                                     content_type="application/fhir+json", kind="bench")
            t0 = time.perf_counter()
            single.run_once()
            one.append((time.perf_counter() - t0) * 1000)
            del mid
        one.sort()
        print(f"| one message, claim + POST + record (idle queue), p50 / p95 | {statistics.median(one):.1f} ms / "
              f"{one[int(len(one) * 0.95) - 1]:.1f} ms |")
        engine.dispose()


if __name__ == "__main__":
    main()
