"""The agent access model without a web server: tokens and their hashes, accounts from the
configuration, the accounts file and old plain-text tokens, the one authorization function,
routing by queue, and the sign-in throttle."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from gateway.agents.access import ConversationFacts, Permission, authorize
from gateway.agents.accounts import (
    MAX_WAITING_CHECKS,
    AccountBook,
    AccountError,
    AccountsFile,
    Principal,
    Role,
    SignInBusy,
)
from gateway.agents.registry import AgentRegistry
from gateway.agents.throttle import SignInThrottle, ThrottleLimits
from gateway.agents.tokens import (
    MIN_TOKEN_CHARS,
    TokenError,
    account_of,
    hash_token,
    new_token,
    parse_hash,
    token_matches,
)
from gateway.config import ConfigError, load_settings

LONG = "x" * MIN_TOKEN_CHARS


def settings(tmp_path: Path, **agents: object):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), "agents": agents})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------- tokens
def test_token_names_its_account_and_only_the_right_one_matches_its_hash():
    token = new_token("alice")
    assert account_of(token) == "alice" and len(token) >= 43 + 6
    stored = hash_token(token)
    assert stored.startswith("scrypt$14$8$1$") and token.split(".")[1] not in stored
    assert hash_token(token) != stored  # salted
    parsed = parse_hash(stored, "alice")
    assert token_matches(token, parsed)
    assert not token_matches(token[:-1] + ("A" if token[-1] != "A" else "B"), parsed)
    assert not token_matches("alice.short", parsed)
    assert account_of("no-dot-here") == "" and account_of("Bad Name.x") == ""


def test_a_hand_made_hash_is_refused_with_the_account_named_and_its_cost_bounded():
    for bad in ("", "sha256$abc", "scrypt$14$8$1$!!$??", "scrypt$30$8$1$" + "A" * 22 + "$" + "A" * 43,
                "scrypt$14$8$1$AAAA$" + "A" * 43):
        with pytest.raises(TokenError, match="alice"):
            parse_hash(bad, "alice")


# ---------------------------------------------------------------------------------- accounts
def test_configured_accounts_have_roles_and_queues(tmp_path):
    book = AccountBook(settings(tmp_path, accounts={
        "alice": {"role": "agent", "queues": ["Billing", "support"], "token_hash": hash_token(new_token("alice"))},
        "sam": {"role": "supervisor", "token_hash": hash_token(new_token("sam"))}}))
    alice = book.get("alice")
    assert alice is not None and alice.principal == Principal("alice", Role.AGENT, frozenset({"billing", "support"}))
    assert book.get("sam").role is Role.SUPERVISOR and book.get("admin") is None
    assert book.generated_token_path is None and not (tmp_path / "agent-token").exists()


def test_bad_accounts_refuse_the_start_without_repeating_a_token(tmp_path):
    with pytest.raises(AccountError, match="token_hash of agent account 'alice'"):
        AccountBook(settings(tmp_path, accounts={"alice": {"token_hash": "plain-text-secret-1234567890abcdef"}}))
    with pytest.raises(ConfigError, match="agents.accounts.alice.role"):
        AccountBook(settings(tmp_path, accounts={"alice": {"role": "boss", "token_hash": hash_token(LONG)}}))
    with pytest.raises(AccountError) as short:
        AccountBook(settings(tmp_path, tokens={"tok-alice": "alice"}))
    assert "alice" in str(short.value) and "32" in str(short.value) and "tok-alice" not in str(short.value)


def test_long_plain_tokens_still_sign_in_as_agents_of_every_queue(tmp_path, caplog):
    token = "legacy-" + "k" * 40
    with caplog.at_level(logging.WARNING):
        book = AccountBook(settings(tmp_path, tokens={token: "carol"}))
    assert any("agents.tokens" in r.getMessage() and "carol" in r.getMessage() for r in caplog.records)
    assert not any(token in r.getMessage() for r in caplog.records)
    account = asyncio.run(book.check(token))
    assert account is not None and account.name == "carol" and account.queues == frozenset({"*"})
    assert asyncio.run(book.check("legacy-" + "k" * 39 + "j")) is None


def test_embedded_default_generates_one_admin_token_in_a_private_file(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        book = AccountBook(settings(tmp_path))
    path = tmp_path / "agent-token"
    token = path.read_text()
    assert book.generated_token_path == path and path.stat().st_mode & 0o777 == 0o600
    assert account_of(token) == "admin" and len(token) >= MIN_TOKEN_CHARS
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert not any(token.split(".")[1] in r.getMessage() for r in caplog.records)
    admin = asyncio.run(book.check(token))
    assert admin is not None and admin.role is Role.ADMIN
    assert AccountBook(settings(tmp_path)).generated_token_path == path and path.read_text() == token  # kept
    # once accounts exist the generated token is gone (file removed at the next start)
    AccountsFile(tmp_path / "agents.json").add("alice", Role.AGENT, frozenset({"billing"}))
    book = AccountBook(settings(tmp_path))
    assert book.get("admin") is None and not path.exists()


def test_accounts_file_is_private_reloaded_and_rotation_ends_the_old_token(tmp_path):
    clock = Clock()
    file = AccountsFile(tmp_path / "agents.json")
    token = file.add("alice", Role.AGENT, frozenset({"billing"}))
    assert (tmp_path / "agents.json").stat().st_mode & 0o777 == 0o600
    assert token.split(".")[1] not in (tmp_path / "agents.json").read_text()
    book = AccountBook(settings(tmp_path), clock=clock)
    assert asyncio.run(book.check(token)).name == "alice"
    new = file.rotate("alice")
    os.utime(tmp_path / "agents.json", ns=(1, 1))  # a change within the same clock tick is seen too
    clock.now += 3
    assert asyncio.run(book.check(token)) is None  # remembered check dropped: the hash changed
    assert asyncio.run(book.check(new)).name == "alice"
    file.remove("alice")
    clock.now += 3
    assert book.get("alice") is None and asyncio.run(book.check(new)) is None
    with pytest.raises(AccountError, match="already exists"):
        file.add("bob", Role.AGENT, frozenset()) and file.add("bob", Role.AGENT, frozenset())


async def test_a_flood_of_checks_is_turned_away_not_queued_without_end(tmp_path):
    book = AccountBook(settings(tmp_path, accounts={"alice": {"token_hash": hash_token(new_token("alice"))}}))
    results = await asyncio.gather(*[book.check(f"alice.{i:040d}") for i in range(MAX_WAITING_CHECKS + 8)],
                                   return_exceptions=True)
    assert sum(isinstance(r, SignInBusy) for r in results) == 8
    assert all(r is None for r in results if not isinstance(r, SignInBusy))


def test_a_name_in_the_configuration_and_the_file_refuses_the_start(tmp_path):
    AccountsFile(tmp_path / "agents.json").add("alice", Role.AGENT, frozenset())
    with pytest.raises(AccountError, match="both"):
        AccountBook(settings(tmp_path, accounts={"alice": {"token_hash": hash_token(LONG)}}))


# ---------------------------------------------------------------------------------- authorization
def test_agents_read_their_queues_and_assignments_supervisors_everything():
    alice = Principal("alice", Role.AGENT, frozenset({"billing"}))
    bob = Principal("bob", Role.AGENT, frozenset({"orders"}))
    anyq = Principal("carol", Role.AGENT, frozenset({"*"}))
    sam = Principal("sam", Role.SUPERVISOR)
    root = Principal("root", Role.ADMIN)
    billing = ConversationFacts("c1", "billing")
    read = Permission.READ_CONVERSATION
    assert authorize(alice, read, billing) and authorize(sam, read, billing) and authorize(anyq, read, billing)
    refused = authorize(bob, read, billing)
    assert not refused and "bob" in refused.reason and "orders" in refused.reason
    assert authorize(bob, read, ConversationFacts("c1", "billing", frozenset({"bob"})))  # routed to him
    assert not authorize(alice, read, ConversationFacts("c2", ""))  # never transferred: not an agent's
    assert not authorize(anyq, read, ConversationFacts("c2", ""))
    assert not authorize(alice, read, None)
    assert [bool(authorize(p, Permission.READ_AUDIT)) for p in (alice, sam, root)] == [False, False, True]
    assert [bool(authorize(p, Permission.READ_OUTBOX)) for p in (alice, sam, root)] == [False, True, True]


def test_registry_routes_only_to_who_may_take_the_queue_agents_of_it_first():
    now = [0.0]
    reg = AgentRegistry(clock=lambda: now[0])
    reg.update("alice", node="n", skills={"billing"}, languages={"en"}, available=True, queues={"billing"})
    now[0] = 1
    reg.update("bob", node="n", skills={"support"}, languages={"en", "es"}, available=True, queues={"orders", "support"})
    reg.update("carol", node="n", skills={"billing"}, languages={"fr"}, available=True, queues={"billing"})
    reg.update("sam", node="n", skills=set(), languages={"en"}, available=True, role=Role.SUPERVISOR)
    assert reg.choose("billing", ("billing",), "en") == "alice"
    assert reg.choose("support", (), "es-MX") == "bob"
    assert reg.choose("billing", ("billing",), "en") == "alice"  # the language before the load
    assert reg.choose("billing", ("billing",)) == "carol"  # alice has two: the least busy of the queue
    assert reg.choose("lending") == "sam"  # nobody serves it: the supervisor who is available
    reg.update("sam", node="n", skills=set(), languages={"en"}, available=False, role=Role.SUPERVISOR)
    assert reg.choose("lending") == ""  # and never an agent of another queue
    reg.update("alice", node="n", skills={"billing"}, languages={"en"}, available=False, queues={"billing"})
    reg.update("carol", node="n", skills={"billing"}, languages={"fr"}, available=False, queues={"billing"})
    assert reg.choose("billing", ("billing",), "en") == ""  # bob is free but serves orders and support


# ---------------------------------------------------------------------------------- throttle
def test_throttle_closes_a_guessing_address_and_pauses_an_account_briefly():
    clock = Clock()
    limits = ThrottleLimits(per_address=3, window_seconds=600, per_account=5, account_pause_seconds=60)
    throttle = SignInThrottle(limits, clock=clock)
    for _ in range(2):
        assert throttle.failed("10.0.0.1", "alice").allowed
    closed = throttle.failed("10.0.0.1", "alice")
    assert not closed.allowed and closed.why == "address" and closed.retry_after == 600
    assert throttle.check("10.0.0.2", "alice").allowed  # alice elsewhere: still fine
    throttle.failed("10.0.0.2", "alice")
    paused = throttle.failed("10.0.0.3", "alice")
    assert not paused.allowed and paused.why == "account" and paused.retry_after == 60
    assert not throttle.check("10.0.0.9", "alice").allowed  # the account pauses for everyone ...
    assert throttle.check("10.0.0.9", "bob").allowed  # ... other accounts do not
    clock.now += 61
    assert throttle.check("10.0.0.9", "alice").allowed  # the honest agent waited a minute at most
    assert not throttle.check("10.0.0.1").allowed  # the guesser's address stays closed ...
    clock.now += 540
    assert throttle.check("10.0.0.1").allowed  # ... until its failures leave the window
    for host in ("2001:db8::1", "2001:db8::2"):  # one IPv6 /64 is one address
        throttle.failed(host)
    assert throttle.failed("2001:db8::ffff").why == "address" and not throttle.check("2001:db8::9").allowed
    assert throttle.check("2001:db8:0:1::1").allowed and throttle.check("::ffff:10.0.0.7").allowed
