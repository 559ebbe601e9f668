"""The gateway's SIP channel in its own process, for tests (pjsua2 allows one endpoint per
process, and a crash there must not take the test run down).

Usage: ``python -m tests.sip.gateway_proc '<json>'`` with ``{"sip": {...settings.sip overrides},
"mode": "tone|echo|silent", "end_after": seconds, "real": false, "voice": {...settings.voice overrides}}``. Prints JSON lines on stdout
(``ready`` with the bound port, then session events); reads JSON commands on stdin:
``originate`` (target, conversation_id; with the real core a refusal prints ``originate_failed``), ``remind`` (customer_id, phone: with the real core, a
reminder escalated to a call, the call placed through the core as ``voicegw serve`` does), ``stats``,
``quit``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from gateway.config import load_settings
from gateway.core.actions import Originate
from gateway.telephony.sip.channel import start_sip_channel
from tests.sip.fakes import FakeCore, FakePipeline


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def place(channel: Any, cmd: dict[str, Any]) -> None:
    """A call placed through the real core's channel; one refused is said (``originate_failed``)."""
    try:
        await channel.endpoint.originate(cmd["target"], cmd.get("conversation_id", ""), callback=cmd.get("callback", ""))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        emit("originate_failed", error=str(exc))


async def main(spec: dict[str, Any]) -> None:
    overrides: dict[str, Any] = {"sip": {"enabled": True, "port": 0, **spec.get("sip", {})}}
    if spec.get("voice"):
        overrides["voice"] = spec["voice"]
    if spec.get("data_dir"):
        overrides["data_dir"] = spec["data_dir"]
    settings = load_settings(overrides=overrides)
    core: Any = FakeCore()
    pipeline: Any = FakePipeline(emit, mode=spec.get("mode", "tone"), end_after=spec.get("end_after", 0.0),
                                 fail_first=spec.get("fail_first", False))
    closers: list[Any] = []
    if spec.get("real"):
        from gateway.app import build_core
        from gateway.voice.pipeline import VoicePipeline

        core = await build_core(settings)
        pipeline = VoicePipeline(settings, core)
        await pipeline.start()
        closers.append(pipeline)
    channel = await start_sip_channel(settings, core, pipeline)
    emit("ready", port=channel.port, ports=channel.endpoint.ports)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            if cmd["cmd"] == "stats":
                emit("stats", **await channel.stats())
            elif cmd["cmd"] == "remind" and not isinstance(core, FakeCore):
                from gateway.core.events import CallAccepted, CallStarted

                phone = cmd["phone"]
                thread = await core.open("sms", customer_id=cmd["customer_id"], caller_id=phone,
                                         journey=cmd.get("journey", "appointment"),
                                         event=CallStarted(channel="sms", caller_id=phone, outbound=True))
                emit("reminder", conversation_id=thread.conversation_id)
                await core.handle(thread.conversation_id, CallAccepted(channel="outreach"))
            elif cmd["cmd"] == "originate":
                if isinstance(core, FakeCore):
                    await core.sinks[Originate](cmd.get("conversation_id", ""),
                                                Originate(number=cmd["target"],
                                                          conversation_id=cmd.get("conversation_id", ""),
                                                          callback=cmd.get("callback", "")))
                else:
                    asyncio.ensure_future(place(channel, cmd))
    finally:
        await channel.close()
        for closer in closers:
            await closer.close()
        store = getattr(core, "store", None)
        if store is not None:
            await store.close()
        emit("closed")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
