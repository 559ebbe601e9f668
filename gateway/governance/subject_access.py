"""``voicegw export --customer ID``: the subject-access bundle (GDPR art. 15, CCPA "right to know").

One JSON document with what the gateway holds of the customer, found the way erasure finds it
(their customer id and numbers): each conversation's record and event log (as stored: redacted),
the SMS sent to and received from their numbers, who read their conversations (the audit log),
their QA scores, and the webhooks their events went to. Producing it is itself audited.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timezone

from gateway.context.recordings import recordings_of
from typing import Any

from gateway.config import Settings
from gateway.context.audit import AuditLog
from gateway.context.lifecycle import LifecycleStore
from gateway.context.store import record_as_dict
from gateway.governance.side_stores import SMS_FILE

BUNDLE_SCHEMA = "voicegw.subject-access/1"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def _sms(settings: Settings, ids: list[str], numbers: list[str]) -> list[dict[str, Any]]:
    path = settings.data_path(SMS_FILE)
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=5.0)) as conn:
        if "messages" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}:
            return []
        marks_c = ",".join("?" * len(ids)) or "''"
        marks_n = ",".join("?" * len(numbers)) or "''"
        rows = conn.execute(
            "SELECT created_at, direction, to_number, sender, body, conversation_id, transport, status FROM messages"
            f" WHERE conversation_id IN ({marks_c}) OR to_number IN ({marks_n}) OR sender IN ({marks_n}) ORDER BY id",
            (*ids, *numbers, *numbers)).fetchall()
    return [{"at": _iso(r[0]), "direction": r[1], "to": r[2], "from": r[3], "body": r[4], "conversation_id": r[5],
             "transport": r[6], "status": r[7]} for r in rows]


async def subject_access(settings: Settings, store: LifecycleStore, audit: AuditLog, *, customer_id: str,
                         numbers: list[str], actor: str, qa: Any = None) -> dict[str, Any]:
    ids = await store.conversation_ids(customer_id=customer_id, caller_ids=numbers)
    conversations = []
    for cid in ids:
        record = await store.get(cid)  # type: ignore[attr-defined]
        if record is None:
            continue
        events = await store.events(cid)  # type: ignore[attr-defined]
        data = record_as_dict(record)
        data.pop("trust", None)  # hashes of codes and nonces: security state, not the customer's data
        conversations.append({"record": data, "events": [
            {"seq": e.seq, "at": _iso(e.at), "channel": e.channel, "kind": e.kind, "payload": e.payload}
            for e in events]})
    readers = [e.as_json() for e in await audit.entries_of(ids)]  # type: ignore[attr-defined]
    bundle = {
        "schema": BUNDLE_SCHEMA,
        "customer_id": customer_id,
        "numbers": numbers,
        "generated_at": _iso(datetime.now(tz=timezone.utc).timestamp()),
        "conversations": conversations,
        "sms": _sms(settings, ids, numbers),
        "access_log": readers,
        "qa_scores": await qa.scores_of(ids) if qa is not None else [],
        "recordings": [{"file": str(p.relative_to(settings.data_path("."))), "bytes": p.stat().st_size}
                       for p in recordings_of(settings.data_path("."), ids)],
        "recipients": [{"webhook": h.name, "url": h.url} for h in settings.events_out.webhooks],
        "notes": ["The CRM (system of record) holds the customer's account data; ask it for its part.",
                  "Secrets (card numbers, PINs, codes, passwords, dates of birth) were masked before anything "
                  "was stored, so they appear masked here."],
    }
    await audit.write(actor=actor, role="admin", action="subject_access_export",
                      detail={"conversations": len(conversations), "sms": len(bundle["sms"])})
    return bundle
