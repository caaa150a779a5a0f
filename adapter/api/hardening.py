"""Hardening of the HTTP surface: one pure ASGI middleware in front of the whole app.

On every request, before the app sees it (in this order):
- a token bucket per client (the Authorization header's value, else the client IP) -> 429,
  so a flood of bad requests is throttled too;
- methods other than GET/HEAD/POST/PUT/PATCH/DELETE (and OPTIONS for CORS) -> 405;
- too many headers (or too many header bytes) -> 431, too long a URL -> 414, a NUL (%00)
  in the URL -> 400, too many query parameters -> 400;
- CORS preflight (OPTIONS) answered 204 only for a configured origin, else 405.

On every response: security headers (no caching of health data, no sniffing, no framing,
a CSP that only lets the HTML `$report` use inline styles; HSTS over https), CORS headers
for a configured origin, and any error that is not already FHIR (Starlette's 404/405 JSON,
an unhandled exception) becomes an OperationOutcome. No stack trace ever leaves the server.

Everything is precomputed in the constructor; the success path only rewrites the
response-start header list.
"""

from __future__ import annotations

import logging
import math
import time

from ..config import Settings
from ..fhir.errors import FhirError
from . import formats

log = logging.getLogger("adapter.api.hardening")

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS = ("Authorization, Content-Type, Accept, If-Match, If-None-Match, If-Modified-Since, "
                      "If-None-Exist, Prefer, X-Request-Id")
CORS_EXPOSE_HEADERS = "ETag, Location, Content-Location, Last-Modified, Retry-After"
FHIR_MEDIA = (b"application/fhir+json", b"application/fhir+xml")
MAX_BUCKETS = 10_000

