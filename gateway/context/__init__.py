"""Where conversations live: the context store (SQLite or Redis), redaction and fan-out.

``open_store(settings)`` gives the configured :class:`ContextStore`; ``open_fanout(settings)``
the matching screen-pop fan-out (in-process for SQLite, Redis pub/sub for Redis);
``open_counters(settings)`` the counters shared by every node (failed checks, outbound limits);
``open_audit(settings)`` the matching append-only audit log (:mod:`gateway.context.audit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.context.audit import AuditLog
    from gateway.context.counters import Counters
    from gateway.context.fanout import Fanout
    from gateway.context.store import ContextStore

# The names below are loaded when first used, not with the package: a process that needs only
# part of it (a SIP worker installs the log redaction) does not load the Redis client and
# OpenTelemetry's metrics SDK it brings, 11 MB of every SIP worker process (59 -> 48 MB).
_LAZY = {
    "AuditEntry": "gateway.context.audit", "AuditLog": "gateway.context.audit", "AUDIT_FILE": "gateway.context.audit",
    "COUNTERS_FILE": "gateway.context.counters", "Counters": "gateway.context.counters",
    "RedisCounters": "gateway.context.counters", "SqliteCounters": "gateway.context.counters",
    "Fanout": "gateway.context.fanout", "InProcessFanout": "gateway.context.fanout",
    "RedisFanout": "gateway.context.fanout",
    "Redactor": "gateway.context.redaction",
    "ConcurrentUpdate": "gateway.context.store", "ContextStore": "gateway.context.store",
    "ConversationRecord": "gateway.context.store", "LoggedEvent": "gateway.context.store",
    "StoreError": "gateway.context.store", "StoreUnavailable": "gateway.context.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AuditEntry",
    "AuditLog",
    "ConcurrentUpdate",
    "ContextStore",
    "Counters",
    "ConversationRecord",
    "Fanout",
    "LoggedEvent",
    "Redactor",
    "StoreError",
    "StoreUnavailable",
    "open_counters",
    "open_audit",
    "open_fanout",
    "open_store",
]


def open_store(settings: Settings, *, node: bool = False) -> ContextStore:
    """The context store ``settings.context.backend`` names. The SQLite file is opened (and
    created or migrated) at once, so a corrupt or unreadable file fails here with
    :class:`StoreError`; Redis connects on first use. ``node``: the store of a running gateway
    node (``voicegw serve``), which on Redis rides out outages with its spool
    (:mod:`gateway.context.outage`); commands use Redis alone and fail while it is away."""
    ctx = settings.context
    if ctx.backend == "redis":
        from gateway.context.redis_store import RedisStore

        redis = RedisStore(ctx.redis_url, redaction=settings.redaction,
                           feed_max_len=settings.events_out.redis_stream_max_len)
        if not node:
            return redis
        from gateway.context.outage import BufferedStore
        from gateway.context.spool import Spool

        return BufferedStore(redis, Spool(settings.data_path(ctx.spool_path), max_ops=ctx.spool_max_ops),
                             timeout_seconds=ctx.outage_timeout_ms / 1000, probe_seconds=ctx.outage_probe_seconds,
                             cache_conversations=ctx.node_cache_conversations)
    from gateway.context.sqlite_store import SqliteStore

    return SqliteStore(
        settings.data_path(ctx.sqlite_path),
        busy_timeout_ms=ctx.busy_timeout_ms,
        redaction=settings.redaction,
    )


def open_fanout(settings: Settings) -> Fanout:
    """Screen-pop fan-out for the configured backend (one process, or every node via Redis)."""
    from gateway.context.fanout import InProcessFanout, RedisFanout

    if settings.context.backend == "redis":
        return RedisFanout(settings.context.redis_url)
    return InProcessFanout()


def open_counters(settings: Settings) -> Counters:
    """Counters shared like the store: a SQLite file beside it, or the same Redis."""
    from gateway.context.counters import COUNTERS_FILE, RedisCounters, SqliteCounters

    if settings.context.backend == "redis":
        return RedisCounters(settings.context.redis_url)
    return SqliteCounters(settings.data_path(COUNTERS_FILE), busy_timeout_ms=settings.context.busy_timeout_ms)


def open_audit(settings: Settings) -> AuditLog:
    """The audit log beside the configured store: ``<data_dir>/audit.db`` for SQLite (opened at
    once, so an unusable file fails here with :class:`StoreError`), streams in the same Redis
    for Redis."""
    if settings.context.backend == "redis":
        from gateway.context.audit import RedisAuditLog

        return RedisAuditLog(settings.context.redis_url)
    from gateway.context.audit import AUDIT_FILE, SqliteAuditLog

    return SqliteAuditLog(settings.data_path(AUDIT_FILE), busy_timeout_ms=settings.context.busy_timeout_ms)
