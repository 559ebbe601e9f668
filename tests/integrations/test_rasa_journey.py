"""A journey step ``run: rasa:<action>`` through the real core, answered over a real socket by
the gateway's own rasa-sdk action server."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.app import build_core
from gateway.config import PACKAGE_ROOT, load_settings
from gateway.core.actions import Ask, Say
from gateway.core.events import ChatMessage, ChatStarted
from gateway.integrations.rasa_actions import start_action_server
from gateway.integrations.sample_crm import SampleCrm

RASA_JOURNEY = """\
journey: rasa_order
description: Order status answered by a Rasa custom action.
intents: [order_status]
steps:
  - id: ask_order
    ask: "What is your order number?"
    expect: digits
    digits: [5, 8]
    slot: order_id
  - id: lookup
    run: rasa:action_order_status
    outcomes: {found: tell, not_found: END, error: END}
  - id: tell
    say: "Rasa says the order is {order_status}, carrier {order_carrier}."
    next: END
"""


def _texts(actions: list) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask)))


async def test_a_journey_runs_a_rasa_action(tmp_path: Path) -> None:
    journeys = tmp_path / "journeys"
    shutil.copytree(PACKAGE_ROOT / "config" / "journeys", journeys)
    (journeys / "rasa_order.yaml").write_text(RASA_JOURNEY)
    base = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    crm = SampleCrm(base.data_path(base.crm.sqlite_path))
    server = await start_action_server(base, crm, "127.0.0.1", 0)
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "journeys": {"directory": str(journeys)},
        "rasa": {"action_server_url": f"http://127.0.0.1:{server.port}/webhook", "timeout_seconds": 10}})
    core = await build_core(settings, crm=crm)
    try:
        opened = await core.open("chat", journey="rasa_order", event=ChatStarted())
        assert "order number" in _texts(opened.actions)
        acts = await core.handle(opened.conversation_id, ChatMessage("20001"))
        said = _texts(acts)
        assert "Order 20001 (standing desk) is delayed" in said  # the action's own response
        assert "Rasa says the order is delayed, carrier FedEx." in said  # its slots, used by the journey
    finally:
        await core.store.close()
        await server.close()
        await crm.close()
