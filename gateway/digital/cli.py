"""``voicegw outbox``: list the SMS in the local outbox (what the gateway sent without Twilio)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from gateway.digital.outbox import OUTBOX_FILE, Outbox


def _cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    settings = settings_from(args)
    path = settings.data_path(OUTBOX_FILE)
    if not path.exists():
        print(f"no outbox yet at {path}: no SMS was sent or received")
        return 0
    outbox = Outbox(path)
    try:
        messages = outbox.messages(to=args.to, limit=args.limit)
    finally:
        outbox.close()
    if args.json:
        print(json.dumps([m.__dict__ for m in messages], indent=2))
        return 0
    if not messages:
        print("the outbox is empty")
    for m in reversed(messages):
        at = datetime.fromtimestamp(m.created_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        number = m.to if m.direction == "out" else m.sender
        arrow = "->" if m.direction == "out" else "<-"
        print(f"{at} {arrow} {number} [{m.transport}/{m.status}] {m.body}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``voicegw outbox``."""
    p = sub.add_parser("outbox", help="show SMS stored in the local outbox (and sent through Twilio)")
    p.add_argument("--to", default="", help="only messages to or from this number")
    p.add_argument("--limit", type=int, default=50, help="how many of the newest messages (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_outbox)
