"""``voicegw report``: the dashboard's tables in the terminal, and CSV or Parquet files for a warehouse.

    voicegw report                               # the last 7 days
    voicegw report --since 2026-01-01 --until 2026-02-01 --journey order_status --channel voice
    voicegw report --since 24h --csv out/       # one file per table
    voicegw report --parquet out/ --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from gateway.analytics.report import ReportFilter
from gateway.analytics.tables import export, render_text

RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([mhd])$")
UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0}
DEFAULT_DAYS = 7


def parse_time(text: str, now: float) -> float:
    """``7d``, ``24h``, ``30m`` ago (a leading minus is allowed), an ISO date or date-time (UTC when no zone is given), or epoch seconds."""
    text = text.strip()
    match = RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give 7d, 24h, 2026-01-31 or 2026-01-31T08:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def filter_from(args: argparse.Namespace, now: float) -> ReportFilter:
    since = parse_time(args.since, now) if args.since else now - DEFAULT_DAYS * 86400
    until = parse_time(args.until, now) if args.until else now
    if until <= since:
        raise ValueError("--until must be after --since")
    return ReportFilter(since, until, journey=args.journey or "", channel=args.channel or "", queue=args.queue or "")


async def _report(args: argparse.Namespace) -> int:
    from gateway.analytics.source import Analytics
    from gateway.cli import settings_from
    from gateway.context import open_store

    settings = settings_from(args)
    try:
        f = filter_from(args, time.time())
    except ValueError as exc:
        print(f"voicegw report: {exc}", file=sys.stderr)
        return 2
    store = open_store(settings)
    try:
        report = await Analytics(settings, store).report(f)  # type: ignore[arg-type]
    finally:
        await store.close()
    if args.json:
        print(json.dumps({"filter": f.describe(), "truncated": report.truncated, "headline": report.headline,
                          "tables": {t.name: t.as_dicts() for t in report.tables}}, indent=2))
    else:
        print(f"Journey report: {f.describe()}" + (" (TRUNCATED: shorten the range)" if report.truncated else ""))
        print()
        print(render_text(report.tables))
    for fmt, directory in (("csv", args.csv), ("parquet", args.parquet)):
        if directory:
            written = export(report.tables, Path(directory), fmt)  # type: ignore[arg-type]
            print(f"wrote {len(written)} {fmt} files to {directory}", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    return asyncio.run(_report(args))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="journey analytics: containment, transfers, funnel, effort, latency, frustration")
    p.add_argument("--since", help="start of the range: 7d or 24h ago, an ISO date or date-time (default: 7 days ago)")
    p.add_argument("--until", help="end of the range (default: now)")
    p.add_argument("--journey", help="only conversations that entered this task journey")
    p.add_argument("--channel", help="only conversations that used this channel (voice, chat, sms, web)")
    p.add_argument("--queue", help="only conversations of this queue (transferred there, or their task's queue)")
    p.add_argument("--csv", metavar="DIR", help="also write every table as DIR/<table>.csv")
    p.add_argument("--parquet", metavar="DIR", help="also write every table as DIR/<table>.parquet")
    p.add_argument("--json", action="store_true", help="print JSON instead of text tables")
    p.set_defaults(func=_cmd_report)
