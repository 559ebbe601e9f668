"""``voicegw ami-check`` and ``voicegw asterisk-dialplan``: Asterisk wiring from the command line.

    voicegw ami-check                        # log in with the ami.* settings, print the PBX version
    voicegw asterisk-dialplan --host 10.0.0.5 > /etc/asterisk/extensions_voicegw.conf
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from gateway.config import PACKAGE_ROOT, Settings

DIALPLAN = PACKAGE_ROOT / "dialplans" / "asterisk" / "extensions_voicegw.conf"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the Asterisk subcommands to ``voicegw``."""
    p = subparsers.add_parser("ami-check", help="log in to Asterisk's AMI with the ami.* settings")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the login (default 5)")
    p.set_defaults(func=_ami_check_command)
    d = subparsers.add_parser("asterisk-dialplan",
                              help="print the Asterisk dialplan to #include, with this gateway's addresses")
    d.add_argument("--host", help="the gateway's address as Asterisk reaches it "
                                  "(default: the host of fastagi.audiosocket_address)")
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
    """The shipped dialplan with VOICEGW_AGI and VOICEGW_AUDIOSOCKET set for this gateway."""
    audiosocket_host, _, audiosocket_port = settings.fastagi.audiosocket_address.rpartition(":")
    host = host or audiosocket_host or "127.0.0.1"
    text = DIALPLAN.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^VOICEGW_AGI=\S+", f"VOICEGW_AGI=agi://{host}:{settings.fastagi.port}", text)
    text = re.sub(r"(?m)^VOICEGW_AUDIOSOCKET=\S+", f"VOICEGW_AUDIOSOCKET={host}:{audiosocket_port}", text)
    return text


def _ami_check_command(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    ok, line = asyncio.run(ami_check(settings_from(args), args.timeout))
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _dialplan_command(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    sys.stdout.write(render_dialplan(settings_from(args), args.host or ""))
    return 0
