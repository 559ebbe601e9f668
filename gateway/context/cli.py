"""``voicegw conversations``: look into the context store from the command line.

    voicegw conversations                 the most recently updated conversations
    voicegw conversations show ID         one conversation: record and (redacted) event log
    voicegw conversations find --customer C001 [--caller +1555...] [--minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any, TextIO

from gateway.config import Settings
from gateway.context.store import ContextStore, ConversationRecord, StoreError


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _line(record: ConversationRecord) -> str:
    who = record.customer_id or record.caller_id or "-"
    where = f"{record.journey}/{record.step}" if record.journey else "-"
    return (f"{record.id}  {_when(record.updated_at)}  {record.status:<11} {who:<14} "
            f"{','.join(record.channels) or '-':<14} {where}")


async def _run(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from gateway.context import open_store

    store: ContextStore = open_store(settings)
    try:
        action = getattr(args, "conversations_action", None) or "recent"
        if action == "recent":
            records = await store.recent(limit=args.limit)
            if not records:
                print("no conversations yet", file=out)
            for record in records:
                print(_line(record), file=out)
            return 0
        if action == "find":
            record = await store.find_recent(customer_id=args.customer, caller_id=args.caller,
                                             within_seconds=args.minutes * 60)
            if record is None:
                print("no resumable conversation in that window", file=out)
                return 1
            print(_line(record), file=out)
            return 0
        record = await store.get(args.id)
        if record is None:
            print(f"no conversation {args.id}", file=out)
            return 1
        print(json.dumps(record.__dict__, indent=2, default=str), file=out)
        for event in await store.events(record.id, limit=args.limit):
            payload: Any = json.dumps(event.payload, ensure_ascii=False)
            print(f"{event.seq:>5}  {_when(event.at)}  {event.channel:<8} {event.kind:<16} {payload}", file=out)
        return 0
    finally:
        await store.close()


def _main(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    try:
        return asyncio.run(_run(settings_from(args), args, sys.stdout))
    except StoreError as exc:
        print(f"voicegw: {exc}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``voicegw conversations``."""
    parser = subparsers.add_parser("conversations", help="list and inspect conversations in the context store")
    parser.add_argument("--limit", type=int, default=20, help="how many conversations (or log entries) to show")
    parser.set_defaults(func=_main)
    sub = parser.add_subparsers(dest="conversations_action", metavar="ACTION")
    show = sub.add_parser("show", help="one conversation's record and redacted event log")
    show.add_argument("id")
    show.add_argument("--limit", type=int, default=None, help="only the latest N log entries")
    find = sub.add_parser("find", help="the conversation a customer would resume")
    find.add_argument("--customer", default="")
    find.add_argument("--caller", default="")
    find.add_argument("--minutes", type=float, default=60.0)
