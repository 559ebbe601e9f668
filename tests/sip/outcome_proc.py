"""The gateway's SIP channel around the real core, in its own process (pjsua2 allows one endpoint
per process), placing one reminder call and printing what the conversation's log then says.

Usage: ``python -m tests.sip.outcome_proc '<json>'`` with ``{"data_dir": ..., "target_port": N,
"workers": 0}``. Prints one JSON line: ``{"event": "outcome", "events": [[kind, payload], ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.events import CallAccepted, CallStarted
from gateway.telephony.sip.channel import start_sip_channel
from tests.sip.fakes import FakePipeline

EMMA, EMMA_ID = "+15556667777", "C005"
WAIT_SECONDS = 30.0


async def main(spec: dict[str, Any]) -> None:
    settings = load_settings(environ={}, overrides={
        "data_dir": spec["data_dir"],
        "sip": {"enabled": True, "port": 0, "workers": spec.get("workers", 0),
                "outbound_uri": f"sip:{{number}}@127.0.0.1:{spec['target_port']}"}})
    core = await build_core(settings)
    pipeline: Any = FakePipeline(lambda event, **kw: None)
    channel = await start_sip_channel(settings, core, pipeline)
    try:
        opened = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                                 event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
        cid = opened.conversation_id
        await core.handle(cid, CallAccepted(channel="outreach"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while loop.time() < deadline:
            events = await core.store.events(cid)
            if any(e.kind == "CallFailed" for e in events):
                break
            await asyncio.sleep(0.1)
        print(json.dumps({"event": "outcome", "events": [[e.kind, e.payload] for e in events]}), flush=True)
    finally:
        await channel.close()
        await core.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))
