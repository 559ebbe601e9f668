"""Levels of assurance: what each signal proves about the party on a channel, and for how long.

A conversation can surface on several channels, but what was *proven* belongs to the channel
session that proved it, never to the conversation as a whole. Each session (one call, one chat
browser, one SMS thread) has an id the core hands out in ``Opened.session_id``; the channel
passes it back with every event. The ledger below keeps, per session, the strongest grant it
holds, and the other trust state a conversation needs (an offered call, a callback the gateway
placed, a one-time code sent to the phone on file). ``docs/trust.md`` is the policy in words.

- ``CLAIM``: a caller ID, an SMS sender, a conversation id or customer cookie: context may follow
  (the journey's place, a greeting by first name), nothing else.
- ``PHONE``: a call the gateway itself placed to the number on file, the gateway's own SMS thread
  to it, or (when configured) a STIR/SHAKEN "A" attestation checked by the PBX on that number.
- ``IDENTITY``: a passed knowledge check (PIN or date of birth), a one-time code sent to the phone
  on file, a signed link sent to it, or the carried verification of a verified chat whose
  customer accepted a call to the number on file.

The ledger lives in ``record.trust`` (plain JSON, never redacted: it holds no free text, only
hashes, numbers on file and times) so every node reads the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from gateway.context.store import ConversationRecord


class Assurance(IntEnum):
    """How sure the gateway is that the party on a session is the conversation's customer."""

    NONE = 0
    CLAIM = 1
    PHONE = 2
    IDENTITY = 3


REQUIREMENTS: dict[str, Assurance] = {"phone": Assurance.PHONE, "identity": Assurance.IDENTITY}
"""What a journey's ``requires:`` names, as the level a session must hold."""

WITHHELD_CALLER_IDS = frozenset({"anonymous", "unknown", "unavailable", "private", "restricted", "withheld",
                                 "blocked", "invalid", "null", "none"})
MIN_CALLER_ID_DIGITS = 7
"""Shorter numbers are extensions, short codes or junk: never looked up, never resumed (two
people behind one switchboard extension are not one customer)."""
MAX_CALLER_ID_DIGITS = 15  # E.164
_CALLER_ID_SEPARATORS = re.compile(r"[\s().\-/]")

CODE_DIGITS = 6
"""One-time codes: 6 digits with 3 tries each is a 3-in-a-million guess per code (journeys ask
for ``digits: [6, 6]``)."""

SESSION_ID_BYTES = 12


def caller_claim(raw: str) -> str:
    """The caller ID as a claim worth looking up: ``+`` and digits, or '' when withheld,
    anonymous, too short or malformed (such a caller is a stranger: nothing resumes)."""
    text = (raw or "").strip()
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    if text.lower() in WITHHELD_CALLER_IDS:
        return ""
    text = _CALLER_ID_SEPARATORS.sub("", text)
    digits = text[1:] if text.startswith("+") else text
    if not digits.isdigit() or not MIN_CALLER_ID_DIGITS <= len(digits) <= MAX_CALLER_ID_DIGITS:
        return ""
    if set(digits) == {"0"}:
        return ""
    return text


def same_number(a: str, b: str) -> bool:
    """True when two phone numbers are the same line: the same digits once separators and the
    leading + are dropped (strict on purpose: a security decision never guesses a country code)."""
    da, db = re.sub(r"\D", "", a or ""), re.sub(r"\D", "", b or "")
    return len(da) >= MIN_CALLER_ID_DIGITS and da == db


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


@dataclass(frozen=True)
class Grant:
    """What one session proved: its level, how, for which customer, until when."""

    level: Assurance
    method: str
    customer_id: str
    channel: str
    at: float
    expires_at: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = self.level.name.lower()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Grant":
        return cls(level=Assurance[str(data["level"]).upper()], method=str(data["method"]),
                   customer_id=str(data.get("customer_id", "")), channel=str(data.get("channel", "")),
                   at=float(data["at"]), expires_at=float(data["expires_at"]))


@dataclass(frozen=True)
class Party:
    """The party on one channel session, as the dialog engine sees it for one event."""

    session_id: str
    channel: str
    level: Assurance
    grant: Grant | None = None

    def holds(self, requirement: str) -> bool:
        """True when this party meets a journey's ``requires:`` (an unknown name is never met)."""
        need = REQUIREMENTS.get(requirement)
        return need is not None and self.level >= need

    @property
    def verified(self) -> bool:
        return self.level >= Assurance.IDENTITY


