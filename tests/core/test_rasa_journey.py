"""A journey step that calls a custom action on a Rasa action server (rasa-sdk webhook protocol).

The action server here is the gateway's own rasa-sdk action server on a real socket, so both
directions of the Rasa compatibility are exercised together."""

import shutil

from gateway.app import build_core
from gateway.config import PACKAGE_ROOT, load_settings
from gateway.core.actions import Ask, Hangup, Say
from gateway.core.events import ChatMessage, ChatStarted
from gateway.integrations.rasa_actions import start_action_server
from gateway.integrations.sample_crm import SampleCrm

RASA_JOURNEY = """\
journey: rasa_order
steps:
  - id: ask_order
    ask: "Which order?"
    expect: digits
    digits: [5, 5]
    slot: order_id
  - id: lookup
    run: rasa:action_order_status
    outcomes: {found: done, not_found: ask_order, error: failed}
  - id: done
    end: "Status noted: {order_status}."
  - id: failed
    end: "The assistant service is unavailable."
"""


async def _core(tmp_path, url):
    journeys = tmp_path / "journeys"
    shutil.copytree(PACKAGE_ROOT / "config" / "journeys", journeys, dirs_exist_ok=True)
    (journeys / "rasa_order.yaml").write_text(RASA_JOURNEY)
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "journeys": {"directory": str(journeys)},
        "rasa": {"action_server_url": url, "timeout_seconds": 2.0}})
    return settings, await build_core(settings)


async def test_journey_runs_a_rasa_custom_action(tmp_path):
    settings, _ = await _core(tmp_path, "http://127.0.0.1:1")
    crm = SampleCrm(settings.data_path(settings.crm.sqlite_path))
    server = await start_action_server(settings, crm, "127.0.0.1", 0)
    try:
        settings, core = await _core(tmp_path, f"http://127.0.0.1:{server.port}/webhook")
        opened = await core.open("chat", journey="rasa_order", event=ChatStarted())
        assert isinstance(opened.actions[-1], Ask)
        acts = await core.handle(opened.conversation_id, ChatMessage("20001"))
        said = [a.text for a in acts if isinstance(a, Say)]
        assert any("standing desk" in text for text in said)  # the action server's own response
        assert "Status noted: delayed." in said and any(isinstance(a, Hangup) for a in acts)
        await core.close()
    finally:
        await server.close()


async def test_unreachable_rasa_server_takes_the_error_outcome(tmp_path):
    settings, core = await _core(tmp_path, "http://127.0.0.1:9/webhook")
    opened = await core.open("chat", journey="rasa_order", event=ChatStarted())
    acts = await core.handle(opened.conversation_id, ChatMessage("20001"))
    assert "The assistant service is unavailable." in [a.text for a in acts if isinstance(a, Say)]
    await core.close()
