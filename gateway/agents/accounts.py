"""Who may sign in to the agent desktop, in which role, serving which queues.

Accounts come from three places, merged at start (a name defined twice refuses the start):

- ``agents.accounts`` in the configuration (role, queues, ``token_hash``, AMI ``interfaces``);
- the accounts file in the data directory (``agents.accounts_file``, mode 0600), managed by
  ``voicegw agents add/remove/rotate`` and re-read when it changes, so an account added or
  removed there takes effect on a running gateway within :data:`RELOAD_SECONDS`;
- deprecated ``agents.tokens`` (``{token: agent_id}``, plain text): each becomes an agent of
  every queue; a token shorter than :data:`~gateway.agents.tokens.MIN_TOKEN_CHARS` refuses the
  start, and a warning asks to move them to accounts.

With none of these (the embedded default) one ``admin`` token is generated once into
``<data_dir>/agent-token`` (0600); the log names that file, never the token.

Only hashes are kept. :meth:`AccountBook.check` finds the account a token names and checks it
with scrypt on a worker thread (a few at a time); a token that passed is remembered for
:data:`VERIFIED_SECONDS` under a keyed digest, so a desktop calling the REST API does not pay
scrypt on every request.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gateway.agents.tokens import (
    MAX_TOKEN_CHARS,
    MIN_TOKEN_CHARS,
    NAME,
    TokenError,
    account_of,
    check_length,
    fingerprint,
    hash_token,
    new_token,
    parse_hash,
    token_matches,
)
from gateway.config import AgentAccountSettings, ConfigError, Settings

log = logging.getLogger(__name__)

TOKEN_FILE = "agent-token"
"""The generated admin token of the embedded default, in the data directory."""

GENERATED_ADMIN = "admin"
ALL_QUEUES = "*"
"""In ``queues``: every queue."""

RELOAD_SECONDS = 2.0
"""How often at most the accounts file's modification time is looked at."""

VERIFIED_SECONDS = 300.0
"""How long a checked token is remembered (a removed or rotated account ends it at once)."""

MAX_VERIFIED = 1024
"""Checked tokens remembered at most (the oldest are forgotten first)."""

MAX_CONCURRENT_CHECKS = 2
"""scrypt checks running at once: a flood of sign-ins costs at most these two cores."""

MAX_WAITING_CHECKS = 32
"""Checks waiting for a turn at most (about 0.6 s of work); more are turned away at once
(:class:`SignInBusy`, a 503) rather than queued without end."""

MAX_QUEUES = 64
"""Queues one account may serve."""


