"""The campaign API over real sockets: the web server around the real core, the desktop's
accounts (an agent, a supervisor, an admin), every call authorized by the one authorization
function and written to the audit log, allowed or not."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.agents.tokens import hash_token
from gateway.context import open_audit
from tests.digital.campaign_helpers import CUSTOMERS, T0, campaign_gateway, customers
from tests.digital.helpers import AGENT_ACCOUNTS, AGENT_TOKENS, sign_in

ADMIN_TOKEN = "ada.test-token-ada-0123456789abcdef0123456789"
ACCOUNTS = {**AGENT_ACCOUNTS, "ada": {"role": "admin", "queues": [], "token_hash": hash_token(ADMIN_TOKEN)}}


def bearer(name: str) -> dict[str, str]:
    token = ADMIN_TOKEN if name == "ada" else AGENT_TOKENS[name]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def gw(tmp_path):
    core, runner, carrier = await campaign_gateway(tmp_path, agents={"accounts": ACCOUNTS},
                                                   web={"max_request_bytes": 64 * 1024})
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield core, runner, carrier, http
    await runner.close()
    await core.close()


async def audit_entries(runner):
    audit = open_audit(runner.parts.settings)
    try:
        return [e for e in await audit.entries(limit=500) if e.action.startswith("campaign_")]
    finally:
        await audit.close()


async def test_supervisor_runs_a_campaign_end_to_end(gw):
    core, runner, carrier, http = gw
    url, sam = runner.url, bearer("sam")
    async with http.post(f"{url}/api/campaigns", headers=sam,
                         json={"name": "flu-shots", "sms_first": False, "calls_per_minute": 5,
                               "timezone": "America/New_York"}) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert body["state"] == "draft" and body["settings"]["calls_per_minute"] == 5
    csv = customers("C001", "C002") + "bad-row,+1,,,,\n"
    async with http.post(f"{url}/api/campaigns/flu-shots/contacts", headers={**sam, "Content-Type": "text/csv"},
                         data=csv) as resp:
        assert resp.status == 200
        report = await resp.json()
        assert (report["added"], report["rejected"]) == (2, 1) and "line 4" in report["errors"][0]
    async with http.post(f"{url}/api/campaigns/flu-shots/start", headers=sam) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "running"
    assert await runner.parts.campaigns.run_once(T0)
    assert sorted(carrier.numbers()) == sorted([CUSTOMERS["C001"], CUSTOMERS["C002"]])
    await carrier.fail(CUSTOMERS["C001"], "busy")
    assert await runner.parts.campaigns.run_once(T0.replace(minute=1))
    async with http.get(f"{url}/api/campaigns/flu-shots/attempts?ref=c001", headers=sam) as resp:
        attempts = (await resp.json())["attempts"]
        assert [(a["n"], a["kind"], a["outcome"]) for a in attempts] == [(1, "call", "busy")]
    async with http.get(f"{url}/api/campaigns/flu-shots", headers=sam) as resp:
        status = await resp.json()
        assert status["contacts"] == {"pending": 1, "active": 1} and status["outcomes"] == {"busy": 1, "calling": 1}
    async with http.post(f"{url}/api/campaigns/flu-shots/pause", headers=sam) as resp:
        assert (await resp.json())["state"] == "paused"
    async with http.get(f"{url}/api/campaigns", headers=sam) as resp:
        assert [c["name"] for c in (await resp.json())["campaigns"]] == ["flu-shots"]
    ops = [e.detail["op"] for e in await audit_entries(runner)]
    assert ops == ["list", "pause", "status", "attempts", "start", "import", "create"]  # newest first


async def test_who_may_do_what(gw):
    core, runner, carrier, http = gw
    url = runner.url
    async with http.get(f"{url}/api/campaigns") as resp:
        assert resp.status == 401
    async with http.post(f"{url}/api/campaigns", headers=bearer("alice"), json={"name": "mine"}) as resp:
        assert resp.status == 403 and "supervisors and admins" in (await resp.json())["error"]
    async with http.post(f"{url}/api/dnc", headers=bearer("sam"), json={"number": "+1 (555) 000-1234"}) as resp:
        assert resp.status == 201 and (await resp.json())["added"] is True
    assert await core.engine.services.policy.dnc.contains("+15550001234")
    async with http.delete(f"{url}/api/dnc/+15550001234", headers=bearer("sam")) as resp:
        assert resp.status == 403 and "only an admin" in (await resp.json())["error"]
    async with http.get(f"{url}/api/dnc", headers=bearer("sam")) as resp:
        assert [e["number"] for e in (await resp.json())["entries"]] == ["+15550001234"]
    async with http.delete(f"{url}/api/dnc/+15550001234", headers=bearer("ada")) as resp:
        assert resp.status == 200 and (await resp.json())["removed"] is True
    assert not await core.engine.services.policy.dnc.contains("+15550001234")
    entries = await audit_entries(runner)
    assert [(e.actor, e.action) for e in reversed(entries)] == [
        ("alice", "campaign_refused"), ("sam", "campaign_dnc_add"), ("sam", "campaign_refused"),
        ("sam", "campaign_dnc_list"), ("ada", "campaign_dnc_remove")]
    assert all("5550001234" not in str(e.detail) for e in entries)  # the last four digits only


async def test_bad_requests_are_refused_clearly(gw):
    core, runner, carrier, http = gw
    url, sam = runner.url, bearer("sam")
    cases = [
        ({"name": "Bad Name!"}, "lower-case letters"),
        ({"name": "x", "calls_per_minute": 0}, "calls_per_minute must be 1 to 600"),
        ({"name": "x", "timezone": "Mars/Base"}, "unknown time zone"),
        ({"name": "x", "journey": "nope"}, "no journey named 'nope'"),
        ({"name": "x", "dial_everyone": True}, "unknown campaign setting"),
        ({"name": "x", "quiet_start": "25:00"}, "quiet_start must be HH:MM"),
    ]
    for body, message in cases:
        async with http.post(f"{url}/api/campaigns", headers=sam, json=body) as resp:
            assert resp.status == 400 and message in (await resp.json())["error"], body
    async with http.post(f"{url}/api/campaigns", headers={**sam, "Content-Type": "application/json"},
                         data=b"[1, 2") as resp:
        assert resp.status == 400
    async with http.post(f"{url}/api/campaigns/nosuch/start", headers=sam) as resp:
        assert resp.status == 404
    async with http.post(f"{url}/api/campaigns", headers=sam, json={"name": "big"}) as resp:
        assert resp.status == 201
    big = "id,phone\n" + "".join(f"r{i},+1555{i:07d}\n" for i in range(10000))  # over the size bound
    async with http.post(f"{url}/api/campaigns/big/contacts", headers=sam, data=big) as resp:
        assert resp.status == 413
    async with http.get(f"{url}/api/campaigns/big/attempts?limit=100000", headers=sam) as resp:
        assert resp.status == 400
    async with http.get(f"{url}/healthz") as resp:
        assert resp.status == 200  # the server is still up


async def test_a_signed_in_supervisor_is_not_driven_from_another_site(gw):
    core, runner, carrier, http = gw
    await sign_in(http, runner.url, "sam")
    async with http.get(f"{runner.url}/api/campaigns") as resp:
        assert resp.status == 200  # the session cookie works
    async with http.post(f"{runner.url}/api/campaigns", json={"name": "csrf"},
                         headers={"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403
    assert await runner.parts.campaign_admin.store.get("csrf") is None
