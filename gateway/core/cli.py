"""``voicegw journeys validate`` (``voicegw chat``, a channel, is :mod:`gateway.digital.terminal`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.core.journeys import JourneyError, load_journeys


def _validate(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.core.dialog import DialogEngine

    directory = Path(args.directory) if args.directory else None
    if directory is None:
        settings = settings_from(args)
        directory = settings.project_path(settings.journeys.directory)
    try:
        journeys = load_journeys(directory, DialogEngine.known_lookups())
    except JourneyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    print(f"{len(journeys.journeys)} journeys and {len(journeys.intent_examples)} intents are valid in {directory}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("journeys", help="journey tools")
    jsub = p.add_subparsers(dest="journeys_command", metavar="ACTION")
    v = jsub.add_parser("validate", help="check every journey file; report file, line and reason")
    v.add_argument("directory", nargs="?", help="journey directory (default: from the configuration)")
    v.set_defaults(func=_validate)
