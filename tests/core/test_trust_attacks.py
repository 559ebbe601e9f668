"""The attacks on cross-channel trust (docs/trust.md), played against the real core on the real SQLite store (and Redis for
the lockout across nodes), through the chat socket and the terminal where a customer would go.
Each one must fail; the honest customer beside the attacker must still be served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Ask, OfferCall, Originate, Say, ScreenPop, SendFollowUp, Transfer
from gateway.core.events import CallAccepted, CallStarted, ChatMessage, ChatStarted, DtmfPressed, UserSaid
from gateway.core.trust import caller_claim
from gateway.digital.outbox import OUTBOX_FILE, Outbox
from tests.digital.helpers import recv_until, start
from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

ALICE_PHONE = "+15551234567"
ALICE_ACCOUNT, ALICE_PIN, ALICE_DOB = "12345678", "4321", "14/03/1985"
ALICE_BILL = ("99.97", "ninety nine dollars", "Premium sports")


def settings_for(tmp_path: Path, **overrides: Any):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), **overrides})


PLACED: list[Originate] = []
"""Every call the telephony channel below was asked to place (tests clear it when they read it)."""


async def _telephony(conversation_id, action):
    """A telephony channel is there to carry out Originate (the core offers calls only then)."""
    PLACED.append(action)


@pytest.fixture
async def core(tmp_path):
    core = await build_core(settings_for(tmp_path))
    core.register_sink(Originate, _telephony)
    yield core
    await core.close()


def texts(actions) -> str:
    return " | ".join(a.text for a in actions if isinstance(a, (Say, Ask, OfferCall)))


class Party:
    """One channel session of a conversation, driven as its channel would."""

    def __init__(self, core, channel: str, opened) -> None:
        self.core, self.channel, self.opened = core, channel, opened
        self.cid, self.session = opened.conversation_id, opened.session_id

    async def say(self, text: str) -> list:
        event = UserSaid(text, confidence=0.9) if self.channel == "voice" else ChatMessage(text)
        return await self.core.handle(self.cid, event, session_id=self.session)

    async def keys(self, digits: str) -> list:
        out: list = []
        for digit in digits:
            out += await self.core.handle(self.cid, DtmfPressed(digit), session_id=self.session)
        return out


async def chat(core, **kwargs: Any) -> Party:
    return Party(core, "chat", await core.open("chat", event=ChatStarted(), **kwargs))


async def call(core, caller_id: str, **kwargs: Any) -> Party:
    opened = await core.open("voice", caller_id=caller_id, event=CallStarted(caller_id=caller_id), **kwargs)
    return Party(core, "voice", opened)


async def verified_alice_in_billing(core) -> Party:
    alice = await chat(core)
    await alice.say("there's a wrong charge on my bill")
    await alice.say(ALICE_ACCOUNT)
    acts = await alice.say(ALICE_DOB)
    assert "you're verified" in texts(acts) and "99.97" in texts(acts)
    return alice


# --------------------------------------------------------------------------- 1. a caller ID is a claim
async def test_spoofed_caller_id_resumes_the_place_but_not_the_verification(core):
    alice = await verified_alice_in_billing(core)
    attacker = await call(core, ALICE_PHONE)
    assert attacker.opened.resumed and attacker.cid == alice.cid  # context follows the claim...
    heard = texts(attacker.opened.actions)
    assert "Welcome back, Alice" in heard
    assert "already verified" not in heard and not any(x in heard for x in ALICE_BILL)  # ...nothing else
    assert "confirm it's you" in heard
    # the attacker asks for a code: it goes to Alice's phone, never to the caller
    acts = await attacker.say("send me a code")
    sms = [a for a in acts if isinstance(a, SendFollowUp)]
    assert sms and sms[0].to == ALICE_PHONE and sms[0].secret
    assert sms[0].text.split("code is ")[1][:6] not in texts(acts)
    for guess in ("111111", "222222", "333333"):
        acts = await attacker.keys(guess)
        assert not any(x in texts(acts) for x in ALICE_BILL)
    assert any(isinstance(a, Transfer) for a in acts)  # three wrong codes: a person takes over
    # what the log and the screen-pop show: the call is not verified, the chat session was
    pop = [a for a in acts if isinstance(a, ScreenPop)][0].context
    assert pop["verified"] == {} and pop["assurance"]["level"] == "claim"
    assert any(g["channel"] == "chat" and g["method"] == "knowledge" for g in pop["assurance"]["sessions"])
    # Alice's own chat session is still verified: the attacker cost her nothing
    acts = await alice.say("the sports package was charged twice")
    assert "Premium sports package" in texts(acts)


async def test_the_honest_caller_steps_up_with_the_code_sent_to_her_phone(core):
    sent: list[SendFollowUp] = []

    async def sms_sink(cid: str, action: Any) -> None:
        sent.append(action)

    core.register_sink(SendFollowUp, sms_sink)
    alice = await verified_alice_in_billing(core)
    caller = await call(core, ALICE_PHONE)
    await caller.say("a code please")
    code = sent[-1].text.split("code is ")[1][:6]
    acts = await caller.keys(code)
    assert "you're verified" in texts(acts) and "What seems to be wrong" in texts(acts)
    events = await core.store.events(alice.cid)
    logged = [e for e in events if e.kind == "SendFollowUp"]
    assert logged and code not in str(logged[-1].payload)  # the code never reaches the log
    assert code not in str([e.payload for e in events if e.kind == "DtmfPressed"])  # nor the keys


async def test_the_honest_caller_steps_up_with_a_pin_or_birth_date(core):
    await verified_alice_in_billing(core)
    caller = await call(core, ALICE_PHONE)
    await caller.say("PIN")
    acts = await caller.say("March fourteenth nineteen eighty five")
    assert "you're verified" in texts(acts) and "What seems to be wrong" in texts(acts)


@pytest.mark.parametrize("withheld", ["anonymous", "Anonymous", "unknown", "unavailable", "", "0", "1001",
                                      "restricted", "sip:anonymous@anonymous.invalid", "+", "abc"])
async def test_withheld_or_malformed_caller_ids_never_resume(core, withheld):
    first = await call(core, "anonymous")
    await first.say("I have a problem with my bill")
    await first.keys(ALICE_ACCOUNT)
    acts = await first.keys(ALICE_PIN)
    assert "you're verified" in texts(acts)
    second = await call(core, withheld)
    assert not second.opened.resumed and second.cid != first.cid
    heard = texts(second.opened.actions)
    assert "Welcome back" not in heard and "Alice" not in heard and "verified" not in heard


def test_caller_claims():
    assert caller_claim("+1 (555) 123-4567") == "+15551234567"
    assert caller_claim("tel:+15551234567") == "+15551234567"
    assert caller_claim("sip:+15551234567@pbx.example.com;user=phone") == "+15551234567"
    for bad in ("anonymous", "Unavailable", "PRIVATE", "", " ", "0000000", "123", "+1555abc4567", "1" * 16):
        assert caller_claim(bad) == ""


async def test_a_replayed_or_forged_callback_proves_nothing(core):
    alice = await verified_alice_in_billing(core)
    await alice.say("can you call me instead")
    acts = await core.handle(alice.cid, CallAccepted(channel="chat"), session_id=alice.session)
    placed = [a for a in acts if isinstance(a, Originate)][0]
    forged = await call(core, ALICE_PHONE, conversation_id=alice.cid, callback="not-the-nonce")
    assert "already verified" not in texts(forged.opened.actions)
    honest = await call(core, ALICE_PHONE, conversation_id=alice.cid, callback=placed.callback)
    assert "already verified" in texts(honest.opened.actions)  # the pivot keeps the verification
    replay = await call(core, ALICE_PHONE, conversation_id=alice.cid, callback=placed.callback)
    assert "already verified" not in texts(replay.opened.actions)
    kinds = [e.kind for e in await core.store.events(alice.cid)]
    assert kinds.count("CallbackRefused") == 2 and kinds.count("CallbackAnswered") == 1


# --------------------------------------------------------------------------- 2. lockout per customer
async def _wrong_pins(party: Party, times: int) -> list:
    acts: list = []
    for _ in range(times):
        await party.say("my bill is wrong")
        await party.say(ALICE_ACCOUNT)
        acts = await party.say("0000")
    return acts


async def test_guessing_across_conversations_and_channels_locks_the_customer(core):
    # 12 wrong PINs in 4 chats used to let the right one through: now 5 failures lock Alice
    for _ in range(2):
        await _wrong_pins(await chat(core), 2)
    acts = await _wrong_pins(await call(core, "anonymous"), 1)
    assert "paused" in texts(acts) and any(isinstance(a, Transfer) for a in acts)
    guesser = await chat(core)
    await guesser.say("my bill is wrong")
    await guesser.say(ALICE_ACCOUNT)
    acts = await guesser.say(ALICE_PIN)  # the right PIN, while locked
    assert "you're verified" not in texts(acts) and not any(x in texts(acts) for x in ALICE_BILL)
    pop = [a for a in acts if isinstance(a, ScreenPop)][0].context
    transfer = [a for a in acts if isinstance(a, Transfer)][0]
    assert transfer.queue == "security" and pop["assurance"]["locked_until"]
    assert any("locked" in s for s in pop["suggested_next_steps"])
    entries = await core.audit.entries(limit=50)
    assert [e.detail["customer_id"] for e in entries if e.action == "verification_locked"] == ["C001"]
    # another customer is not touched by Alice's lock
    bob = await chat(core)
    await bob.say("my bill is wrong")
    await bob.say("87654321")
    assert "you're verified" in texts(await bob.say("1234"))


async def test_the_locked_customer_still_gets_in_with_a_code_to_her_phone(core):
    sent: list[SendFollowUp] = []

    async def sms_sink(cid: str, action: Any) -> None:
        sent.append(action)

    core.register_sink(SendFollowUp, sms_sink)
    for _ in range(3):
        await _wrong_pins(await chat(core), 2)
    alice = await call(core, ALICE_PHONE)
    acts = await alice.say("there's a wrong charge on my bill")
    assert "paused" in texts(acts) and "code" in texts(acts)
    await alice.say("yes")
    code = sent[-1].text.split("code is ")[1][:6]
    acts = await alice.keys(code)
    assert "you're verified" in texts(acts) and "99 dollars and 97 cents" in texts(acts)


async def test_lockout_holds_across_nodes_on_redis(redis_url, tmp_path):
    settings = settings_for(tmp_path, context={"backend": "redis", "redis_url": redis_url})
    node_a, node_b = await build_core(settings), await build_core(settings)
    try:
        await _wrong_pins(await chat(node_a), 3)
        acts = await _wrong_pins(await call(node_b, "anonymous"), 2)
        assert "paused" in texts(acts)
        late = await chat(node_a)
        await late.say("my bill is wrong")
        await late.say(ALICE_ACCOUNT)
        acts = await late.say(ALICE_PIN)
        assert "you're verified" not in texts(acts) and "paused" in texts(acts)
        assert [e.action for e in await node_b.audit.entries(limit=20)].count("verification_locked") == 1
    finally:
        await node_a.close()
        await node_b.close()


# --------------------------------------------------------------------------- 3. outbound needs authority
async def test_accept_call_without_an_offer_places_no_call(tmp_path, core):
    PLACED.clear()
    placed = PLACED
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm})
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            await recv_until(ws, "ask")
            await ws.send_json({"type": "accept_call", "number": "+1 900 555 0199"})
            say = await recv_until(ws, "say")
            assert "no call offer" in say["text"] and "Calling" not in say["text"]
            await ws.send_json({"type": "accept_call"})
            assert "no call offer" in (await recv_until(ws, "say"))["text"]
        assert placed == []
    finally:
        await runner.close()


async def test_an_unverified_chat_asking_for_a_call_is_verified_first(core):
    anonymous = await chat(core)
    acts = await anonymous.say("can you call me please")
    assert not any(isinstance(a, (OfferCall, Originate)) for a in acts)
    assert "account number" in texts(acts)
    await anonymous.say(ALICE_ACCOUNT)
    acts = await anonymous.say(ALICE_PIN)
    offer = [a for a in acts if isinstance(a, OfferCall)]
    assert "you're verified" in texts(acts) and offer and offer[0].number == ALICE_PHONE


async def test_a_typed_number_needs_verification_confirmation_and_an_allowed_range(core):
    alice = await verified_alice_in_billing(core)
    await alice.say("call me instead")
    acts = await core.handle(alice.cid, CallAccepted(number="+1 900 555 0199", channel="chat"),
                             session_id=alice.session)
    assert "not on your account" in texts(acts) and not any(isinstance(a, Originate) for a in acts)
    acts = await alice.say("yes")
    assert "can't call" in texts(acts) and not any(isinstance(a, Originate) for a in acts)  # premium range
    await alice.say("call me instead")
    await core.handle(alice.cid, CallAccepted(number="+44 20 7946 0958", channel="chat"), session_id=alice.session)
    acts = await alice.say("yes")
    placed = [a for a in acts if isinstance(a, Originate)]
    assert placed and placed[0].number == "+442079460958"
    # a call to a number not on file carries nothing: that phone proves no identity
    other = await call(core, "+442079460958", conversation_id=alice.cid, callback=placed[0].callback)
    assert "already verified" not in texts(other.opened.actions)


async def test_outbound_calls_are_limited_per_conversation(tmp_path):
    core = await build_core(settings_for(tmp_path, outbound={"calls_per_conversation_per_hour": 2}))
    core.register_sink(Originate, _telephony)
    try:
        alice = await verified_alice_in_billing(core)
        results = []
        for _ in range(3):
            await alice.say("call me instead")
            acts = await core.handle(alice.cid, CallAccepted(channel="chat"), session_id=alice.session)
            results.append(any(isinstance(a, Originate) for a in acts))
        assert results == [True, True, False]
        assert "as many calls" in texts(acts) or "any more calls" in texts(acts)
        assert "outbound_call_refused" in [e.action for e in await core.audit.entries(limit=20)]
    finally:
        await core.close()


# --------------------------------------------------------------------------- 4. follow-ups go where the journey says
async def test_password_reset_link_goes_to_the_phone_on_file_never_into_the_chat(tmp_path, core):
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm})
    try:
        frames: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
            await recv_until(ws, "ask", frames)
            for text in ("I forgot my password", ALICE_ACCOUNT, ALICE_PIN):
                await ws.send_json({"type": "message", "text": text})
                await recv_until(ws, "ask", frames)
        assert not [f for f in frames if f["type"] == "followup"]
        assert not any("/l/" in str(f) for f in frames)
        sms = runner.parts.outbox.messages(to=ALICE_PHONE)
        assert len(sms) == 1 and "/l/" in sms[0].body
    finally:
        await runner.close()


# --------------------------------------------------------------------------- the terminal path
def _voicegw_chat(tmp_path: Path, args: list[str], stdin: str) -> str:
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "chat", *args], input=stdin,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_spoofed_caller_id_in_the_terminal(tmp_path):
    out = _voicegw_chat(tmp_path, [], f"my bill is wrong\n{ALICE_ACCOUNT}\n{ALICE_PIN}\n")
    assert "you're verified" in out and "99.97" in out
    out = _voicegw_chat(tmp_path, ["--voice", "--caller-id", ALICE_PHONE], "code\n/dtmf 123456\n")
    assert "Welcome back, Alice" in out and "already verified" not in out
    assert not any(x in out for x in ALICE_BILL)
    assert "sent to the phone ending in 4567" in out and "code is" not in out
    # the code went to Alice's phone (the local outbox stands in for it), never to the terminal
    code = Outbox(tmp_path / OUTBOX_FILE).messages(to=ALICE_PHONE)[0].body.split("code is ")[1][:6]
    assert code not in out


def test_the_honest_caller_in_the_terminal_reads_the_code_on_her_phone(tmp_path):
    _voicegw_chat(tmp_path, [], f"my bill is wrong\n{ALICE_ACCOUNT}\n{ALICE_PIN}\n")
    env = dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "chat", "--voice", "--caller-id", ALICE_PHONE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        def read_until(marker: str) -> str:
            seen = ""
            while marker not in seen:
                line = proc.stdout.readline()
                assert line, f"the terminal ended before {marker!r}: {seen}"
                seen += line
            return seen

        read_until("Say code, or PIN")
        proc.stdin.write("code\n")
        proc.stdin.flush()
        read_until("six digit code")
        code = Outbox(tmp_path / OUTBOX_FILE).messages(to=ALICE_PHONE)[0].body.split("code is ")[1][:6]
        proc.stdin.write(f"/dtmf {code}\n")
        proc.stdin.flush()
        out = read_until("What seems to be wrong")
        assert "you're verified" in out
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


async def test_a_call_is_placed_once_when_two_channels_can_place_it(tmp_path):
    """SIP and AMI (or FreeSWITCH) both enabled: the first channel registered places the call
    the core asks for, the second never dials the customer as well."""
    core = await build_core(settings_for(tmp_path))
    first: list[Originate] = []
    second: list[Originate] = []

    async def sip(cid: str, action: Any) -> None:
        first.append(action)

    async def ami(cid: str, action: Any) -> None:
        second.append(action)

    core.register_sink(Originate, sip)
    core.register_sink(Originate, ami)
    try:
        alice = await verified_alice_in_billing(core)
        await alice.say("call me instead")
        acts = await core.handle(alice.cid, CallAccepted(channel="chat"), session_id=alice.session)
        assert any(isinstance(a, Originate) for a in acts)
        assert len(first) == 1 and second == []
    finally:
        await core.close()
