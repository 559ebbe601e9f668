"""Signed, expiring, single-use follow-up links.

A link token carries ``(conversation_id, purpose, nonce, expiry)`` as compact JSON, base64url
encoded, followed by an HMAC-SHA256 of that text under the gateway's link secret::

    <base64url(payload)>.<base64url(hmac_sha256(secret, base64url(payload)))>

Verification is constant-time (``hmac.compare_digest``). A token is refused when it is
malformed, its signature does not match (forged or altered), it has expired, or its nonce was
already used. Use is recorded in a small SQLite table in the data directory, so a used link
stays used across restarts; with the Redis context backend it is recorded in Redis instead
(``SET NX`` until the link's expiry), so a link used on one gateway node is used on all.

The same signer also makes long-lived, reusable *references* (``kind="ref"``): the chat's
returning-customer cookie carries one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 1024
"""Longest token accepted; a real one is about 200 characters."""

SECRET_FILE = "link-secret"
"""Name of the generated secret kept in the data directory when none is configured."""


REDIS_KEY_PREFIX = "voicegw:link-used:"
REDIS_TIMEOUT_S = 2.0
"""A Redis that does not answer in this time refuses the link (``unavailable``) rather than
letting a link be used twice."""


class LinkRefused(Exception):
    """A token cannot be honoured. ``reason`` is one of forged, expired, used, malformed,
    unavailable (the shared record of used links cannot be reached)."""

    def __init__(self, reason: str, detail: str = "", token_id: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.token_id = token_id

    @property
    def status(self) -> int:
        """HTTP status for the refusal page: 410 Gone for expired or used, 503 when the record
        of used links is unreachable, 403 otherwise."""
        if self.reason == "unavailable":
            return 503
        return 410 if self.reason in ("expired", "used") else 403


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token says."""

    conversation_id: str
    purpose: str
    nonce: str
    expires_at: float
    kind: str = "link"
    customer_id: str = ""
    session: str = ""
    """The channel session a reference belongs to (the chat cookie): what it proved stays with it."""
    proof: str = ""
    """``phone`` when the link was sent by SMS to the phone on file: opening it proves that phone."""

    @property
    def token_id(self) -> str:
        """The public identifier of the token (its nonce), safe to log."""
        return self.nonce


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_secret(configured: str, data_dir: Path) -> bytes:
    """The configured secret, or one generated once and kept (mode 0600) in ``data_dir``."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{SECRET_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(secrets.token_bytes(32).hex(), encoding="ascii")
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)  # atomic: fails if another process created the secret first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class RedisUsedLinks:
    """Used nonces in Redis, shared by every gateway node; each key expires with its link."""

    def __init__(self, url: str) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)

    def is_used(self, nonce: str) -> bool:
        try:
            return bool(self._redis.exists(REDIS_KEY_PREFIX + nonce))
        except self._errors as exc:
            raise LinkRefused("unavailable", f"used-link record unreachable ({type(exc).__name__})") from None

    def mark(self, claims: "LinkClaims", now: float) -> bool:
        """Record the nonce; False when it was already recorded."""
        ttl = max(int(claims.expires_at - now) + 60, 60)
        try:
            return bool(self._redis.set(REDIS_KEY_PREFIX + claims.nonce,
                                        f"{claims.conversation_id}|{claims.purpose}|{now:.0f}", nx=True, ex=ttl))
        except self._errors as exc:
            raise LinkRefused("unavailable", f"used-link record unreachable ({type(exc).__name__})") from None

    def close(self) -> None:
        self._redis.close()


class LinkSigner:
    """Issues and verifies tokens; remembers used nonces in ``used_db`` (SQLite) or, given
    ``used_redis_url``, in Redis for every node."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_seconds: float,
        used_db: Path | None = None,
        used_redis_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("link secret must be at least 16 bytes")
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._redis = RedisUsedLinks(used_redis_url) if used_redis_url else None
        if used_db is not None and self._redis is None:
            used_db.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(used_db), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives a process crash; a power cut may lose the last writes
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS used_links (nonce TEXT PRIMARY KEY, conversation_id TEXT,"
                " purpose TEXT, used_at REAL)"
            )
        self._used_memory: set[str] = set()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, conversation_id: str, purpose: str, *, ttl_seconds: float | None = None,
              kind: str = "link", customer_id: str = "", session: str = "", proof: str = "") -> str:
        """A new token for ``purpose`` in ``conversation_id`` (naming the customer when known,
        the channel session it belongs to, and what delivering it proves)."""
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        payload = {
            "c": conversation_id,
            "p": purpose,
            "n": secrets.token_urlsafe(12),
            "e": int(self._clock() + ttl),
            "k": kind,
        }
        if customer_id:
            payload["u"] = customer_id
        if session:
            payload["s"] = session
        if proof:
            payload["x"] = proof
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, *, kind: str = "link", check_used: bool = True) -> LinkClaims:
        """The token's claims, or :class:`LinkRefused` saying why not."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise LinkRefused("malformed", "not a gateway link")
        body, mac = token.split(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(body).encode("ascii")):
            raise LinkRefused("forged", "signature does not match")
        try:
            payload = json.loads(_unb64(body))
            claims = LinkClaims(
                conversation_id=str(payload["c"]),
                purpose=str(payload["p"]),
                nonce=str(payload["n"]),
                expires_at=float(payload["e"]),
                kind=str(payload.get("k", "link")),
                customer_id=str(payload.get("u", "")),
                session=str(payload.get("s", "")),
                proof=str(payload.get("x", "")),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise LinkRefused("malformed", f"payload unreadable ({type(exc).__name__})") from None
        if claims.kind != kind:
            raise LinkRefused("forged", f"a {claims.kind} token used as a {kind}", claims.nonce)
        if self._clock() >= claims.expires_at:
            raise LinkRefused("expired", "link has expired", claims.nonce)
        if check_used and self.is_used(claims.nonce):
            raise LinkRefused("used", "link was already used", claims.nonce)
        return claims

    def is_used(self, nonce: str) -> bool:
        """True once :meth:`consume` recorded ``nonce``."""
        if self._redis is not None:
            return self._redis.is_used(nonce)
        with self._lock:
            if self._db is None:
                return nonce in self._used_memory
            row = self._db.execute("SELECT 1 FROM used_links WHERE nonce = ?", (nonce,)).fetchone()
            return row is not None

    def consume(self, token: str, *, kind: str = "link") -> LinkClaims:
        """Verify and mark used in one step; a second call for the same token is refused."""
        claims = self.verify(token, kind=kind, check_used=False)
        if self._redis is not None:
            if not self._redis.mark(claims, self._clock()):
                raise LinkRefused("used", "link was already used", claims.nonce)
            return claims
        with self._lock:
            if self._db is None:
                if claims.nonce in self._used_memory:
                    raise LinkRefused("used", "link was already used", claims.nonce)
                self._used_memory.add(claims.nonce)
                return claims
            try:
                self._db.execute(
                    "INSERT INTO used_links (nonce, conversation_id, purpose, used_at) VALUES (?,?,?,?)",
                    (claims.nonce, claims.conversation_id, claims.purpose, self._clock()),
                )
            except sqlite3.IntegrityError:
                raise LinkRefused("used", "link was already used", claims.nonce) from None
        return claims

    def close(self) -> None:
        """Close the used-nonce database."""
        if self._redis is not None:
            self._redis.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
