"""The audit trail and write provenance, applied to every interaction by the router.

Writes: an AuditEvent and a Provenance are stored in the transaction of the write itself, so
a write and its record commit (or fail) together.

Reads, searches and refused requests happen many times more often, and storing each one's
AuditEvent as a resource (current and version rows, a dozen index rows) cost as much CPU as
the read itself. So their events go a cheaper way, in two steps:

1. recorded: the event is queued, and a background thread appends the queued events' AuditEvent
   JSON to the audit journal (a table, one row per event; one transaction per batch, at most
   `FLUSH_SECONDS` later). From then on the record is durable.
2. made a resource: journal rows become AuditEvent resources, the journal row deleted in the
   same transaction, when the server process has been idle for `IDLE_SECONDS` and the machine
   is not busy (`MACHINE_BUSY`: another server process may be serving requests), and before
   anything that may return AuditEvents is answered (`flush`: a search or read of AuditEvents,
   a system-level search or history, a `_revinclude` of them, a bulk export of them). At
   shutdown the queue is journalled and the journal left for the next start. Under a long peak
   the journal grows and is worked off when the peak ends (docs/performance.md measures how fast).

Back-pressure: when requests come faster than the writer thread records their events, the
queue must not grow without end (memory, and events lost on a crash). Above `queue_limit`
queued events a response waits (`wait_for_room`, awaited by the HTTP layer, so the event loop
goes on serving) until the writer has brought the queue back under the mark. Only past ten times
the limit (callers that do not wait) does the request that finds the queue full record the
events itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import delete, select

from ..fhir import jsonio
from ..security import audit
from ..security.caller import SYSTEM
from ..store.access_sql import patients_by_key, patients_of_keys
from ..store.repository import Repository, Transaction, format_instant
from ..store.statements import insert_rows
from ..store.tables import audit_journal_table

log = logging.getLogger("lac_adapter.audit")
J = audit_journal_table
FLUSH_SECONDS = 0.05  # small batches: the writer holds the interpreter lock for short spells
IDLE_SECONDS = 0.5    # no request for this long: the process turns journal rows into resources
BATCH = 500
IDLE_BATCH = 50       # journal rows per transaction in idle time (~20 ms: a request arriving waits little)
MACHINE_BUSY = 0.5    # ... and only while the machine's cores are less busy than this
QUEUE_LIMIT = 5000    # default of config [audit] queue_limit: above it, responses wait (wait_for_room)
HARD_LIMIT_FACTOR = 10  # above limit x this, the request records the queue itself
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
        self._last_request = 0.0        # time.monotonic() of the latest request (touch)
        self._journal_pending = True    # journal rows may be waiting (a previous run's, too)
        self._machine = MachineLoad()

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

    # -- queued, then journalled -----------------------------------------------------------
    def touch(self) -> None:
        """A request has arrived: the process is not idle."""
        self._last_request = time.monotonic()
        if self._thread is None or not self._thread.is_alive():
            self._ensure_thread()  # (also works off a journal left by a previous run)

    def record_later(self, event: audit.Interaction) -> None:
        event.recorded = event.recorded or now_instant()
        self._queue.put(event)
        queued = self._queue.qsize()
        if queued > self.queue_limit:
            self._wake.set()
            if queued > self.queue_limit * HARD_LIMIT_FACTOR:
                self._journal_queued()  # last resort: the queue may not grow without end
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
        """Make every recorded event an AuditEvent resource now (before AuditEvents are read);
        returns how many were still queued."""
        queued = self._journal_queued()
        self.materialise()
        return queued

    def _journal_queued(self) -> int:
        """Append every queued event to the journal; returns how many."""
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
                self._journal(events[start:start + BATCH])
            return len(events)

    def _journal(self, events: list[audit.Interaction]) -> None:
        try:
            with self.repo.transaction(SYSTEM, write=True) as tx:
                about = patients_by_key(tx.conn, {(t, i) for e in events for t, i, _ in e.resources})
                rows = []
                for event in events:
                    found = set(event.patients)
                    for t, i, _ in event.resources:
                        found |= about[(t, i)]
                    event.patients = sorted(found)
                    rows.append({"content": jsonio.dumps(audit.audit_event(event, event.recorded or now_instant()))})
                insert_rows(tx.conn, J, rows)
            self._journal_pending = True
        except Exception:  # the trail must not take the server down; say so loudly
            log.exception("could not record %d audit events", len(events))

    # -- journal rows become AuditEvent resources --------------------------------------------
    def materialise(self, batches: int | None = None, size: int = BATCH) -> int:
        """Store journal rows as AuditEvent resources, `size` per transaction, oldest first,
        until the journal is empty (or `batches` are done); returns how many."""
        done = 0
        while batches is None or batches > 0:
            stored = self._materialise_batch(size)
            done += stored
            if stored == 0:
                self._journal_pending = False
                break
            if batches is not None:
                batches -= 1
        return done

    def _materialise_batch(self, size: int) -> int:
        try:
            with self.repo.transaction(SYSTEM, write=True) as tx:
                claim = select(J.c.seq, J.c.content).order_by(J.c.seq).limit(size)
                if tx.conn.dialect.name == "postgresql":  # another process takes other rows meanwhile
                    claim = claim.with_for_update(skip_locked=True)
                rows = tx.conn.execute(claim).all()
                if not rows:
                    return 0
                tx.create_records([jsonio.loads_stored(r.content) for r in rows])
                tx.conn.execute(delete(J).where(J.c.seq.in_([r.seq for r in rows])))
                return len(rows)
        except Exception:
            log.exception("could not store audit journal rows as AuditEvents")
            return 0

    # -- the writer thread -------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _idle(self) -> bool:
        """No request in this process for `IDLE_SECONDS`, and the machine's cores not busy with
        other work (another server process's requests): background work must not slow them."""
        if time.monotonic() - self._last_request < IDLE_SECONDS:
            return False
        return self._machine.busy() < MACHINE_BUSY

    def _run(self) -> None:
        while not self._stopping.is_set():
            idle = self._journal_pending and self._idle()
            if not self.backlogged and not idle:  # else: no pause
                self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if not self._queue.empty():
                self._journal_queued()
            if idle and not self._stopping.is_set():
                self.materialise(batches=1, size=IDLE_BATCH)

    def close(self) -> None:
        """Record what is still queued; the journal's rows wait for the next start (they are
        durable, and making a long peak's worth of them resources would hold up the shutdown)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._journal_queued()


UNPROVENANCED = frozenset({"Provenance", "AuditEvent"})


class MachineLoad:
    """How busy the machine's cores were with work other than this process's, over the last
    quarter of a second or more (Linux /proc/stat; elsewhere always 0, and only the process's
    own idleness counts)."""

    WINDOW = 0.25  # seconds: /proc/stat counts in hundredths of a second

    def __init__(self) -> None:
        self._last = self._read()
        self._busy = 0.0

    @staticmethod
    def _read() -> tuple[float, int, int, float] | None:
        """(monotonic time, all ticks, idle ticks, this process's CPU seconds)."""
        try:
            with open("/proc/stat", "rb") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return time.monotonic(), sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0), time.process_time()

    def busy(self) -> float:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.WINDOW:
            return self._busy
        now = self._read()
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            self._busy = 0.0
            return 0.0
        ticks = now[1] - last[1]
        own = (now[3] - last[3]) * os.sysconf("SC_CLK_TCK")
        self._busy = max(0.0, (ticks - (now[2] - last[2]) - own) / ticks)
        return self._busy
