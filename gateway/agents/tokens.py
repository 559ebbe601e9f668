"""Desktop sign-in tokens: how they look, how they are stored (scrypt), how they are checked.

A token is ``<account>.<secret>``: the account name in front lets a sign-in find the one hash to
check (and the sign-in throttle count failures per account) without trying every account; the
secret is 32 random bytes, base64url (43 characters). Only a hash is ever stored::

    scrypt$<log2 n>$<r>$<p>$<base64url salt>$<base64url digest>

scrypt is slow on purpose (about 40 ms and 16 MiB per check on a 2-core machine): a stolen
accounts file does not give tokens back. Comparisons are constant-time. Nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

MIN_TOKEN_CHARS = 32
"""Shortest token accepted anywhere (at sign-in, and for configured tokens at start): 32
url-safe characters carry about 190 bits, beyond any guessing, online or offline."""

MAX_TOKEN_CHARS = 256
"""Longest token looked at; anything longer is refused before hashing."""

SECRET_BYTES = 32
"""Random bytes in a generated token's secret (43 base64url characters)."""

SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 14, 8, 1
"""scrypt cost: n = 2**14, r = 8 (16 MiB, ~40 ms here); the interactive-login figures of the
scrypt paper, and what Python's documentation and OWASP name as a minimum."""

MAX_LOG2_N, MAX_R, MAX_P = 18, 8, 4
"""Bounds on the parameters of a configured hash, so a hand-made one cannot cost more than
256 MiB and a second or so per check."""

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
"""Account names: lower-case letters, digits, ``_`` and ``-``, at most 40 (no dot: the token's separator)."""


class TokenError(ValueError):
    """A token or stored hash is malformed. The message never contains the token."""


@dataclass(frozen=True)
class TokenHash:
    """A parsed ``scrypt$...`` hash."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def text(self) -> str:
        return f"scrypt${self.log2_n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 2 ** log2_n
    # OpenSSL refuses to use more memory than maxmem: 128 * r * (n + p + 2) bytes, said with room
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=2 * 128 * r * (n + p + 2))


def new_token(account: str) -> str:
    """A fresh token for ``account`` (shown once, never stored)."""
    if not NAME.match(account):
        raise TokenError(f"account name {account!r} must be 1-40 of a-z, 0-9, _ and -, starting with a letter or digit")
    return f"{account}.{secrets.token_urlsafe(SECRET_BYTES)}"


def account_of(token: str) -> str:
    """The account a token names (the part before the first dot), or '' when it names none."""
    name, dot, _ = token.partition(".")
    return name if dot and NAME.match(name) else ""


def check_length(token: str, who: str) -> None:
    """Refuse a token shorter than :data:`MIN_TOKEN_CHARS` (``who`` names it in the message)."""
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"the token of {who} has {len(token)} characters; at least {MIN_TOKEN_CHARS} are "
                         "required (`voicegw agents add` makes one)")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"the token of {who} is longer than {MAX_TOKEN_CHARS} characters")


def hash_token(token: str) -> str:
    """The storable hash of ``token`` (a new random salt each time)."""
    salt = secrets.token_bytes(16)
    return TokenHash(SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, salt,
                     _scrypt(token, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)).text()


def parse_hash(text: str, who: str) -> TokenHash:
    """A stored hash, checked for shape and bounded cost; :class:`TokenError` naming ``who`` otherwise."""
    parts = text.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not scrypt$n$r$p$salt$digest")
        parsed = TokenHash(int(parts[1]), int(parts[2]), int(parts[3]), _unb64(parts[4]), _unb64(parts[5]))
    except (ValueError, binascii.Error):
        raise TokenError(f"the token_hash of {who} is not a gateway token hash (scrypt$...); "
                         "make one with `voicegw agents add NAME --print-config`") from None
    if not (10 <= parsed.log2_n <= MAX_LOG2_N and 1 <= parsed.r <= MAX_R and 1 <= parsed.p <= MAX_P):
        raise TokenError(f"the token_hash of {who} has scrypt parameters outside n=2^10..2^{MAX_LOG2_N}, "
                         f"r<={MAX_R}, p<={MAX_P}")
    if len(parsed.salt) < 16 or len(parsed.digest) != 32:
        raise TokenError(f"the token_hash of {who} has a salt shorter than 16 bytes or a digest not of 32")
    return parsed


def token_matches(token: str, stored: TokenHash) -> bool:
    """Whether ``token`` hashes to ``stored`` (slow; constant-time comparison)."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(_scrypt(token, stored.salt, stored.log2_n, stored.r, stored.p), stored.digest)


def fingerprint(stored_hash: str) -> str:
    """A short public tag of a stored hash: sessions carry it, so a rotated token ends them."""
    return hashlib.sha256(stored_hash.encode("utf-8")).hexdigest()[:16]
