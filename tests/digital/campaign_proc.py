"""One gateway process running campaign ticks on a data directory, for the restart tests.

Usage: ``python -m tests.digital.campaign_proc '<json>'`` with ``{"data_dir": ..., "ticks": [iso
times], "die_after_calls": N}``. Every ``Originate`` the core emits is appended to
``<data_dir>/placed.jsonl`` (the carrier's record: what was dialled) before the process goes on;
with ``die_after_calls`` the process dies at once (``os._exit``) after that many calls, inside
the telephony sink: the core has logged the Originate, the campaign has not yet recorded the
call as placed. Prints ``{"event": "ticked", "held": [...]}`` when it ends normally.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.app import build_core
from gateway.core.actions import Originate
from tests.digital.campaign_helpers import SETTINGS
from tests.digital.helpers import start, web_settings

KILLED = 9


async def main(spec: dict[str, Any]) -> None:
    data = Path(spec["data_dir"])
    core = await build_core(web_settings(data, **SETTINGS))
    record = data / "placed.jsonl"
    limit = int(spec.get("die_after_calls", 0))

    async def carrier(conversation_id: str, action: Any) -> None:
        with open(record, "a", encoding="utf-8") as out:
            out.write(json.dumps({"number": action.number, "conversation_id": action.conversation_id}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if limit and len(record.read_text().splitlines()) >= limit:
            os._exit(KILLED)  # a crash: nothing after this line runs, nothing is closed

    core.register_sink(Originate, carrier)
    runner = await start(data, core, deps={"store": core.store, "crm": core.crm}, **SETTINGS)
    held = []
    for at in spec["ticks"]:
        held.append(await runner.parts.campaigns.run_once(datetime.fromisoformat(at)))
    await runner.close()
    await core.close()
    print(json.dumps({"event": "ticked", "held": held}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
