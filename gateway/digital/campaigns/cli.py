"""``voicegw campaign`` and ``voicegw dnc``: campaigns and the do-not-call list from the shell.

They act on the data directory's files (``campaigns.db``; the do-not-call list in ``dnc.db`` or
the shared Redis), like ``voicegw agents`` on the accounts file: whoever runs them can read
those files, so they act as an admin, and every change is written to the audit log as
``cli:<user>``. A running ``voicegw serve`` on the same data directory picks the changes up at
its next tick. With the Redis backend, run them on the node that runs the campaigns.

    voicegw campaign create spring-checkups --journey appointment --rate 20 --concurrency 4 --tz Europe/Paris
    voicegw campaign import spring-checkups contacts.csv
    voicegw campaign start spring-checkups
    voicegw campaign status spring-checkups [--attempts 20] [--json]
    voicegw campaign pause spring-checkups
    voicegw dnc add +15551234567 | remove +15551234567 | list
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from gateway.context import open_audit
from gateway.context.dnc import number_key, open_do_not_call
from gateway.context.store import StoreError
from gateway.digital.campaigns.manage import MAX_CSV_BYTES, CampaignAdmin, journey_names
from gateway.digital.campaigns.store import CAMPAIGNS_FILE, CampaignError, CampaignStore

OPTIONS = {  # command-line option -> campaign setting
    "journey": "journey", "rate": "calls_per_minute", "concurrency": "max_concurrent", "tz": "timezone",
    "max_attempts": "max_attempts", "retry_minutes": "retry_minutes", "backoff": "retry_backoff",
    "escalate_after": "escalate_after_minutes",
}


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {setting: getattr(args, option) for option, setting in OPTIONS.items()
               if getattr(args, option, None) is not None}
    if args.quiet:
        start, sep, end = args.quiet.partition("-")
        if not sep:
            raise CampaignError("--quiet takes START-END, such as 21:00-08:00")
        changes.update(quiet_start=start.strip(), quiet_end=end.strip())
    if args.call_first:
        changes["sms_first"] = False
    return changes


def _print_status(status: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
    cfg = status["settings"]
    print(f"campaign {status['name']}: {status['state']}, journey {cfg['journey']}, {cfg['calls_per_minute']}/min, "
          f"{cfg['max_concurrent']} at once, quiet {cfg['quiet_start']}-{cfg['quiet_end']} ({cfg['timezone']} "
          f"unless the contact says), {cfg['max_attempts']} attempts, {'SMS first' if cfg['sms_first'] else 'calls'}")
    contacts = ", ".join(f"{k} {v}" for k, v in sorted(status["contacts"].items())) or "none"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(status["outcomes"].items())) or "none yet"
    print(f"  contacts ({status['total']}): {contacts}")
    print(f"  attempts by outcome: {outcomes}; calls in progress {status['calls_in_progress']}")
    for item in attempts:
        print(f"  {item['started_at']}  {item['ref']:<16} #{item['n']} {item['kind']:<4} {item['outcome'] or item['state']}"
              f"{' (' + item['detail'] + ')' if item['detail'] else ''}")


async def _campaign(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    settings = settings_from(args)
    store = CampaignStore(settings.data_path(CAMPAIGNS_FILE), busy_timeout_ms=settings.context.busy_timeout_ms)
    audit = open_audit(settings)
    admin = CampaignAdmin(settings, store, journey_names(settings))
    try:
        if args.action != "list":
            await audit.write(actor=_actor(), role="admin", action=f"campaign_{args.action}",
                              detail={"op": args.action, "target": args.name, "via": "cli"})
        if args.action == "create":
            campaign = await admin.create(args.name, _changes(args))
            print(f"campaign {campaign.name} created (draft): import contacts, then start it")
        elif args.action == "import":
            path = Path(args.file)
            if path.stat().st_size > MAX_CSV_BYTES:
                raise CampaignError(f"{path} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB; split it")
            report = await admin.import_csv(args.name, path.read_text(encoding="utf-8-sig"))
            print(f"{report.added} contacts added, {report.duplicates} already there, {len(report.errors)} rejected "
                  f"(of {report.rows} rows)")
            for error in report.errors:
                print(f"  {error}", file=sys.stderr)
        elif args.action in ("start", "pause"):
            campaign = await (admin.start if args.action == "start" else admin.pause)(args.name)
            print(f"campaign {campaign.name} is {campaign.state.value}")
        elif args.action == "status":
            status = await admin.status(args.name)
            attempts = await admin.attempts(args.name, limit=args.attempts) if args.attempts else []
            if args.json:
                print(json.dumps({**status, "attempts": attempts}, indent=2))
            else:
                _print_status(status, attempts)
        else:
            overview = await admin.overview()
            if args.json:
                print(json.dumps(overview, indent=2))
            for status in overview if not args.json else []:
                print(f"{status['name']:<24} {status['state']:<8} {status['total']:>7} contacts  "
                      + ", ".join(f"{k} {v}" for k, v in sorted(status["contacts"].items())))
    except (CampaignError, OSError, UnicodeDecodeError) as exc:
        print(f"voicegw campaign: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"voicegw campaign: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
        await audit.close()
    return 0


async def _dnc(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    settings = settings_from(args)
    dnc = open_do_not_call(settings)
    audit = open_audit(settings)
    try:
        if args.action == "list":
            for entry in await dnc.entries(args.limit):
                print(f"{entry.number:<17} {entry.source:<16} {entry.conversation_id}")
            return 0
        if not number_key(args.number):
            print(f"voicegw dnc: {args.number!r} is not a phone number", file=sys.stderr)
            return 1
        await audit.write(actor=_actor(), role="admin", action=f"dnc_{args.action}",
                          detail={"number": "…" + number_key(args.number)[-4:], "via": "cli"})
        if args.action == "add":
            added = await dnc.add(args.number, source="cli")
            print("added" if added else "already on the list")
        else:
            removed = await dnc.remove(args.number)
            print("removed: calls and SMS to this number may resume" if removed else "not on the list")
    except StoreError as exc:
        print(f"voicegw dnc: {exc}", file=sys.stderr)
        return 2
    finally:
        await dnc.close()
        await audit.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="outbound campaigns: create, import contacts (CSV), start, pause, status")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="a new campaign (draft); options override the campaigns settings")
    c.add_argument("name")
    c.add_argument("--journey", help="the journey the contacts go through (default: appointment)")
    c.add_argument("--rate", type=int, help="attempts started per minute")
    c.add_argument("--concurrency", type=int, help="calls in progress at once")
    c.add_argument("--tz", help="time zone of contacts without one (IANA name)")
    c.add_argument("--quiet", help="quiet hours in the contact's time zone, START-END (21:00-08:00)")
    c.add_argument("--max-attempts", type=int, dest="max_attempts")
    c.add_argument("--retry-minutes", type=float, dest="retry_minutes")
    c.add_argument("--backoff", type=float, help="factor on the wait for each further retry")
    c.add_argument("--escalate-after", type=float, dest="escalate_after",
                   help="minutes an SMS may go unanswered before a call")
    c.add_argument("--call-first", action="store_true", dest="call_first", help="call without a reminder SMS first")
    i = actions.add_parser("import", help="add contacts from a CSV file (phone, id, customer_id, name, tz, text)")
    i.add_argument("name")
    i.add_argument("file")
    for action, text in (("start", "run the campaign"), ("pause", "start nothing new (calls in progress finish)")):
        actions.add_parser(action, help=text).add_argument("name")
    s = actions.add_parser("status", help="contacts by status, attempts by outcome")
    s.add_argument("name")
    s.add_argument("--attempts", type=int, default=0, help="also list the latest N attempts")
    s.add_argument("--json", action="store_true")
    ls = actions.add_parser("list", help="every campaign")
    ls.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda args: asyncio.run(_campaign(args)))

    d = sub.add_parser("dnc", help="the do-not-call list: add, remove (a mistaken entry), list")
    dactions = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action in ("add", "remove"):
        dactions.add_parser(action).add_argument("number")
    dl = dactions.add_parser("list")
    dl.add_argument("--limit", type=int, default=100)
    d.set_defaults(func=lambda args: asyncio.run(_dnc(args)))