def _hash_code(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


class Ledger:
    """The trust state of one conversation (``record.trust``), read and changed for one event."""

    def __init__(self, record: ConversationRecord) -> None:
        self.record = record
        self.data = record.trust

    # -- grants ----------------------------------------------------------------------------
    def grant_of(self, session_id: str, now: float) -> Grant | None:
        """The session's grant while it is valid and names the conversation's customer."""
        raw = self.data.get("grants", {}).get(session_id) if session_id else None
        if not raw:
            return None
        grant = Grant.from_dict(raw)
        if grant.expires_at <= now or not grant.customer_id or grant.customer_id != self.record.customer_id:
            return None
        return grant

    def party(self, session_id: str, channel: str, now: float) -> Party:
        grant = self.grant_of(session_id, now)
        if grant is not None:
            return Party(session_id, channel, grant.level, grant)
        return Party(session_id, channel, Assurance.CLAIM if self.record.customer_id else Assurance.NONE)

    def grant(self, party: Party, level: Assurance, method: str, now: float, ttl_seconds: float) -> Party:
        """Record that ``party`` proved ``level`` by ``method``; never lowers a valid grant."""
        current = self.grant_of(party.session_id, now)
        if current is not None and current.level > level:
            return party
        grant = Grant(level, method, self.record.customer_id, party.channel, now, now + ttl_seconds)
        self.data.setdefault("grants", {})[party.session_id] = grant.as_dict()
        if level >= Assurance.IDENTITY:
            self.record.verified["identity"] = now
        return Party(party.session_id, party.channel, level, grant)

    def sessions(self, now: float) -> list[dict[str, Any]]:
        """Every valid grant, newest first (for the screen-pop)."""
        out = []
        for sid in self.data.get("grants", {}):
            grant = self.grant_of(sid, now)
            if grant is not None:
                out.append(grant.as_dict())
        return sorted(out, key=lambda g: g["at"], reverse=True)

    def touch(self, session_id: str) -> None:
        """Remember the session that spoke last (its grants are the screen-pop's "verified")."""
        if session_id:
            self.data["last_session"] = session_id

    @property
    def last_session(self) -> str:
        return str(self.data.get("last_session", ""))

    # -- offered calls -----------------------------------------------------------------------
    def offer_call(self, session_id: str, number: str, now: float, ttl_seconds: float) -> None:
        """The core offered ``session_id`` a call to ``number`` (the number on file)."""
        self.data["offer"] = {"session": session_id, "number": number, "expires_at": now + ttl_seconds}

    def take_offer(self, session_id: str, now: float) -> dict[str, Any] | None:
        """The pending offer made to this session (used up), or None."""
        offer = self.data.get("offer")
        if not offer or offer.get("session") != session_id or float(offer.get("expires_at", 0)) <= now:
            return None
        del self.data["offer"]
        return dict(offer)

    def hold_offer(self, offer: dict[str, Any]) -> None:
        """Put an offer back (the customer is confirming another number)."""
        self.data["offer"] = offer

    # -- callbacks the gateway places -------------------------------------------------------
    def expect_callback(self, number: str, *, carries: Assurance, now: float, ttl_seconds: float) -> str:
        """A nonce for a call the gateway is about to place to ``number``; the answered call
        presents it and gets ``carries`` (bounded to what the call to that number proves)."""
        nonce = secrets.token_urlsafe(16)
        pending = self.data.setdefault("callbacks", {})
        for key in [k for k, v in pending.items() if float(v.get("expires_at", 0)) <= now]:
            del pending[key]
        pending[_hash_code(nonce, "callback")] = {"number": number, "carries": carries.name.lower(),
                                                  "expires_at": now + ttl_seconds}
        return nonce

    def take_callback(self, nonce: str, now: float) -> tuple[str, Assurance] | None:
        """(number called, level carried) for a callback nonce the gateway issued; used once."""
        if not nonce:
            return None
        pending = self.data.get("callbacks", {})
        entry = pending.pop(_hash_code(nonce, "callback"), None)
        if not entry or float(entry.get("expires_at", 0)) <= now:
            return None
        return str(entry["number"]), Assurance[str(entry["carries"]).upper()]

    # -- one-time codes ----------------------------------------------------------------------
    def new_code(self, session_id: str, now: float, ttl_seconds: float) -> str:
        """A fresh code for ``session_id`` (replacing any earlier one); only its hash is kept."""
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        salt = secrets.token_hex(8)
        self.data["code"] = {"session": session_id, "salt": salt, "hash": _hash_code(code, salt),
                             "expires_at": now + ttl_seconds, "tries": 0}
        return code

    def check_code(self, session_id: str, entered: str, now: float, max_tries: int) -> str:
        """``ok``, ``wrong`` (tries left), ``void`` (expired, used up, or another session's)."""
        code = self.data.get("code")
        if not code or code.get("session") != session_id or float(code.get("expires_at", 0)) <= now:
            self.data.pop("code", None)
            return "void"
        if hmac.compare_digest(code["hash"], _hash_code(entered.strip(), code["salt"])):
            del self.data["code"]
            return "ok"
        code["tries"] = int(code.get("tries", 0)) + 1
        if code["tries"] >= max_tries:
            del self.data["code"]
            return "void"
        return "wrong"
