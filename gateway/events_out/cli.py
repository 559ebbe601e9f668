"""``voicegw events``: where each webhook stands, dead letters, replay from a position.

    voicegw events                                   # each webhook's cursor against the newest event
    voicegw events replay --webhook warehouse --from 1200   # deliver again everything after 1200
    voicegw events replay --webhook warehouse --from start  # ... from the oldest event the feed keeps
    voicegw events dead-letters [--webhook NAME] [--drop ID]
    voicegw events tail [--after POS] [--limit N]   # the feed as consumers get it (JSON lines)

A running ``voicegw serve`` picks a replayed cursor up at its next round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.events_out.schema import envelope


async def _events(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.context import open_store
    from gateway.events_out.deliveries import open_deliveries

    settings = settings_from(args)
    names = {h.name for h in settings.events_out.webhooks}
    store = open_store(settings)
    deliveries = open_deliveries(settings)
    try:
        action = args.action or "status"
        if action in ("replay",) or (action == "dead-letters" and args.webhook):
            if args.webhook not in names:
                print(f"voicegw events: no webhook named {args.webhook!r} (configured: "
                      f"{', '.join(sorted(names)) or 'none'})", file=sys.stderr)
                return 2
        if action == "status":
            head = await store.feed_head()  # type: ignore[attr-defined]
            print(f"newest event position: {head or '(feed empty)'}")
            for hook in settings.events_out.webhooks:
                print(f"{hook.name}: {hook.url} cursor {await deliveries.cursor(hook.name) or '(start)'}"
                      f" dead letters {len(await deliveries.dead_letters(hook.name, 1000))}")
            if not names:
                print("no webhooks configured (events_out.webhooks)")
        elif action == "replay":
            position = "" if args.position in ("start", "") else args.position
            await deliveries.advance(args.webhook, position)
            print(f"{args.webhook}: delivery goes on after {position or 'the start of the feed'}")
        elif action == "dead-letters":
            if args.drop:
                dropped = await deliveries.drop_dead_letter(args.drop)
                print(f"dead letter {args.drop} {'dropped' if dropped else 'not found'}")
                return 0 if dropped else 1
            for letter in await deliveries.dead_letters(args.webhook or "", args.limit):
                print(json.dumps({"id": letter.id, "webhook": letter.webhook, "position": letter.position,
                                  "attempts": letter.attempts, "error": letter.error, "event": letter.event}))
        elif action == "tail":
            for entry in await store.feed(args.after or "", limit=args.limit):  # type: ignore[attr-defined]
                print(json.dumps(envelope(entry.position, entry.event), ensure_ascii=False))
        return 0
    finally:
        await deliveries.close()
        await store.close()


def _cmd_events(args: argparse.Namespace) -> int:
    return asyncio.run(_events(args))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="events out: webhook cursors, dead letters, replay, the feed")
    p.add_argument("action", nargs="?", choices=("status", "replay", "dead-letters", "tail"), default="status")
    p.add_argument("--webhook", help="the webhook's name (events_out.webhooks)")
    p.add_argument("--from", dest="position", default="", help="replay: the position to deliver after ('start')")
    p.add_argument("--drop", help="dead-letters: remove this dead letter")
    p.add_argument("--after", help="tail: the position to read after")
    p.add_argument("--limit", type=int, default=100, help="most entries listed")
    p.set_defaults(func=_cmd_events)
