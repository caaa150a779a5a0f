"""The outbox: messages to partners, written with the change that caused them.

`enqueue` runs inside the caller's store transaction, so a message exists exactly when
its cause was committed. Workers `claim` due messages under a lease (PostgreSQL: SKIP
LOCKED; SQLite: the write lock), deliver them outside any transaction, and record the
outcome; a crashed worker's lease expires and the message is delivered again, with the
same X-Request-Id, so the receiver can drop the duplicate.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from ..store.tables import outbox_table as O
from .partners import DeliveryRules

PENDING, DELIVERING, DELIVERED, DEAD, CANCELLED = "pending", "delivering", "delivered", "dead", "cancelled"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class Message:
    id: int
    message_id: str
    correlation_id: str
    destination: str
    method: str
    path: str
    content_type: str
    body: bytes | None
    kind: str
    patient: str | None
    status: str
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    created: datetime | None = None
    delivered_at: datetime | None = None


def enqueue(conn: Connection, *, destination: str, method: str, path: str, body: bytes | None,
            content_type: str, kind: str, patient: str | None = None, correlation_id: str | None = None) -> str:
    """Add a message in the caller's transaction; returns its message id (X-Request-Id)."""
    message_id = str(uuid.uuid4())
    now = utcnow()
    conn.execute(insert(O).values(
        message_id=message_id, correlation_id=correlation_id or message_id, destination=destination,
        method=method, path=path, content_type=content_type, body=body, kind=kind, patient=patient,
        status=PENDING, attempts=0, created=now, next_attempt_at=now))
    return message_id


def cancel_for_patient(conn: Connection, patient: str, kinds: tuple[str, ...] | None = None) -> int:
    """Stop undelivered messages about a patient (e.g. consent withdrawn); returns how many."""
    stmt = update(O).where(O.c.patient == patient, O.c.status.in_((PENDING, DELIVERING)))
    if kinds:
        stmt = stmt.where(O.c.kind.in_(kinds))
    return conn.execute(stmt.values(status=CANCELLED, last_error="cancelled: consent no longer covers it")).rowcount


def claim(engine: Engine, worker: str, rules: DeliveryRules, limit: int = 10) -> list[Message]:
    """Take up to `limit` due messages for `worker`, under a lease."""
    now = utcnow()
    due = or_(and_(O.c.status == PENDING, O.c.next_attempt_at <= now),
              and_(O.c.status == DELIVERING, O.c.claimed_until < now))
    with engine.connect() as conn:  # most polls find nothing: no write lock for those
        if conn.execute(select(O.c.id).where(due).limit(1)).first() is None:
            return []
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        stmt = select(O.c.id).where(due).order_by(O.c.id).limit(limit)
        if engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        ids = [row.id for row in conn.execute(stmt)]
        if not ids:
            return []
        lease = now + timedelta(seconds=rules.lease_seconds)
        conn.execute(update(O).where(O.c.id.in_(ids), due).values(
            status=DELIVERING, claimed_by=worker, claimed_until=lease))
        rows = conn.execute(select(O).where(O.c.id.in_(ids), O.c.claimed_by == worker,
                                            O.c.status == DELIVERING).order_by(O.c.id)).all()
    return [_message(r) for r in rows]


def record(engine: Engine, message: Message, worker: str, rules: DeliveryRules, *, delivered: bool,
           status: int | None, error: str | None, retryable: bool) -> str:
    """Store a delivery attempt's outcome; returns the message's new status."""
    attempts = message.attempts + 1
    now = utcnow()
    if delivered:
        new_status, next_at = DELIVERED, now
    elif not retryable or attempts >= rules.max_attempts:
        new_status, next_at = DEAD, now
    else:
        new_status, next_at = PENDING, now + timedelta(seconds=backoff(attempts, rules))
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        conn.execute(update(O).where(O.c.id == message.id, O.c.claimed_by == worker,
                                     O.c.status == DELIVERING).values(
            status=new_status, attempts=attempts, next_attempt_at=next_at, claimed_by=None, claimed_until=None,
            last_status=status, last_error=(error or "")[:2000] or None,
            delivered_at=now if delivered else None))
    return new_status


def backoff(attempts: int, rules: DeliveryRules) -> float:
    """Exponential backoff with jitter: base·2^(n−1), capped, times 0.5–1.5."""
    delay = min(rules.max_seconds, rules.base_seconds * (2 ** (attempts - 1)))
    return delay * random.uniform(0.5, 1.5)


def messages(conn: Connection, status: str | None = None, limit: int = 100) -> list[Message]:
    stmt = select(O).order_by(O.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(O.c.status == status)
    return [_message(r) for r in conn.execute(stmt)]


def retry(conn: Connection, ids: list[int] | None = None) -> int:
    """Make dead (or the given) messages due again now, attempts reset."""
    stmt = update(O).where(O.c.status == DEAD) if ids is None else update(O).where(O.c.id.in_(ids))
    return conn.execute(stmt.values(status=PENDING, attempts=0, next_attempt_at=utcnow(),
                                    claimed_by=None, claimed_until=None)).rowcount


def replay(conn: Connection, message_id_or_id: str) -> str:
    """Send a delivered message again as a new message (new X-Request-Id, same correlation)."""
    cond = O.c.message_id == message_id_or_id
    if message_id_or_id.isdigit():
        cond = or_(cond, O.c.id == int(message_id_or_id))
    row = conn.execute(select(O).where(cond)).first()
    if row is None:
        raise KeyError(message_id_or_id)
    return enqueue(conn, destination=row.destination, method=row.method, path=row.path, body=row.body,
                   content_type=row.content_type, kind=row.kind, patient=row.patient,
                   correlation_id=row.correlation_id)


def counts(conn: Connection) -> dict[str, int]:
    return {status: n for status, n in conn.execute(select(O.c.status, func.count()).group_by(O.c.status))}


def _message(row) -> Message:
    return Message(id=row.id, message_id=row.message_id, correlation_id=row.correlation_id,
                   destination=row.destination, method=row.method, path=row.path,
                   content_type=row.content_type, body=row.body, kind=row.kind, patient=row.patient,
                   status=row.status, attempts=row.attempts, last_status=row.last_status,
                   last_error=row.last_error, created=row.created, delivered_at=row.delivered_at)
