"""The event schema every consumer reads (webhooks and the Redis Stream), and webhook signatures.

Sans-IO. :func:`envelope` turns one logged event into the versioned JSON object documented in
``docs/events.md`` (JSON Schema: ``docs/events.schema.json``); :func:`sign` and :func:`verify`
are the HMAC-SHA256 signature a webhook receiver checks::

    X-Voicegw-Signature: t=<unix seconds>,v1=<hex hmac_sha256(secret, "<t>.<body>")>

A receiver recomputes the MAC over the raw body, compares in constant time, and refuses a
timestamp older than it tolerates (five minutes is usual) so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from gateway.context.store import LoggedEvent

SCHEMA = "voicegw.event/1"
"""Bumped when a field changes meaning or goes away; new optional fields keep the version."""

SIGNATURE_HEADER = "X-Voicegw-Signature"
EVENT_ID_HEADER = "X-Voicegw-Event-Id"
POSITION_HEADER = "X-Voicegw-Position"
DEFAULT_TOLERANCE_SECONDS = 300.0

SOURCES = {"bot": "bot", "system": "system", "agent": "agent"}


def source_of(channel: str) -> str:
    """Who an event comes from: ``bot`` (the core's actions), ``system`` (its notes), ``agent``,
    else ``customer``."""
    return SOURCES.get(channel, "customer")


def envelope(position: str, event: LoggedEvent) -> dict[str, Any]:
    """One event as consumers receive it."""
    at = datetime.fromtimestamp(event.at, tz=timezone.utc)
    return {
        "schema": SCHEMA,
        "id": f"{event.conversation_id}:{event.seq}",
        "position": position,
        "conversation_id": event.conversation_id,
        "seq": event.seq,
        "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "channel": event.channel,
        "source": source_of(event.channel),
        "kind": event.kind,
        "payload": event.payload,
    }


def body_of(data: dict[str, Any]) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: float, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` sent at ``timestamp``."""
    t = int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float,
           tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """What a receiver does: the signature matches ``body`` and is not older than the tolerance."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - t) > tolerance_seconds:
        return False
    return hmac.compare_digest(fields.get("v1", ""), _mac(secret, t, body))
