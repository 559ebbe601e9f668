"""Scripted conversations through the real conversation core, on a clock the test controls.

A script is a list of moves; :func:`run_script` plays one as a customer would (a call or a chat
opened, things said, typed, keyed, silences, the channel closed, time passing) and returns the
conversation id. Every event goes through ``core.open``/``core.handle``: what lands in the log is
what the real dialog engine did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gateway.app import build_core
from gateway.config import Settings, load_settings
from gateway.context.sqlite_store import SqliteStore
from gateway.core.events import (CallStarted, ChannelClosed, ChatMessage, ChatStarted, DtmfPressed, Event,
                                 Silence, UserSaid)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Move:
    what: str
    text: str = ""
    value: float = 0.0
    channel: str = ""


def call(caller_id: str = "") -> Move:
    return Move("call", caller_id)


def chat() -> Move:
    return Move("chat")


def call_resume() -> Move:
    """A call that continues the script's conversation (the chat's conversation id carried over)."""
    return Move("call_resume")


def say(text: str, confidence: float = 0.9) -> Move:
    return Move("say", text, confidence)


def type_(text: str) -> Move:
    return Move("type", text)


def keys(digits: str) -> Move:
    return Move("keys", digits)


def silence() -> Move:
    return Move("silence")


def close() -> Move:
    return Move("close")


def wait(seconds: float) -> Move:
    return Move("wait", value=seconds)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"data_dir": str(tmp_path), "outreach": {"enabled": False}}
    base.update(overrides)
    return load_settings(environ={}, overrides=base)


async def sqlite_core(settings: Settings, clock: Clock) -> Any:
    store = SqliteStore(settings.data_path(settings.context.sqlite_path), clock=clock)
    core = await build_core(settings, store=store)
    core.clock = clock
    return core


async def run_script(core: Any, clock: Clock, moves: Sequence[Move], *, step_seconds: float = 5.0) -> str:
    """Play ``moves``; each move takes ``step_seconds`` of the clock (``wait`` takes its own)."""
    cid, session, channel = "", "", "voice"
    for move in moves:
        if move.what == "wait":
            clock.now += move.value
            continue
        clock.now += step_seconds
        if move.what in ("call", "chat", "call_resume", "chat_resume"):
            channel = "voice" if move.what.startswith("call") else "chat"
            event: Event = CallStarted(caller_id=move.text) if channel == "voice" else ChatStarted()
            resume = cid if move.what.endswith("_resume") else ""
            opened = await core.open(channel, caller_id=move.text, conversation_id=resume, event=event)
            cid, session = opened.conversation_id, opened.session_id
            continue
        if move.what == "say":
            event = UserSaid(move.text, confidence=move.value, channel=channel)
        elif move.what == "type":
            event = ChatMessage(move.text, channel=channel)
        elif move.what == "silence":
            event = Silence(6.0, channel=channel)
        elif move.what == "close":
            event = ChannelClosed("hangup", channel=channel)
        elif move.what == "keys":
            for digit in move.text[:-1]:
                await core.handle(cid, DtmfPressed(digit, channel=channel), session_id=session)
            event = DtmfPressed(move.text[-1], channel=channel)
        else:
            raise ValueError(move.what)
        await core.handle(cid, event, session_id=session)
    return cid


ALICE = "+15551234567"

SCRIPTS: dict[str, list[Move]] = {
    # an order's status by chat, no tracking link, nothing else: completed
    "order_chat": [chat(), type_("where is my order"), type_("10001"), type_("no"), type_("no")],
    # the same by phone: the order number misheard once, then keyed (a keypad fallback)
    "order_voice": [call(), say("where is my order"), say("blah", 0.3), keys("10001#"), say("no"), say("no")],
    # three silences: escalated
    "silent": [call(), silence(), silence(), silence()],
    # asks for an order, then closes the chat
    "abandon": [chat(), type_("where is my order"), close()],
    # starts the order in the chat, continues by phone
    "switch": [chat(), type_("where is my order"), call_resume(), keys("10001#"), say("no"), say("no")],
    # wants a person at once
    "agent": [chat(), type_("let me talk to a person")],
    # three answers the bot cannot place: escalated
    "nomatch": [call(), say("blah blah"), say("gibberish words"), say("more nonsense")],
    # Alice by phone: PIN keyed, a duplicate charge disputed
    "bill": [call(ALICE), say("there is a problem with my bill"), say("pin"), keys("4321"),
             say("I was charged twice"), say("yes"), say("no")],
    # says goodbye before anything
    "goodbye": [chat(), type_("goodbye")],
    # asks for an order and goes quiet (ends by idleness)
    "idle": [chat(), type_("where is my order")],
    # an angry start, then an ordinary order enquiry
    "angry": [chat(), type_("this is ridiculous, the third time I ask where my order is"), type_("10001"),
              type_("no"), type_("no")],
}

MIX = {"order_chat": 5, "order_voice": 4, "silent": 2, "abandon": 3, "switch": 2, "agent": 2, "nomatch": 2,
       "bill": 4, "goodbye": 2, "idle": 2, "angry": 2}
GAP_SECONDS = 8 * 3600.0
"""Conversations start this far apart (30 of them span ten days)."""
STAGES = {"endpoint_wait": 0.6, "recognition": 0.2, "dialog": 0.01, "tts": 0.12, "total": 0.95}
"""Stage timings logged (as the voice path logs them) once per order_voice call."""


def schedule(seed: int = 15) -> list[str]:
    """The seeded order of the run: the mix shuffled, then one conversation still going at the end."""
    import random

    kinds = [k for k, n in MIX.items() for _ in range(n)]
    random.Random(seed).shuffle(kinds)
    return kinds + ["idle"]


async def seeded_run(core: Any, clock: Clock, kinds: Sequence[str]) -> list[tuple[str, str, float]]:
    """Every script of ``kinds`` in turn, ``GAP_SECONDS`` apart: (kind, conversation id, start)."""
    done = []
    for i, kind in enumerate(kinds):
        clock.now = T0 + i * GAP_SECONDS
        start = clock.now + 5.0  # the first move's step
        cid = await run_script(core, clock, SCRIPTS[kind])
        if kind == "order_voice":
            await core.store.append(cid, channel="voice", kind="TurnTimed", payload={"stages": dict(STAGES)})
        done.append((kind, cid, start))
    return done
