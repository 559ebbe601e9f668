"""``voicegw erase``, ``voicegw export`` and ``voicegw retention``.

    voicegw erase --customer C001 --actor admin            # what would go (nothing is changed)
    voicegw erase --customer C001 --actor admin --yes      # erase, and print what was done
    voicegw export --customer C001 --actor admin -o c001.json
    voicegw retention                                      # run the retention purge now
    voicegw qa --since 30d                                 # score ended conversations now, and summarize

``--actor`` names the admin account doing it (checked against ``agents.accounts``, the accounts
file, or the generated ``admin``); it is what the audit log records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.agents.access import Permission, authorize


def _actor(settings: Any, name: str, permission: Permission) -> str | None:
    from gateway.agents.accounts import AccountBook

    account = AccountBook(settings).get(name or "")
    if account is None:
        print(f"voicegw: no account named {name!r}: give --actor with an admin account", file=sys.stderr)
        return None
    decision = authorize(account.principal, permission)
    if not decision:
        print(f"voicegw: {name}: {decision.reason}", file=sys.stderr)
        return None
    return account.name


async def _open(settings: Any) -> tuple[Any, Any, Any, Any]:
    from gateway.context import open_audit, open_store
    from gateway.events_out.deliveries import open_deliveries
    from gateway.governance.qa_store import open_qa_store

    return open_store(settings), open_audit(settings), open_deliveries(settings), open_qa_store(settings)


async def _close(*things: Any) -> None:
    for thing in things:
        await thing.close()


async def _erase(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.governance.erasure import erase_customer, numbers_of

    settings = settings_from(args)
    actor = _actor(settings, args.actor, Permission.ERASE_CUSTOMER)
    if actor is None:
        return 2
    store, audit, deliveries, qa = await _open(settings)
    try:
        numbers = await numbers_of(settings, args.customer, args.phone or [])
        ids = await store.conversation_ids(customer_id=args.customer, caller_ids=numbers)
        if not args.yes:
            print(f"customer {args.customer}: {len(ids)} conversation(s), {len(numbers)} number(s) "
                  "would be erased from every store; run again with --yes to do it")
            return 0
        report = await erase_customer(settings, store, audit, customer_id=args.customer, numbers=numbers,
                                      actor=actor, deliveries=deliveries, qa=qa)
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
        return 0
    finally:
        await _close(store, audit, deliveries, qa)


async def _export(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.governance.erasure import numbers_of
    from gateway.governance.subject_access import subject_access

    settings = settings_from(args)
    actor = _actor(settings, args.actor, Permission.EXPORT_CUSTOMER)
    if actor is None:
        return 2
    store, audit, deliveries, qa = await _open(settings)
    try:
        numbers = await numbers_of(settings, args.customer, args.phone or [])
        bundle = await subject_access(settings, store, audit, customer_id=args.customer, numbers=numbers,
                                      actor=actor, qa=qa)
    finally:
        await _close(store, audit, deliveries, qa)
    text = json.dumps(bundle, indent=2, ensure_ascii=False)
    if args.output:
        path = Path(args.output)
        path.write_text(text + "\n", encoding="utf-8")
        path.chmod(0o600)
        print(f"wrote {len(bundle['conversations'])} conversation(s) and {len(bundle['sms'])} SMS to {path}",
              file=sys.stderr)
    else:
        print(text)
    return 0


async def _retention(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.governance.retention import purge

    settings = settings_from(args)
    store, audit, deliveries, qa = await _open(settings)
    try:
        done = await purge(settings, store, audit, now=time.time(), deliveries=deliveries, qa=qa)
    finally:
        await _close(store, audit, deliveries, qa)
    for where, counts in done.items():
        print(f"{where}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to remove"))
    return 0


async def _qa(args: argparse.Namespace) -> int:
    from gateway.analytics.cli import parse_time
    from gateway.analytics.source import journey_map
    from gateway.cli import settings_from
    from gateway.governance.qa_job import QaSweep
    from gateway.governance.scorecards import load_scorecards

    settings = settings_from(args)
    now = time.time()
    try:
        since = parse_time(args.since, now)
    except ValueError as exc:
        print(f"voicegw qa: {exc}", file=sys.stderr)
        return 2
    store, audit, deliveries, qa = await _open(settings)
    try:
        sweep = QaSweep(settings, store, qa, load_scorecards(settings.project_path(settings.qa.scorecards_dir)),
                        journey_map(settings))
        scored = await sweep.score_range(since, now)
        results = await qa.between(since, now + 1)
    finally:
        await _close(store, audit, deliveries, qa)
    failing: dict[str, int] = {}
    for result in results:
        for item in result.failing:
            failing[item["id"]] = failing.get(item["id"], 0) + 1
    print(f"scored {scored} conversation(s) now; {len(results)} scored in the range, "
          f"{sum(1 for r in results if r.passed)} passed")
    for item, n in sorted(failing.items(), key=lambda kv: -kv[1]):
        print(f"  {item}: {n} failing")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qa", help="score ended conversations now (voicegw serve does it on schedule) and summarize")
    p.add_argument("--since", default="7d", help="conversations updated since: 7d, 24h, an ISO date (default 7d)")
    p.set_defaults(func=lambda a: asyncio.run(_qa(a)))
    p = sub.add_parser("erase", help="erase a customer's data from every store (admins)")
    p.add_argument("--customer", required=True, help="the customer id (as the CRM knows it)")
    p.add_argument("--phone", action="append", help="also a number of theirs (repeatable); the one on file is found")
    p.add_argument("--actor", required=True, help="the admin account doing it (recorded in the audit log)")
    p.add_argument("--yes", action="store_true", help="really erase (without it: say what would go)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=lambda a: asyncio.run(_erase(a)))
    p = sub.add_parser("export", help="a customer's subject-access bundle as JSON (admins)")
    p.add_argument("--customer", required=True, help="the customer id")
    p.add_argument("--phone", action="append", help="also a number of theirs (repeatable)")
    p.add_argument("--actor", required=True, help="the admin account doing it (recorded in the audit log)")
    p.add_argument("-o", "--output", help="write the bundle here (mode 0600) instead of printing it")
    p.set_defaults(func=lambda a: asyncio.run(_export(a)))
    p = sub.add_parser("retention", help="run the retention purge now (voicegw serve runs it on schedule)")
    p.set_defaults(func=lambda a: asyncio.run(_retention(a)))
