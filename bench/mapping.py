"""Documents mapped per second: form XML, LA notifications, SSDA903 (in process), and
end-to-end imports per second over HTTP into a real server (SQLite).

Run by hand from the repository root: `PYTHONPATH=. python bench/mapping.py [--seconds S]`;
prints markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from adapter.mapping.forms import map_form
from adapter.mapping.la_notification import map_notification
from adapter.mapping.ssda903 import map_903

ROOT = Path(__file__).resolve().parents[1]


def nhs_number(serial: int) -> str:
    while True:
        stem = f"999{serial:06d}"
        check = 11 - sum(int(d) * w for d, w in zip(stem, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return stem + str(check)
        serial += 1


def fresh_form() -> bytes:
    raw = (ROOT / "fixtures/forms-xml/iha-c.xml").read_text()
    number = raw.split('nhsNumber="', 1)[1].split('"', 1)[0]
    doc = raw.split('documentId="', 1)[1].split('"', 1)[0]
    return raw.replace(doc, f"B-{uuid.uuid4().hex}").replace(number, nhs_number(random.randrange(999999))).encode()


def fresh_notification() -> bytes:
    raw = (ROOT / "fixtures/la-notifications/entered-care.xml").read_text()
    number = raw.split("<NhsNumber>", 1)[1].split("<", 1)[0]
    child = raw.split("<LaChildId>", 1)[1].split("<", 1)[0]
    message = raw.split("<MessageId>", 1)[1].split("<", 1)[0]
    return (raw.replace(number, nhs_number(random.randrange(999999))).replace(child, f"B-{uuid.uuid4().hex[:10]}")
            .replace(message, f"B-{uuid.uuid4().hex[:12]}")).encode()


def rate(fn, seconds: float) -> tuple[float, float]:
    """Calls per second and median milliseconds per call over `seconds`."""
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return len(samples) / sum(samples), statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    form, notification = fresh_form(), fresh_notification()
    tables = {n: (ROOT / "fixtures/ssda903" / n).read_bytes() for n in ("header.csv", "episodes.csv", "oc2.csv")}
    rows = [("BAAF-style IHA-C form XML → FHIR (mapping only)", *rate(lambda: map_form(form), args.seconds)),
            ("LA notification (entered care) → FHIR (mapping only)", *rate(lambda: map_notification(notification),
                                                                           args.seconds)),
            ("SSDA903 CSV, 5 children (mapping only)", *rate(lambda: map_903(tables), args.seconds))]

    from tests.support.auth import ADMIN_HEADERS
    from tests.support.server import running_server

    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/bench.sqlite3") as base:
        session = requests.Session()
        session.headers.update(ADMIN_HEADERS)  # the test administrator (running_server's dev tokens)
        xml = {"Content-Type": "application/xml"}

        def post_notification() -> None:
            assert session.post(f"{base}/$la-notification", data=fresh_notification(), headers=xml).status_code == 201

        rows.append(("LA notification imported over HTTP (map, validate, store, Provenance)",
                     *rate(post_notification, args.seconds)))
    print("| what | documents/s | median ms |\n|---|---|---|")
    for label, per_second, median in rows:
        print(f"| {label} | {per_second:.0f} | {median:.1f} |")


if __name__ == "__main__":
    main()
