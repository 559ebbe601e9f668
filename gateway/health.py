"""What ``/healthz`` reports: every configured channel, and whether it works.

A channel that could not start is failing from the start (``voicegw serve`` then stops unless
told ``--keep-going``); a running part that knows more reports it through ``health()``: a server
that stopped listening, AMI not logged in, the ARI event socket down. ``/healthz`` answers 200
only when every channel is ok, 503 otherwise, so a load balancer or a PBX health check stops
sending calls to a gateway that would drop them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ChannelHealth:
    name: str
    ok: bool
    detail: str = ""


@runtime_checkable
class ReportsHealth(Protocol):
    """A running channel part that can tell whether it still works."""

    def health(self) -> ChannelHealth: ...


@dataclass
class HealthBook:
    """The channels of one gateway: those that failed to start and those running."""

    failed: dict[str, str] = field(default_factory=dict)
    running: list[tuple[str, Any]] = field(default_factory=list)

    def started(self, name: str, item: Any) -> None:
        self.running.append((name, item))

    def failed_to_start(self, name: str, error: str) -> None:
        self.failed[name] = error

    def channels(self) -> list[ChannelHealth]:
        out = [ChannelHealth(name, False, f"did not start: {error}") for name, error in self.failed.items()]
        for name, item in self.running:
            out.append(item.health() if isinstance(item, ReportsHealth) else ChannelHealth(name, True, "started"))
        return out

    def report(self) -> dict[str, Any]:
        """``{"status": "ok" | "failing", "channels": {name: {"ok": ..., "detail": ...}}}``."""
        channels = self.channels()
        return {"status": "ok" if all(c.ok for c in channels) else "failing",
                "channels": {c.name: {"ok": c.ok, "detail": c.detail} for c in channels}}
