"""The audit trail under a flood of reads: no read goes unrecorded, and the queue of events
waiting to be recorded stays bounded because responses wait for the writer (config [audit]
queue_limit), not because one request records the whole queue while the server stands still.
Every recorded read is an AuditEvent by the time AuditEvents are searched."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.server import running_server

LIMIT = 5
CLIENTS = 4
READS = 600


def stored_read_events(db_path) -> int:
    """Read events recorded so far, in the audit journal or already AuditEvent resources, counted
    in the database itself (a search of AuditEvents through the API would first store whatever
    is queued)."""
    with sqlite3.connect(db_path) as db:
        journal = db.execute("SELECT count(*) FROM audit_journal").fetchone()[0]
        return journal + db.execute("SELECT count(*) FROM idx_token WHERE res_type = 'AuditEvent' "
                                    "AND param = 'subtype' AND code = 'read'").fetchone()[0]


def test_a_flood_of_reads_is_all_audited_with_a_bounded_queue(tmp_path):
    db_path = tmp_path / "adapter.sqlite3"
    with running_server(f"sqlite:///{db_path}", audit_queue_limit=LIMIT) as base:
        session = requests.Session()
        made = session.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "unknown"},
                            headers=ADMIN_HEADERS)
        assert made.status_code == 201, made.text
        url = f"{base}/Patient/{made.json()['id']}"

        def read(_: int) -> int:
            return requests.get(url, headers=ADMIN_HEADERS, timeout=30).status_code

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(read, range(READS)))
        assert statuses == [200] * READS
        # when the last response has come back, at most the limit and the reads in flight with it
        # are still queued, and as many again in the batch the writer is storing
        assert stored_read_events(db_path) >= READS - 2 * (LIMIT + CLIENTS)
        found = session.get(f"{base}/AuditEvent", params={"entity": url.split("/fhir/")[1], "subtype": "read",
                                                          "_summary": "count"}, headers=ADMIN_HEADERS)
        assert found.json()["total"] == READS


def test_recorded_reads_become_audit_events_once_the_server_is_idle(tmp_path):
    """Reads are first recorded in the audit journal; with no request for a moment, the server
    stores them as AuditEvent resources by itself (nobody has to search for them first)."""
    db_path = tmp_path / "adapter.sqlite3"
    with running_server(f"sqlite:///{db_path}") as base:
        made = requests.post(f"{base}/Patient", json={"resourceType": "Patient"}, headers=ADMIN_HEADERS)
        url = f"{base}/Patient/{made.json()['id']}"
        assert all(requests.get(url, headers=ADMIN_HEADERS).status_code == 200 for _ in range(30))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sqlite3.connect(db_path) as db:
                journal = db.execute("SELECT count(*) FROM audit_journal").fetchone()[0]
            if journal == 0 and stored_read_events(db_path) == 30:
                break
            time.sleep(0.2)
        assert (journal, stored_read_events(db_path)) == (0, 30)
