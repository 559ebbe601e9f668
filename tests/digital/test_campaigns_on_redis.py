"""Two gateway nodes on one real Redis: the do-not-call list is one list for both, and campaigns
run on one node at a time (the runner lease): the other node neither ticks nor manages them,
until the holder hands the lease back or stops renewing it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gateway.context.dnc import RedisDoNotCall
from gateway.core.actions import Originate
from gateway.core.events import CallAccepted, CallStarted, OptOut
from gateway.digital.campaigns.lease import RedisLease
from tests.digital.campaign_helpers import CUSTOMERS, T0, campaign_gateway, customers
from tests.digital.helpers import AGENT_TOKENS
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

EMMA, EMMA_ID = CUSTOMERS["C005"], "C005"


async def node(tmp_path: Path, name: str, url: str):
    return await campaign_gateway(tmp_path / name, context={"backend": "redis", "redis_url": url},
                                  campaigns={"lease_seconds": 5})


async def test_the_do_not_call_list_is_shared(redis_url: str) -> None:
    dnc = RedisDoNotCall(redis_url)
    try:
        assert await dnc.add("+1 555 666 7777", source="sms") is True
        assert await dnc.add("15556667777", source="voice") is False  # one line, one entry
        assert await dnc.contains("+15556667777") and not await dnc.contains("+15550000000")
        assert [(e.number, e.source) for e in await dnc.entries()] == [("+15556667777", "sms")]
        assert await dnc.remove("+15556667777") and not await dnc.contains("+15556667777")
    finally:
        await dnc.close()


async def test_an_opt_out_on_one_node_stops_calls_from_the_other(redis_url: str, tmp_path: Path) -> None:
    (core_a, runner_a, _), (core_b, runner_b, carrier_b) = (await node(tmp_path, "a", redis_url),
                                                            await node(tmp_path, "b", redis_url))
    try:
        opened = await core_a.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                                   event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
        await core_a.handle(opened.conversation_id, OptOut(via="sms", number=EMMA), session_id=opened.session_id)
        acts = await core_b.handle(opened.conversation_id, CallAccepted(channel="outreach"))
        assert not [a for a in acts if isinstance(a, Originate)] and carrier_b.placed == []
    finally:
        for runner, core in ((runner_a, core_a), (runner_b, core_b)):
            await runner.close()
            await core.close()


async def test_campaigns_run_on_one_node_at_a_time(redis_url: str, tmp_path: Path) -> None:
    (core_a, runner_a, carrier_a), (core_b, runner_b, carrier_b) = (await node(tmp_path, "a", redis_url),
                                                                    await node(tmp_path, "b", redis_url))
    runners = [(runner_a, core_a), (runner_b, core_b)]
    try:
        for runner, customer in ((runner_a, "C001"), (runner_b, "C002")):  # campaigns.enabled on both, by mistake
            admin = runner.parts.campaign_admin
            await admin.create("reminders", {"sms_first": False})
            await admin.import_csv("reminders", customers(customer))
            await admin.start("reminders")
        assert await runner_a.parts.campaigns.run_once(T0) is True
        assert await runner_b.parts.campaigns.run_once(T0) is False
        assert carrier_a.numbers() == [CUSTOMERS["C001"]] and carrier_b.placed == []
        headers = {"Authorization": f"Bearer {AGENT_TOKENS['sam']}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{runner_b.url}/api/campaigns", headers=headers) as resp:
                assert resp.status == 409
                assert runner_a.parts.campaigns.node in (await resp.json())["error"]
            async with http.get(f"{runner_a.url}/api/campaigns", headers=headers) as resp:
                assert resp.status == 200
        await runner_a.close()  # hands the lease back
        runners.remove((runner_a, core_a))
        await core_a.close()
        assert await runner_b.parts.campaigns.run_once(T0) is True
        assert carrier_b.numbers() == [CUSTOMERS["C002"]]  # node b runs the campaigns of its own data directory
        # a holder that stops renewing (a crash) loses the lease after campaigns.lease_seconds
        dead = RedisLease(redis_url, 5)
        try:
            await runner_b.parts.campaigns.lease.release(runner_b.parts.campaigns.node)
            assert (await dead.hold("crashed-node", 0.0))[0]
            assert await runner_b.parts.campaigns.run_once(T0) is False
            await asyncio.sleep(5.2)
            assert await runner_b.parts.campaigns.run_once(T0) is True
        finally:
            await dead.close()
    finally:
        for runner, core in runners:
            await runner.close()
            await core.close()
