"""``voicegw chat``: the terminal as a channel, talking to the journeys through the real core.

It opens a conversation on the chat (or, with ``--voice``, the voice) channel and sends SMS
follow-ups where ``voicegw serve`` sends them (Twilio, else the local outbox): a channel of its
own, so it lives beside the other channels and the core imports none of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.core.actions import Ask, Hangup, OfferCall, Originate, SendFollowUp, Say, ScreenPop, Transfer
from gateway.core.channels import Channel
from gateway.core.events import CallAccepted, ChatMessage, ChatStarted, DtmfPressed, UserSaid


def _show(actions: list, out=sys.stdout) -> bool:
    """Print actions; returns False when the conversation ended."""
    alive = True
    for action in actions:
        if isinstance(action, (Say, Ask)):
            print(f"bot> {action.text}", file=out)
        elif isinstance(action, Transfer):
            print(f"[transfer to queue {action.queue!r}, skills {list(action.skills)}: {action.reason}]", file=out)
            alive = False
        elif isinstance(action, SendFollowUp):
            # the terminal is not the customer's phone: it shows where a message went, never its text
            where = f"the phone ending in {action.to[-4:]}" if action.to else "the chat"
            print(f"[{action.channel} follow-up {action.template!r} sent to {where}; voicegw outbox shows it]",
                  file=out)
        elif isinstance(action, OfferCall):
            print(f"bot> {action.text}  (type /call to accept)", file=out)
        elif isinstance(action, Originate):
            print(f"[calling the number ending in {action.number[-4:]}]", file=out)
        elif isinstance(action, Hangup):
            alive = False
        elif isinstance(action, ScreenPop):
            print(f"[screen-pop sent for conversation {action.conversation_id}]", file=out)
    return alive


async def _chat(args: argparse.Namespace) -> int:
    from gateway.app import build_core
    from gateway.cli import settings_from

    settings = settings_from(args)
    core = await build_core(settings)
    closers = _send_sms_like_the_gateway(settings, core)
    channel = Channel.VOICE if args.voice else Channel.CHAT
    opened = await core.open(channel, caller_id=args.caller_id, conversation_id=args.conversation or "",
                             journey=args.journey or "", event=ChatStarted(channel=channel))
    session = opened.session_id
    print(f"[conversation {opened.conversation_id}{' resumed' if opened.resumed else ''}; "
          "/quit to leave, /dtmf 123# to key digits, /call to accept a call offer]")
    alive = _show(opened.actions)
    loop = asyncio.get_running_loop()
    while alive:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text.startswith("/dtmf"):
            actions = []
            for digit in text[5:].strip():
                actions += await core.handle(opened.conversation_id, DtmfPressed(digit, channel=channel),
                                             session_id=session)
        elif text == "/call":
            actions = await core.handle(opened.conversation_id, CallAccepted(channel=channel), session_id=session)
        elif channel is Channel.VOICE:
            actions = await core.handle(opened.conversation_id, UserSaid(text), session_id=session)
        else:
            actions = await core.handle(opened.conversation_id, ChatMessage(text), session_id=session)
        alive = _show(actions)
    for close in closers:
        close()
    await core.close()
    return 0


def _send_sms_like_the_gateway(settings, core) -> list:
    """SMS follow-ups (one-time codes, links) go where ``voicegw serve`` sends them: Twilio when
    configured, else the local outbox (``voicegw outbox``), which stands in for the customer's
    phone. The terminal never shows their text: it is not the customer's phone."""
    # imported here: every voicegw command loads this module to build its parser
    from gateway.digital.followup import FollowUps
    from gateway.digital.outbox import OUTBOX_FILE, Outbox
    from gateway.digital.sms import SmsSender
    from gateway.links import LinkSigner, load_or_create_secret
    from gateway.metrics import Metrics

    data = settings.data_path(".")
    metrics = Metrics()
    outbox = Outbox(data / OUTBOX_FILE, redaction=settings.redaction)
    signer = LinkSigner(load_or_create_secret(settings.links.secret, data),
                        ttl_seconds=settings.links.ttl_minutes * 60, used_db=data / "links.db")
    followups = FollowUps(settings, core, signer, SmsSender(settings, outbox, metrics), None, metrics)
    core.register_sink(SendFollowUp, followups.sink)
    return [outbox.close, signer.close]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``voicegw chat``."""
    p = sub.add_parser("chat", help="talk to the journeys in the terminal through the conversation core")
    p.add_argument("--voice", action="store_true", help="use the voice wording of prompts")
    p.add_argument("--caller-id", default="", help="pretend to call from this number (finds the customer)")
    p.add_argument("--journey", default="", help="start this journey instead of the welcome journey")
    p.add_argument("--conversation", default="", help="resume this conversation id")
    p.set_defaults(func=lambda args: asyncio.run(_chat(args)))
