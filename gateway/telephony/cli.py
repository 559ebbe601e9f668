"""``voicegw ami-check`` and ``voicegw asterisk-dialplan``: Asterisk wiring from the command line.

    voicegw ami-check                        # log in with the ami.* settings, print the PBX version
    voicegw asterisk-dialplan --host 10.0.0.5 > /etc/asterisk/extensions_voicegw.conf
    voicegw asterisk-dialplan --queues > /etc/asterisk/queues_voicegw.conf
    voicegw asterisk-dialplan --host 10.0.0.5 --write /etc/asterisk   # both files
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from gateway.config import PACKAGE_ROOT, Settings
from gateway.telephony.asterisk_queues import queue_extension, queue_plan, render_queues

DIALPLAN = PACKAGE_ROOT / "dialplans" / "asterisk" / "extensions_voicegw.conf"
DIALPLAN_FILE = "extensions_voicegw.conf"
QUEUES_FILE = "queues_voicegw.conf"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Asterisk subcommands to ``voicegw``."""
    p = subparsers.add_parser("ami-check", help="log in to Asterisk's AMI with the ami.* settings")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the login (default 5)")
    p.set_defaults(func=_ami_check_command)
    d = subparsers.add_parser("asterisk-dialplan",
                              help="print the Asterisk dialplan to #include, with this gateway's addresses")
    d.add_argument("--host", help="the gateway's address as Asterisk reaches it "
                                  "(default: the host of fastagi.audiosocket_address)")
    d.add_argument("--queues", action="store_true",
                   help=f"print {QUEUES_FILE} instead: every queue the journeys transfer to, with language variants")
    d.add_argument("--write", metavar="DIR", help=f"write {DIALPLAN_FILE} and {QUEUES_FILE} into DIR")
    d.set_defaults(func=_dialplan_command)


async def ami_check(settings: Settings, timeout: float = 5.0) -> tuple[bool, str]:
    """Log in and ask the PBX its version: (ok, one line to print)."""
    from gateway.telephony.ami import AmiClient, AmiError

    cfg = settings.ami
    client = AmiClient(settings, initial_backoff=timeout)
    try:
        await client.start(wait=timeout)
        if not client.connected:
            return False, (f"AMI login to {cfg.host}:{cfg.port} as {cfg.username!r} failed within {timeout:.0f} s "
                           "(is manager.conf enabled, the user/secret right, the address permitted?)")
        try:
            info = await client.action({"Action": "CoreSettings"})
            version = info.get("AsteriskVersion", "unknown version") if info.success else "version not readable"
        except AmiError as exc:
            version = str(exc)
        return True, f"AMI OK: logged in to {cfg.host}:{cfg.port} as {cfg.username!r} (Asterisk {version})"
    finally:
        await client.close()


def render_dialplan(settings: Settings, host: str = "") -> str:
    """The shipped dialplan with this gateway's VOICEGW_AGI, VOICEGW_AUDIOSOCKET,
    VOICEGW_DEFAULT_QUEUE (``journeys.agent_queue``) and Stasis application (``ari.app``)."""
    audiosocket_host, _, audiosocket_port = settings.fastagi.audiosocket_address.rpartition(":")
    host = host or audiosocket_host or "127.0.0.1"
    text = DIALPLAN.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^VOICEGW_AGI=\S+", f"VOICEGW_AGI=agi://{host}:{settings.fastagi.port}", text)
    text = re.sub(r"(?m)^VOICEGW_AUDIOSOCKET=\S+", f"VOICEGW_AUDIOSOCKET={host}:{audiosocket_port}", text)
    default = queue_extension(settings.journeys.agent_queue)
    text = re.sub(r"(?m)^VOICEGW_DEFAULT_QUEUE=\S+", f"VOICEGW_DEFAULT_QUEUE={default}", text)
    app = re.sub(r"[^A-Za-z0-9_.-]", "-", settings.ari.app) or "voicegw"
    return text.replace("Stasis(voicegw)", f"Stasis({app})")


def _ami_check_command(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    ok, line = asyncio.run(ami_check(settings_from(args), args.timeout))
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _dialplan_command(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from
    from gateway.core.journeys import JourneyError

    settings = settings_from(args)
    try:
        queues = render_queues(queue_plan(settings)) if args.queues or args.write else ""
    except JourneyError as exc:
        print(f"voicegw: the journeys cannot be read, so neither can their queues:\n{exc}", file=sys.stderr)
        return 1
    if args.write:
        target = Path(args.write)
        (target / DIALPLAN_FILE).write_text(render_dialplan(settings, args.host or ""), encoding="utf-8")
        (target / QUEUES_FILE).write_text(queues, encoding="utf-8")
        print(f"wrote {target / DIALPLAN_FILE} and {target / QUEUES_FILE}")
        return 0
    sys.stdout.write(queues if args.queues else render_dialplan(settings, args.host or ""))
    return 0
