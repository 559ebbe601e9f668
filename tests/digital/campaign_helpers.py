"""A gateway for campaign tests: the real core (SQLite in tmp_path, the sample CRM), the web app
(SMS outbox, follow-up links, the campaign runner and admin), and a carrier standing in for the
PBX: it records each ``Originate`` and, when the test says so, answers the call (the voice
session opening with the callback nonce, as a telephony channel does) or reports it not
answered (``CallFailed``, as the AMI and SIP channels do)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gateway.app import build_core
from gateway.core.actions import Originate
from gateway.core.events import CallFailed, CallStarted, ChannelClosed, UserSaid
from tests.digital.helpers import start

CUSTOMERS = {  # sample CRM: id -> number on file
    "C001": "+15551234567", "C002": "+15559876543", "C003": "+15552223333",
    "C004": "+15554445555", "C005": "+15556667777", "C006": "+15558889999",
}
T0 = datetime(2026, 3, 10, 14, 0, tzinfo=timezone.utc)  # 10:00 in New York, 15:00 in Berlin
SETTINGS = {
    "campaigns": {"enabled": False},  # the test drives every tick with its own clock
    # the core's own budgets count real seconds: room for a test's calls within a few seconds
    "outbound": {"calls_per_minute": 600, "sms_per_minute": 600, "calls_per_conversation_per_hour": 20},
}


@dataclass
class Carrier:
    core: Any
    placed: list[Originate] = field(default_factory=list)

    async def sink(self, conversation_id: str, action: Any) -> None:
        self.placed.append(action)

    def numbers(self) -> list[str]:
        return [a.number for a in self.placed]

    def last(self, number: str) -> Originate:
        return [a for a in self.placed if a.number == number][-1]

    async def fail(self, number: str, reason: str) -> None:
        call = self.last(number)
        await self.core.handle(call.conversation_id, CallFailed(reason=reason, detail="test carrier"))

    async def answer(self, number: str, *, say: str = "", machine: bool = False, hang_up: bool = True) -> Any:
        call = self.last(number)
        opened = await self.core.open("voice", conversation_id=call.conversation_id, callback=call.callback,
                                      event=CallStarted(caller_id=number, outbound=True, call_id=f"call-{number}"))
        if machine:  # the answering-machine detector's verdict, as the core notes it
            await self.core.store.append(call.conversation_id, channel="system", kind="AnsweringMachine",
                                         payload={"verdict": "machine"})
        if say:
            await self.core.handle(call.conversation_id, UserSaid(say, confidence=0.9), session_id=opened.session_id)
        if hang_up:
            await self.core.handle(call.conversation_id, ChannelClosed(reason="hangup"), session_id=opened.session_id)
        return opened


async def campaign_gateway(tmp_path: Path, **overrides: Any) -> tuple[Any, Any, Carrier]:
    settings = {key: dict(value) for key, value in SETTINGS.items()}
    for key, value in overrides.items():
        settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
    from tests.digital.helpers import web_settings

    core = await build_core(web_settings(tmp_path, **settings))
    carrier = Carrier(core)
    core.register_sink(Originate, carrier.sink)
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm}, **settings)
    return core, runner, carrier


def csv_of(rows: list[dict[str, str]]) -> str:
    header = ["id", "phone", "customer_id", "name", "tz", "text"]
    return "\n".join([",".join(header)] + [",".join(row.get(h, "") for h in header) for row in rows]) + "\n"


def customers(*ids: str, tz: str = "") -> str:
    return csv_of([{"id": cid.lower(), "phone": CUSTOMERS[cid], "customer_id": cid, "tz": tz} for cid in ids])
