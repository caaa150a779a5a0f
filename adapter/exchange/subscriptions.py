"""FHIR R4 Subscriptions (channel type rest-hook), delivered through the outbox.

Two router interceptors, registered by `install`:

- `check_subscription` (before a Subscription is written) refuses, with 422 naming the
  element, what this server cannot honour: a channel other than `rest-hook`, an endpoint
  that is not http(s), a payload other than FHIR JSON, malformed `channel.header`
  entries, and criteria that are not `Type?params` over a served type with parameters
  this server knows (parsed strictly; `Type` or `Type?` alone means every change of that
  type). A `requested` Subscription is stored as `active`.
- `notify_subscribers` (after every create/update/patch of any other type, in the same
  transaction) enqueues one outbox message per active Subscription whose criteria match
  the new content of the resource (a Subscription whose `end` has passed is skipped). As
  R4 says, the criteria are applied to the new value of the resource, so a delete, or an
  update that stops matching, notifies nobody.

What is sent follows R4 (subscription.html, channel type "rest-hook"):

- no `channel.payload`: `POST [endpoint]` with no body (the receiver is told only that
  something it subscribed to changed, and searches for it itself);
- `channel.payload` = `application/fhir+json` or `application/json`: `PUT
  [endpoint]/[type]/[id]` with the resource (the bytes stored) as the body, in that
  mime type.

Messages have destination `url:subscription/<id>` and the absolute URL as their path;
`DeliveryWorker._send` sends them there, adding the Subscription's `channel.header`
entries, read from the store at delivery time (`delivery_headers`), so credentials are
never copied into the outbox. A message whose Subscription was deleted or is no longer
active by the time it is delivered is not sent (dead-lettered, not retried).
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..fhir import jsonio
from ..fhir.errors import FhirError
from ..fhir.search_query import RESULT_PARAMS
from ..security.caller import SYSTEM
from ..store.tables import resource_table as R
from . import outbox

KIND = "subscription-notification"
DESTINATION_PREFIX = "url:subscription/"
PAYLOADS = ("application/fhir+json", "application/json")
MEMO_KEY = "subscriptions"
RESERVED_HEADERS = {"content-type", "content-length", "host", "x-request-id", "x-correlation-id", "accept"}


def install(router) -> None:
    """Register both interceptors on a FhirRouter."""
    router.before_write.append(check_subscription)
    router.on_write.append(notify_subscribers)


# -- before a Subscription is written ----------------------------------------------------
def check_subscription(router, tx, rtype: str, current, resource: dict) -> None:
    if rtype != "Subscription":
        return
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook":
        _refuse(f"channel type '{channel.get('type')}' is not supported; this server delivers only "
                "'rest-hook' Subscriptions", "Subscription.channel.type")
    endpoint = channel.get("endpoint")
    if not _is_http_url(endpoint):
        _refuse(f"a rest-hook Subscription needs an absolute http or https channel.endpoint, not {endpoint!r}",
                "Subscription.channel.endpoint")
    payload = channel.get("payload")
    if payload is not None and payload not in PAYLOADS:
        _refuse(f"channel.payload '{payload}' is not supported; use {' or '.join(PAYLOADS)}, or leave it "
                "out for notifications without a body", "Subscription.channel.payload")
    for entry in channel.get("header") or []:
        if _header(entry) is None:
            _refuse(f"channel.header '{entry}' must be 'Name: value' and may not set "
                    f"{', '.join(sorted(RESERVED_HEADERS))}", "Subscription.channel.header")
    parse_criteria(router, resource.get("criteria"))
    if resource.get("status") == "requested":
        resource["status"] = "active"


def parse_criteria(router, criteria) -> tuple[str, str]:
    """`Type?params` as (Type, params), checked strictly; a 422 on Subscription.criteria otherwise."""
    if not isinstance(criteria, str) or not criteria.strip():
        _refuse("Subscription.criteria is required, as Type?params", "Subscription.criteria")
    rtype, _, params = criteria.strip().partition("?")
    if rtype not in router.types or rtype == "Subscription":
        _refuse(f"criteria '{criteria}': '{rtype}' is not a resource type this server serves "
                "(Subscriptions on Subscription are not supported)", "Subscription.criteria")
    if params:
        for name, _value in parse_qsl(params, keep_blank_values=True):
            if name.split(":", 1)[0] in RESULT_PARAMS:
                _refuse(f"criteria '{criteria}': '{name}' shapes results and cannot select resources",
                        "Subscription.criteria")
        try:
            router.criteria(rtype, params)
        except FhirError as err:
            _refuse(f"criteria '{criteria}' are not a valid search: {err.diagnostics}", "Subscription.criteria")
    return rtype, params


# -- after any other resource is written --------------------------------------------------
def notify_subscribers(router, tx, stored, resource: dict, base: str) -> None:
    if stored.res_type == "Subscription":
        tx.memo.pop(MEMO_KEY, None)  # the active set may have changed in this transaction
        return
    for sub in _active(router, tx).get(stored.res_type, ()):
        if not _matches(router, _subscriber(router, tx, sub["id"]), stored, sub["params"]):
            continue
        if sub["payload"]:
            method, path = "PUT", f"{sub['endpoint'].rstrip('/')}/{stored.res_type}/{stored.res_id}"
            body, content_type = stored.content, sub["payload"]
        else:
            method, path, body, content_type = "POST", sub["endpoint"], None, "application/fhir+json"
        outbox.enqueue(tx.conn, destination=f"{DESTINATION_PREFIX}{sub['id']}", method=method, path=path,
                       body=body, content_type=content_type, kind=KIND,
                       patient=_patient(stored.res_type, stored.res_id, resource), correlation_id=sub["id"])


def _active(router, tx) -> dict[str, list[dict]]:
    """Active rest-hook Subscriptions by the type their criteria watch (once per transaction)."""
    if MEMO_KEY in tx.memo:
        return tx.memo[MEMO_KEY]
    query = router.parser.parse("Subscription", [("status", "active"), ("type", "rest-hook")], strict=True)
    by_type: dict[str, list[dict]] = {}
    for found in tx.as_caller(SYSTEM).find(query, limit=10_000):
        sub = found.resource()
        channel = sub.get("channel") or {}
        criteria = (sub.get("criteria") or "").strip()
        rtype, _, params = criteria.partition("?")
        if not rtype or not _is_http_url(channel.get("endpoint")) or _ended(sub.get("end")):
            continue
        by_type.setdefault(rtype, []).append({"id": found.res_id, "params": params, "endpoint": channel["endpoint"],
                                              "payload": channel.get("payload")})
    tx.memo[MEMO_KEY] = by_type
    return by_type


def _subscriber(router, tx, subscription_id: str):
    """The writing transaction as the Subscription's owner sees it: a notification goes out
    only for what its owner may read (organisation scoping and consent)."""
    from ..security.access import organisation_caller
    from .ooa import partner_registry

    owners = tx.authors("Subscription", subscription_id)
    if not owners:
        return tx.as_caller(SYSTEM)  # written by the server itself (configuration)
    return tx.as_caller(organisation_caller(owners[0], partner_registry(router),
                                            client_id=f"subscription/{subscription_id}"))


def _matches(router, tx, stored, params: str) -> bool:
    """Run the criteria restricted to the written resource, in the writing transaction, as
    the subscriber."""
    restricted = f"{params}&_id={stored.res_id}" if params else f"_id={stored.res_id}"
    try:
        return bool(tx.find(router.criteria(stored.res_type, restricted), 1))
    except FhirError:
        return False  # criteria stored before a parameter stopped being supported: match nothing


def _patient(rtype: str, rid: str, resource: dict) -> str | None:
    if rtype == "Patient":
        return f"Patient/{rid}"
    for element in ("patient", "subject", "for", "beneficiary"):
        value = resource.get(element)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and "Patient/" in reference:
            return reference[reference.index("Patient/"):]
    return None


# -- at delivery time ---------------------------------------------------------------------
def delivery_headers(engine: Engine, destination: str) -> dict[str, str] | None:
    """The `channel.header` entries of the Subscription behind a `url:subscription/<id>`
    destination, or None when that Subscription is gone or no longer active."""
    sub_id = destination[len(DESTINATION_PREFIX):]
    with engine.connect() as conn:
        row = conn.execute(select(R.c.content, R.c.deleted).where(
            R.c.res_type == "Subscription", R.c.res_id == sub_id)).first()
    if row is None or row.deleted or row.content is None:
        return None
    sub = jsonio.loads(row.content)
    if sub.get("status") != "active":
        return None
    headers = {}
    for entry in (sub.get("channel") or {}).get("header") or []:
        parsed = _header(entry)
        if parsed is not None:
            headers[parsed[0]] = parsed[1]
    return headers


def _header(entry) -> tuple[str, str] | None:
    if not isinstance(entry, str) or ":" not in entry:
        return None
    name, _, value = entry.partition(":")
    name, value = name.strip(), value.strip()
    if not name or any(c in name for c in " \t\r\n") or "\r" in value or "\n" in value:
        return None
    if name.lower() in RESERVED_HEADERS:
        return None
    return name, value


def _ended(end) -> bool:
    """Subscription.end is in the past (an unreadable end is treated as not ended)."""
    if not isinstance(end, str):
        return False
    try:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment <= datetime.now(timezone.utc)


def _is_http_url(value) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _refuse(diagnostics: str, element: str):
    raise FhirError(422, "business-rule", diagnostics, [element])
