"""The audit trail and write provenance, applied to every interaction by the router.

Writes: an AuditEvent and a Provenance are stored in the transaction of the write itself, so
a write and its record commit (or fail) together. Reads, searches and refused requests: the
AuditEvent is queued and a background thread stores queued events in batches (one
transaction per batch, at most `FLUSH_SECONDS` later), which keeps an extra database write
off every read's path; a search of AuditEvents flushes the queue first, and shutdown
flushes what is left.

Back-pressure: when reads come faster than the writer thread stores their events, the queue
must not grow without end (memory, and events lost on a crash). Above `queue_limit` events a
request's response waits (`wait_for_room`, awaited by the HTTP layer, so the event loop goes on
serving) until the writer has brought the queue back under the mark: clients are slowed to the
rate the trail can be written, evenly, instead of one request storing thousands of events
itself while every connection of the process waits behind it. Only past ten times the limit (callers
that do not wait) does the request that finds the queue full store the events itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from datetime import datetime, timezone

from ..security import audit
from ..security.caller import SYSTEM
from ..store.access_sql import patients_by_key, patients_of_keys
from ..store.repository import Repository, Transaction, format_instant

log = logging.getLogger("lac_adapter.audit")
FLUSH_SECONDS = 0.2
BATCH = 500
QUEUE_LIMIT = 5000    # default of config [audit] queue_limit: above it, responses wait (wait_for_room)
HARD_LIMIT_FACTOR = 10  # above limit x this, the request stores the queue itself
ROOM_WAIT_SECONDS = 10.0  # a response waits at most this long (a writer that cannot store logs why)


def now_instant() -> str:
    return format_instant(datetime.now(timezone.utc).replace(tzinfo=None))


class AuditTrail:
    def __init__(self, repo: Repository, queue_limit: int = QUEUE_LIMIT):
        self.repo = repo
        self.queue_limit = queue_limit
        self._queue: queue.Queue[audit.Interaction | None] = queue.Queue()
        self._lock = threading.Lock()  # one flusher at a time
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set when the queue is over the limit: no pause then

    # -- in the write's own transaction ----------------------------------------------------
    def record_write(self, tx: Transaction, event: audit.Interaction) -> None:
        """Provenance for what the request wrote, and its AuditEvent, in the same transaction."""
        written = [w for w in tx.written if w[0] not in UNPROVENANCED]
        recorded = now_instant()
        if written:
            tx.create(audit.provenance(tx.caller, written, recorded))
        event.resources = [(t, i, v) for t, i, v, _ in written] + list(tx.disclosed_keys())
        event.patients = sorted(patients_of_keys(tx.conn, {(t, i) for t, i, _ in event.resources})
                                | {i for t, i, _ in event.resources if t == "Patient"})
        tx.create(audit.audit_event(event, recorded))

    # -- queued ------------------------------------------------------------------------------
    def record_later(self, event: audit.Interaction) -> None:
        event.recorded = event.recorded or now_instant()
        self._queue.put(event)
        queued = self._queue.qsize()
        if queued > self.queue_limit:
            self._wake.set()
            if queued > self.queue_limit * HARD_LIMIT_FACTOR:
                self.flush()  # last resort: the queue may not grow without end
        self._ensure_thread()

    @property
    def backlogged(self) -> bool:
        """More events queued than the writer should have to catch up with."""
        return self._queue.qsize() > self.queue_limit

    async def wait_for_room(self) -> None:
        """Wait, without holding up the event loop, until the queue is back under the mark."""
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        while self.backlogged and time.monotonic() < deadline:
            self._ensure_thread()
            await asyncio.sleep(0.01)

    def flush(self) -> int:
        """Store every queued event now; returns how many."""
        with self._lock:
            events: list[audit.Interaction] = []
            while len(events) < 100_000:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    events.append(item)
            for start in range(0, len(events), BATCH):
                self._store(events[start:start + BATCH])
            return len(events)

    def _store(self, events: list[audit.Interaction]) -> None:
        try:
            with self.repo.transaction(SYSTEM, write=True) as tx:
                about = patients_by_key(tx.conn, {(t, i) for e in events for t, i, _ in e.resources})
                records = []
                for event in events:
                    found = set(event.patients)
                    for t, i, _ in event.resources:
                        found |= about[(t, i)]
                    event.patients = sorted(found)
                    records.append(audit.audit_event(event, event.recorded or now_instant()))
                tx.create_records(records)  # one INSERT per table for the batch
        except Exception:  # the trail must not take the server down; say so loudly
            log.exception("could not store %d audit events", len(events))

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self.backlogged:  # behind: no pause between rounds
                self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if not self._queue.empty():
                self.flush()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()


UNPROVENANCED = frozenset({"Provenance", "AuditEvent"})
