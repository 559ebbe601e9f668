"""Follow-up links: signing, expiry, single use; the /l/<token> pages over real HTTP, around the
real core (what a page submits lands in the conversation's log)."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from typing import Any

from gateway.core.orchestrator import Orchestrator
from gateway.links import LinkRefused, LinkSigner, load_or_create_secret
from tests.digital.helpers import ALICE, logged, real_gateway


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_round_trip_and_refusals(tmp_path):
    clock = Clock()
    signer = LinkSigner(b"k" * 32, ttl_seconds=600, used_db=tmp_path / "links.db", clock=clock)
    token = signer.issue("conv-1", "upload_document")
    claims = signer.verify(token)
    assert (claims.conversation_id, claims.purpose) == ("conv-1", "upload_document")

    body, mac = token.split(".")
    altered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    for bad, reason in [(altered, "forged"), (body + "." + "x" * len(mac), "forged"),
                        ("garbage", "malformed"), ("", "malformed")]:
        with pytest.raises(LinkRefused) as exc:
            signer.verify(bad)
        assert exc.value.reason == reason and exc.value.status == 403

    other = LinkSigner(b"z" * 32, ttl_seconds=600, clock=clock)
    with pytest.raises(LinkRefused, match="forged"):
        other.verify(token)

    signer.consume(token)
    with pytest.raises(LinkRefused) as exc:
        signer.consume(token)
    assert exc.value.reason == "used" and exc.value.status == 410
    # used survives a restart (SQLite in the data dir)
    again = LinkSigner(b"k" * 32, ttl_seconds=600, used_db=tmp_path / "links.db", clock=clock)
    with pytest.raises(LinkRefused, match="used"):
        again.verify(token)

    late = signer.issue("conv-1", "form")
    clock.now += 601
    with pytest.raises(LinkRefused) as exc:
        signer.verify(late)
    assert exc.value.reason == "expired" and exc.value.status == 410


def test_reference_tokens_are_not_links(tmp_path):
    signer = LinkSigner(b"k" * 32, ttl_seconds=600)
    ref = signer.issue("conv-1", "chat", kind="ref")
    with pytest.raises(LinkRefused, match="forged"):
        signer.verify(ref)  # a chat cookie cannot open a form page
    assert signer.verify(ref, kind="ref").conversation_id == "conv-1"


def test_generated_secret_is_kept(tmp_path):
    first = load_or_create_secret("", tmp_path)
    assert len(first) == 32 and load_or_create_secret("", tmp_path) == first
    assert (tmp_path / "link-secret").stat().st_mode & 0o077 == 0
    assert load_or_create_secret("configured-secret-value", tmp_path) == b"configured-secret-value"


async def _conversation(core: Orchestrator, **slots: Any) -> str:
    """A call from Alice (a claim: her name prefills a page sent to her phone), with ``slots``."""
    opened = await core.open("voice", caller_id=ALICE)
    if slots:
        record = await core.store.get(opened.conversation_id)
        record.slots.update(slots)
        await core.store.save(record)
    return opened.conversation_id


async def _forms(core: Orchestrator, cid: str = "") -> list[dict[str, Any]]:
    """The fields of every form submitted, as the conversation's log keeps them."""
    return [e.payload["fields"] for e in await logged(core, "FormSubmitted", cid)]


async def test_form_link_prefilled_and_lands_in_conversation(tmp_path, caplog):
    async with real_gateway(tmp_path) as (core, runner):
        cid = await _conversation(core)
        url = runner.parts.followups.link_for(cid, "complete_form")
        assert url.startswith(runner.url + "/l/")
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                html = await resp.text()
                assert resp.status == 200
            assert "Alice Martin" in html and 'name="email"' in html
            async with http.post(url, data={"name": "Alice Martin", "email": "alice@example.org"}) as resp:
                assert resp.status == 200
                assert "received your complete form" in await resp.text()
            with caplog.at_level(logging.WARNING, logger="gateway.digital.link_pages"):
                async with http.get(url) as resp:
                    assert resp.status == 410
                    assert "already used" in await resp.text()
                async with http.post(url, data={"name": "again"}) as resp:
                    assert resp.status == 410
        assert any("refused (used" in r.getMessage() for r in caplog.records)
        kinds = [e.kind for e in await core.store.events(cid)]
        assert "LinkOpened" in kinds and kinds.count("FormSubmitted") == 1
        assert (await _forms(core, cid))[0]["email"] == "alice@example.org"
        assert (await core.context(cid))["forms"] == ["complete_form"]


