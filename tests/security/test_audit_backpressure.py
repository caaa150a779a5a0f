"""The audit trail under a flood of reads: no read goes unrecorded, and the queue of events
waiting to be stored stays bounded because responses wait for the writer (config [audit]
queue_limit), not because one request stores the whole queue while the server stands still."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.server import running_server

LIMIT = 5
CLIENTS = 4
READS = 600


def stored_read_events(db_path) -> int:
    """Read AuditEvents stored so far, counted in the database itself (a search of AuditEvents
    through the API would first store whatever is queued)."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT count(*) FROM idx_token WHERE res_type = 'AuditEvent' "
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