_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_CSP_HTML = (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_REPLACED = {b"x-content-type-options", b"cache-control", b"x-frame-options", b"referrer-policy",
             b"content-security-policy", b"strict-transport-security", b"access-control-allow-origin",
             b"access-control-expose-headers", b"access-control-allow-credentials"}
_STATUS_TEXT = {400: "bad request", 404: "not found", 405: "method not allowed", 406: "not acceptable",
                413: "request body too large", 414: "URL too long", 415: "unsupported media type",
                422: "unprocessable request", 429: "too many requests", 431: "request headers too large",
                500: "internal server error; the request was not completed"}
_STATUS_CODE = {404: "not-found", 405: "not-supported", 406: "not-supported", 413: "too-costly",
                414: "too-costly", 415: "not-supported", 429: "throttled", 431: "too-costly",
                500: "exception"}


class TokenBuckets:
    """Per-key token buckets: `rate` tokens a second, at most `burst`; memory is bounded."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.clock = clock
        self.buckets: dict[str, list[float]] = {}

    def take(self, key: str) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._prune(now)
            self.buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, last) in self.buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= MAX_BUCKETS:  # a flood of distinct keys: forget them all rather than grow
            self.buckets.clear()


class HardeningMiddleware:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.max_url = settings.max_url_bytes
        self.max_params = settings.max_query_params
        self.max_headers = settings.max_header_count
        self.max_header_bytes = settings.max_header_bytes
        self.origins = {o.rstrip("/").encode("latin-1") for o in settings.cors_origins}
        self.limiter = (TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
                        if settings.rate_limit_per_second > 0 else None)
        allowed = ", ".join(ALLOWED_METHODS)
        self.allow_header = (b"allow", allowed.encode())
        self.preflight_headers = [
            (b"access-control-allow-methods", allowed.encode()),
            (b"access-control-allow-headers", CORS_ALLOW_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]
        self.cors_headers = [(b"access-control-expose-headers", CORS_EXPOSE_HEADERS.encode())]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = scope["headers"]
        https = scope.get("scheme") == "https"
        origin = None
        if self.origins:
            for k, v in headers:
                if k == b"origin":
                    origin = v if v.rstrip(b"/") in self.origins else None
                    break

        rejected = self._check(scope, method, headers)
        if rejected is not None:
            status, diagnostics, extra = rejected
            await self._send_outcome(send, scope, status, diagnostics, extra, https, origin)
            return
        if method == "OPTIONS":
            if origin is not None and _header(headers, b"access-control-request-method") in ALLOWED_METHODS:
                out = [(b"access-control-allow-origin", origin), *self.preflight_headers,
                       (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 204,
                            "headers": self._secure(out, https, html=False)})
                await send({"type": "http.response.body", "body": b""})
            else:
                await self._send_outcome(send, scope, 405, "HTTP method OPTIONS is only answered as a CORS "
                                         "preflight from an allowed origin", [self.allow_header], https, origin)
            return

        state = {"started": False, "done": False, "replace": None}

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = message.get("headers") or []
                if status >= 400 and not _is_fhir(raw):
                    state["replace"] = (status, [(k, v) for k, v in raw if k.lower() in (b"allow", b"retry-after")])
                    return
                state["started"] = True
                html = status < 300 and _content_type(raw).startswith(b"text/html")
                out = [(k, v) for k, v in raw if k.lower() not in _REPLACED]
                if origin is not None:
                    out.append((b"access-control-allow-origin", origin))
                    out.extend(self.cors_headers)
                    out.append((b"vary", b"Origin"))
                await send({**message, "headers": self._secure(out, https, html)})
                return
            if state["replace"] is not None:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    status, extra = state["replace"]
                    state["replace"] = None
                    state["started"] = True
                    await self._send_outcome(send, scope, status, _STATUS_TEXT.get(status, "request refused"),
                                             extra, https, origin)
                    state["done"] = True
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:  # noqa: BLE001 - a client gets an OperationOutcome, the log gets the traceback
            log.exception("unhandled error on %s %s", method, scope.get("path"))
            if state["started"]:
                if state["done"]:  # the client already has its (OperationOutcome) answer
                    return
                raise  # half a response is out: let the server drop the connection
            await self._send_outcome(send, scope, 500, _STATUS_TEXT[500], [], https, origin)

    def _check(self, scope, method: str, headers) -> tuple[int, str, list] | None:
        if self.limiter is not None:
            key = _header(headers, b"authorization")
            if key is None:
                client = scope.get("client")
                key = client[0] if client else "-"
            else:
                key = "auth:" + key
            wait = self.limiter.take(key)
            if wait > 0:
                return 429, "too many requests; slow down", [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
        if method not in ALLOWED_METHODS and method != "OPTIONS":
            return 405, f"HTTP method {method[:20]} is not supported", [self.allow_header]
        if len(headers) > self.max_headers:
            return 431, f"more than {self.max_headers} request headers", []
        if self.max_header_bytes and sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            return 431, f"request headers larger than {self.max_header_bytes} bytes", []
        query = scope.get("query_string") or b""
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
        if len(raw_path) + len(query) + 1 > self.max_url:
            return 414, f"URL longer than {self.max_url} bytes", []
        if b"%00" in query or b"%00" in raw_path or "\x00" in scope["path"]:
            # never meaningful in FHIR, and PostgreSQL refuses NUL in text (a 500 from the store)
            return 400, "the URL contains a NUL character (%00)", []
        if query and query.count(b"&") >= self.max_params and _count_params(query) > self.max_params:
            return 400, f"more than {self.max_params} query parameters", []
        return None

    def _secure(self, headers: list, https: bool, html: bool) -> list:
        headers.extend(_SECURITY)
        headers.append(_CSP_HTML if html else _CSP)
        if https:
            headers.append(_HSTS)
        return headers

    async def _send_outcome(self, send, scope, status: int, diagnostics: str, extra: list, https: bool,
                            origin: bytes | None) -> None:
        err = FhirError(status, _STATUS_CODE.get(status, "invalid" if status < 500 else "exception"), diagnostics)
        fmt = "json"
        try:
            accept = _header(scope["headers"], b"accept")
            if accept and "xml" in accept:
                fmt = formats.response_format(None, accept)
            body = formats.render(err.outcome(), fmt, False)
        except Exception:  # noqa: BLE001 - never fail while reporting a failure
            fmt, body = "json", formats.render(err.outcome(), "json", False)
        media = formats.XML_CONTENT_TYPE if fmt == "xml" else formats.JSON_CONTENT_TYPE
        out = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode()), *extra]
        if origin is not None:
            out.append((b"access-control-allow-origin", origin))
            out.extend(self.cors_headers)
            out.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": status, "headers": self._secure(out, https, False)})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _header(headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def _content_type(headers) -> bytes:
    for k, v in headers:
        if k.lower() == b"content-type":
            return v.lower()
    return b""


def _is_fhir(headers) -> bool:
    return _content_type(headers).startswith(FHIR_MEDIA)


def _count_params(query: bytes) -> int:
    return sum(1 for part in query.split(b"&") if part)


def install_hardening(app, settings: Settings) -> None:
    """Put the middleware in front of everything (inside Starlette's last-resort error handler)."""
    app.add_middleware(HardeningMiddleware, settings=settings)