async def test_forged_and_expired_links_refused(tmp_path):
    async with real_gateway(tmp_path, links={"ttl_minutes": 0.0001}) as (core, runner):
        cid = await _conversation(core)
        url = runner.parts.followups.link_for(cid, "complete_form")
        token = url.rsplit("/", 1)[1]
        forged = LinkSigner(b"attacker-secret-0123456789", ttl_seconds=600).issue(cid, "complete_form")
        async with aiohttp.ClientSession() as http:
            for bad in (forged, token[:-3] + "abc", "not-a-token"):
                async with http.get(f"{runner.url}/l/{bad}") as resp:
                    assert resp.status == 403
                    assert "not valid" in await resp.text()
            import asyncio
            await asyncio.sleep(0.05)
            async with http.get(url) as resp:
                assert resp.status == 410
                assert "expired" in await resp.text()
        assert runner.parts.metrics.value("voicegw_links_refused_total", reason="forged") == 2
        assert await _forms(core) == []


async def test_upload_bounded_and_stored(tmp_path):
    async with real_gateway(tmp_path, web={"max_request_bytes": 20_000}) as (core, runner):
        cid = await _conversation(core)
        async with aiohttp.ClientSession() as http:
            big = runner.parts.followups.link_for(cid, "upload_document")
            form = aiohttp.FormData()
            form.add_field("document", b"x" * 30_000, filename="too-big.pdf")
            async with http.post(big, data=form) as resp:
                assert resp.status == 413
            # the link was not used up by the refused upload: a smaller file goes through
            form = aiohttp.FormData()
            form.add_field("document", b"%PDF-1.4 payslip", filename="../../pay slip.pdf")
            form.add_field("note", "March")
            async with http.post(big, data=form) as resp:
                assert resp.status == 200, await resp.text()
        submitted = await _forms(core)
        assert len(submitted) == 1
        stored = tmp_path / submitted[0]["stored_as"]
        assert stored.read_bytes() == b"%PDF-1.4 payslip"
        assert stored.resolve().is_relative_to((tmp_path / "uploads").resolve())
        assert submitted[0]["note"] == "March"


async def test_payment_needs_confirmation(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        cid = await _conversation(core, amount="$42.00")
        url = runner.parts.followups.link_for(cid, "confirm_payment")
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert "$42.00" in await resp.text()
            async with http.post(url, data={"amount": "$42.00"}) as resp:
                assert resp.status == 400
            async with http.post(url, data={"amount": "$42.00", "confirmed": "yes"}) as resp:
                assert resp.status == 200
        assert [f["confirmed"] for f in await _forms(core)] == ["yes"]


def test_templates_fill_slots():
    from gateway.digital.followup import render_template
    assert render_template("dispute_opened", {"case_id": "700001"}).startswith("Your dispute case 700001 is open.")
    assert render_template("dispute_opened", {}).startswith("Your dispute case is open.")
    assert render_template("unknown_template", {}) == "A message about your request:"


async def test_confirm_and_info_pages(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        cid = await _conversation(core, order_id="O-1", order_status_text="has shipped <b>today</b>")
        async with aiohttp.ClientSession() as http:
            track = runner.parts.followups.link_for(cid, "track_order")
            async with http.get(track) as resp:
                html = await resp.text()
            assert "O-1" in html and "has shipped &lt;b&gt;today&lt;/b&gt;" in html  # escaped
            async with http.post(track, data={"seen": "yes"}) as resp:
                assert resp.status == 200
            reset = runner.parts.followups.link_for(cid, "reset_password")
            async with http.get(reset) as resp:
                assert "Did you ask for a password reset?" in await resp.text()
            async with http.post(reset, data={"answer": "maybe"}) as resp:
                assert resp.status == 400
            async with http.post(reset, data={"answer": "no"}) as resp:
                assert resp.status == 200
        assert await _forms(core) == [{"seen": "yes"}, {"answer": "no"}]


async def test_link_submission_bounds(tmp_path):
    async with real_gateway(tmp_path) as (core, runner):
        cid = await _conversation(core)
        url = runner.parts.followups.link_for(cid, "complete_form")
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data={f"f{i}": "x" for i in range(50)}) as resp:
                assert resp.status == 400 and "too many fields" in await resp.text()
            async with http.post(url, data={"note": "x" * 5000}) as resp:
                assert resp.status == 400
            async with http.post(url, data={"name": "Alice"}) as resp:  # the link still works once
                assert resp.status == 200
        assert len(await _forms(core)) == 1