class Role(str, enum.Enum):
    """What a signed-in person is. Supervisors and admins read every conversation; admins also
    read the audit log."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """A signed-in person as authorization sees them (no secrets)."""

    name: str
    role: Role
    queues: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Account:
    """One account: its principal, the hash of its token and where it was defined."""

    name: str
    role: Role
    queues: frozenset[str]
    token_hash: str
    interfaces: frozenset[str] = frozenset()
    source: str = "config"

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.queues)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.token_hash)


class SignInBusy(Exception):
    """Too many tokens are being checked right now; try again in a moment."""


class AccountError(ConfigError):
    """An account cannot be used; the start is refused. The message never holds a token."""


def clean_queues(values: Any, who: str) -> frozenset[str]:
    """Queue names as lower-case labels; ``*`` means every queue."""
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    queues = frozenset(str(v).strip().lower() for v in values if str(v).strip())
    if len(queues) > MAX_QUEUES or any(len(q) > 40 for q in queues):
        raise AccountError(f"{who}: at most {MAX_QUEUES} queues of at most 40 characters")
    return queues


def make_account(name: str, spec: AgentAccountSettings | dict[str, Any], source: str) -> Account:
    """An :class:`Account` from a configuration entry or a line of the accounts file."""
    data = spec.model_dump() if isinstance(spec, AgentAccountSettings) else dict(spec)
    who = f"agent account {name!r} ({source})"
    if not NAME.match(name):
        raise AccountError(f"{who}: a name is 1-40 of a-z, 0-9, _ and -, starting with a letter or digit")
    try:
        role = Role(str(data.get("role", "agent")))
        parse_hash(str(data.get("token_hash", "")), who)
    except ValueError as exc:
        raise AccountError(str(exc) if isinstance(exc, TokenError) else
                           f"{who}: role must be agent, supervisor or admin") from None
    return Account(name, role, clean_queues(data.get("queues", ()), who), str(data["token_hash"]),
                   frozenset(str(i) for i in data.get("interfaces", ())), source)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


class AccountsFile:
    """The accounts file: ``{"version": 1, "accounts": {name: {role, queues, token_hash, ...}}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AccountError(f"agents file {self.path} cannot be read ({exc})") from None
        accounts = data.get("accounts") if isinstance(data, dict) else None
        if not isinstance(accounts, dict):
            raise AccountError(f"agents file {self.path} has no \"accounts\" mapping")
        return accounts

    def accounts(self) -> dict[str, Account]:
        return {name: make_account(name, spec, str(self.path)) for name, spec in self.read().items()}

    def _save(self, accounts: dict[str, dict[str, Any]]) -> None:
        _write_private(self.path, json.dumps({"version": 1, "accounts": accounts}, indent=2, sort_keys=True))

    def add(self, name: str, role: Role, queues: frozenset[str], interfaces: frozenset[str] = frozenset()) -> str:
        """Create ``name`` and return its token (the only time it exists in clear)."""
        accounts = self.read()
        if name in accounts:
            raise AccountError(f"agent account {name!r} already exists in {self.path} (use rotate or remove)")
        token = new_token(name)
        accounts[name] = {"role": role.value, "queues": sorted(queues), "interfaces": sorted(interfaces),
                          "token_hash": hash_token(token), "created_at": int(time.time())}
        make_account(name, accounts[name], str(self.path))
        self._save(accounts)
        return token

    def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one and its sessions stop working."""
        accounts = self.read()
        if name not in accounts:
            raise AccountError(f"no agent account {name!r} in {self.path}")
        token = new_token(name)
        accounts[name] = {**accounts[name], "token_hash": hash_token(token), "rotated_at": int(time.time())}
        self._save(accounts)
        return token

    def remove(self, name: str) -> None:
        accounts = self.read()
        if accounts.pop(name, None) is None:
            raise AccountError(f"no agent account {name!r} in {self.path}")
        self._save(accounts)


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The generated admin token kept at ``path`` (0600) and whether it was just made."""
    try:
        token = path.read_text(encoding="ascii").strip()
        if account_of(token) == GENERATED_ADMIN and len(token) >= MIN_TOKEN_CHARS:
            return token, False
    except FileNotFoundError:
        pass
    token = new_token(GENERATED_ADMIN)
    _write_private(path, token)
    return token, True


class AccountBook:
    """Every account the gateway knows, and the check of a presented token."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._file = AccountsFile(settings.data_path(settings.agents.accounts_file))
        self._configured = {name: make_account(name, spec, "agents.accounts")
                            for name, spec in settings.agents.accounts.items()}
        self._legacy: dict[bytes, str] = {}
        self._digest_key = secrets.token_bytes(32)  # per process: remembered digests mean nothing elsewhere
        self._verified: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._waiting = 0
        self._load_legacy(settings.agents.tokens)
        self._from_file = self._file.accounts()
        self._file_stamp = self._stamp()
        self._next_reload = clock() + RELOAD_SECONDS
        self._generated: Account | None = None
        self.generated_token_path: Path | None = None
        self._check_clashes(self._from_file)
        token_path = settings.data_path(TOKEN_FILE)
        if not (self._configured or self._from_file):
            token, made = load_or_create_token(token_path)
            self._generated = Account(GENERATED_ADMIN, Role.ADMIN, frozenset(), hash_token(token), source="generated")
            self.generated_token_path = token_path
            log.info("no agent accounts configured: %s an admin token for the agent desktop in %s "
                     "(read it there; it is not logged)", "generated" if made else "using", token_path)
        elif token_path.exists():
            token_path.unlink()
            log.info("agent accounts are configured: removed the generated admin token %s", token_path)

    # ------------------------------------------------------------------ loading
    def _load_legacy(self, tokens: dict[str, Any]) -> None:
        if not tokens:
            return
        for token, agent_id in tokens.items():
            name = str(agent_id)
            who = f"agent {name!r} in agents.tokens"
            if not isinstance(agent_id, str) or not NAME.match(name):
                raise AccountError(f"agents.tokens: an agent id is 1-40 of a-z, 0-9, _ and - (got {who})")
            try:
                check_length(str(token), who)
            except TokenError as exc:
                raise AccountError(f"agents.tokens: {exc}") from None
            if name in self._configured:
                raise AccountError(f"agent account {name!r} is defined in agents.accounts and in agents.tokens")
            self._configured[name] = Account(name, Role.AGENT, frozenset({ALL_QUEUES}),
                                             "legacy$" + self._digest(str(token)).hex(), source="agents.tokens")
            self._legacy[self._digest(str(token))] = name
        log.warning("agents.tokens holds plain-text tokens for %s (agents of every queue); move them to "
                    "accounts with `voicegw agents add NAME --role agent --queues ...`",
                    ", ".join(sorted(set(self._legacy.values()))))

    def _check_clashes(self, from_file: dict[str, Account]) -> None:
        both = sorted(set(from_file) & set(self._configured))
        if both:
            raise AccountError(f"agent account {both[0]!r} is defined both in the configuration and in {self._file.path}")

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._file.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        now = self._clock()
        if now < self._next_reload:
            return
        self._next_reload = now + RELOAD_SECONDS
        stamp = self._stamp()
        if stamp == self._file_stamp:
            return
        try:
            from_file = self._file.accounts()
            self._check_clashes(from_file)
        except AccountError as exc:
            log.error("agents file not reloaded, keeping the accounts read before: %s", exc)
            return
        self._file_stamp, self._from_file = stamp, from_file
        log.info("agents file %s reloaded: %d accounts", self._file.path, len(from_file))
        if from_file and self._generated is not None:
            log.info("accounts now exist: the generated admin token no longer signs in")
            self._generated = None

    # ------------------------------------------------------------------ lookups
    def get(self, name: str) -> Account | None:
        """The account called ``name`` as it stands now (file changes included)."""
        self._refresh()
        if self._generated is not None and name == GENERATED_ADMIN:
            return self._generated
        return self._configured.get(name) or self._from_file.get(name)

    def accounts(self) -> list[Account]:
        self._refresh()
        found = {**self._from_file, **self._configured}
        if self._generated is not None:
            found[GENERATED_ADMIN] = self._generated
        return [found[n] for n in sorted(found)]

    def by_interface(self, interface: str) -> Account | None:
        """The account an AMI member interface (``PJSIP/1001``) or plain name belongs to."""
        return self.get(interface) or next((a for a in self.accounts() if interface in a.interfaces), None)

    def claimed(self, token: str) -> str:
        """The existing account a (possibly wrong) token names, for throttling and audit, or ''."""
        name = account_of(token[:MAX_TOKEN_CHARS])
        return name if name and self.get(name) is not None else ""

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._digest_key, token.encode("utf-8"), hashlib.sha256).digest()

    async def check(self, token: str) -> Account | None:
        """The account ``token`` signs in, or None. Slow for a token not seen recently;
        :class:`SignInBusy` when too many checks are already waiting."""
        if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
            return None
        digest = self._digest(token)
        legacy = self._legacy.get(digest)
        if legacy is not None:
            return self.get(legacy)
        remembered = self._verified.get(digest)
        if remembered is not None:
            name, tag, until = remembered
            account = self.get(name)
            if account is not None and account.fingerprint == tag and self._clock() < until:
                return account
            self._verified.pop(digest, None)
        account = self.get(account_of(token))
        if account is None or account.token_hash.startswith("legacy$"):
            return None
        stored = parse_hash(account.token_hash, account.name)
        if self._waiting >= MAX_WAITING_CHECKS:
            raise SignInBusy()
        self._waiting += 1
        try:
            async with self._checks:
                ok = await asyncio.to_thread(token_matches, token, stored)
        finally:
            self._waiting -= 1
        if not ok:
            return None
        self._verified[digest] = (account.name, account.fingerprint, self._clock() + VERIFIED_SECONDS)
        while len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return account
