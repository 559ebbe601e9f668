"""Reading how long a caller would wait, from Asterisk 22.10.1's QueueSummary as recorded
(tests/telephony/captures/ami_g_queue_summary.jsonl), replayed over a real socket."""

from __future__ import annotations

from gateway.config import load_settings
from gateway.telephony.ami import AmiClient
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi


async def test_queue_summary_gives_the_wait_a_caller_can_expect(tmp_path):
    fake = ReplayAmi(fixtures.load("captures/ami_g_queue_summary"))
    port = await fake.start()
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ami": {
        "enabled": True, "port": port, "secret": "gatewaysecret"}})
    client = AmiClient(settings)
    try:
        await client.start(wait=5)
        assert await client.queue_wait("billing", "chat") is None  # a chat waits in the desktop's queue
        billing = await client.queue_wait("billing", "voice")
        # two callers waiting, the one agent paused, no answered call to average yet: a minute each
        assert billing is not None and (billing.waiting, billing.agents_available) == (2, 0)
        assert billing.expected_seconds == 180.0 and billing.source == "asterisk"
        support = await client.queue_wait("support", "voice")
        assert support is not None and support.expected_seconds == 0.0 and support.agents_available == 1
        assert await client.queue_wait("nosuchqueue", "voice") is None  # not guessed
    finally:
        await client.close()
        await fake.close()
    assert fake.names().count("QueueSummary") == 3
    assert [a["queue"] for a in fake.received if a.get("action") == ["QueueSummary"]] == [
        ["billing"], ["support"], ["nosuchqueue"]]
