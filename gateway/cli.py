"""``voicegw``: the gateway's command line.

Each area of the gateway contributes its own subcommands through a ``register(subparsers)``
function in its ``cli`` module (``gateway.voice.cli``, ``gateway.telephony.cli``, ...), so this
file only assembles them and handles what every command shares: ``--config`` and logging
(every log line goes through :class:`~gateway.context.redaction.logs.RedactingFilter`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from gateway.config import ConfigError, Settings, load_settings
from gateway.context.redaction.logs import install as install_log_redaction

AREA_CLIS = (
    "gateway.core.cli",
    "gateway.digital.terminal",
    "gateway.context.cli",
    "gateway.voice.cli",
    "gateway.voice.simulate",
    "gateway.telephony.cli",
    "gateway.telephony.sip.cli",
    "gateway.digital.cli",
    "gateway.digital.campaigns.cli",
    "gateway.agents.cli",
    "gateway.analytics.cli",
    "gateway.events_out.cli",
    "gateway.governance.cli",
    "gateway.app",
)


def settings_from(args: argparse.Namespace) -> Settings:
    """Load settings honouring ``--config`` (and ``VOICEGW_*`` variables)."""
    return load_settings(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicegw",
        description="Telephony-first omnichannel voice AI gateway.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file overriding config/gateway.yaml")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREA_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        register: Callable[[argparse._SubParsersAction], None] = module.register  # every area's cli has one
        register(sub)
    parser.set_defaults(func=None)  # no command given: the help
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # card numbers, PINs, passwords ... never reach a log line
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"voicegw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
