"""What a supervisor does with campaigns, shared by the HTTP API and ``voicegw campaign``:
create, import contacts, start, pause, read the status and the attempts' outcome codes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from gateway.config import Settings
from gateway.digital.campaigns.csv_import import parse_contacts
from gateway.digital.campaigns.model import NAME, Campaign, CampaignConfig, CampaignState
from gateway.digital.campaigns.store import CampaignError, CampaignStore

MAX_CSV_BYTES = 16 * 1024 * 1024
"""Largest CSV file ``voicegw campaign import`` reads (about 100 000 contacts with a text each);
the HTTP API is bounded by ``web.max_request_bytes`` before that."""


@dataclass(frozen=True)
class ImportReport:
    rows: int
    added: int
    duplicates: int
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "added": self.added, "duplicates": self.duplicates, "rejected": len(self.errors),
                "errors": self.errors}


def journey_names(settings: Settings) -> frozenset[str]:
    """The journeys a campaign may run (those in ``journeys.directory``)."""
    from gateway.core.journeys import load_journeys

    return frozenset(load_journeys(settings.project_path(settings.journeys.directory)).journeys)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds") if epoch else ""


class CampaignAdmin:
    """Campaign management over the campaigns file; ``journeys`` are the names a campaign may run."""

    def __init__(self, settings: Settings, store: CampaignStore, journeys: frozenset[str],
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self.store = store
        self._journeys = journeys
        self._clock = clock

    async def create(self, name: str, changes: Mapping[str, Any]) -> Campaign:
        """A new campaign (draft) with the defaults of ``campaigns`` and ``changes`` over them."""
        if not NAME.match(name or ""):
            raise CampaignError("a campaign name is 1 to 64 lower-case letters, digits, - or _, starting with a "
                                "letter or digit")
        try:
            config = CampaignConfig.defaults(self._settings.campaigns).with_changes(changes)
        except ValueError as exc:
            raise CampaignError(str(exc)) from None
        if config.journey not in self._journeys:
            raise CampaignError(f"no journey named {config.journey!r} (known: {', '.join(sorted(self._journeys))})")
        return await self.store.create(name, config, self._clock(), max_campaigns=self._settings.campaigns.max_campaigns)

    async def _existing(self, name: str) -> Campaign:
        campaign = await self.store.get(name)
        if campaign is None:
            raise CampaignError(f"no campaign named {name!r}")
        return campaign

    async def import_csv(self, name: str, text: str) -> ImportReport:
        """Add the CSV's contacts; rows with a problem are reported and left out."""
        await self._existing(name)
        try:
            parsed = parse_contacts(name, text, max_rows=self._settings.campaigns.max_contacts)
        except ValueError as exc:
            raise CampaignError(str(exc)) from None
        added, duplicates = await self.store.add_contacts(name, parsed.contacts,
                                                          max_contacts=self._settings.campaigns.max_contacts)
        return ImportReport(parsed.rows, added, duplicates, parsed.errors)

    async def start(self, name: str) -> Campaign:
        return await self.store.set_state(name, CampaignState.RUNNING, self._clock(),
                                          allowed_from=(CampaignState.DRAFT, CampaignState.PAUSED))

    async def pause(self, name: str) -> Campaign:
        return await self.store.set_state(name, CampaignState.PAUSED, self._clock(),
                                          allowed_from=(CampaignState.RUNNING, CampaignState.DRAFT))

    async def status(self, name: str) -> dict[str, Any]:
        campaign = await self._existing(name)
        summary = await self.store.summary(name, self._clock())
        return {"name": campaign.name, "state": campaign.state.value, "created_at": _iso(campaign.created_at),
                "settings": campaign.config.as_dict(), **summary}

    async def overview(self) -> list[dict[str, Any]]:
        return [await self.status(c.name) for c in await self.store.campaigns()]

    async def attempts(self, name: str, *, ref: str = "", limit: int = 100) -> list[dict[str, Any]]:
        await self._existing(name)
        out = []
        for attempt in await self.store.attempts(name, ref=ref, limit=limit):
            item = attempt.as_json()
            for key in ("started_at", "placed_at", "ended_at"):
                item[key] = _iso(item[key])
            out.append(item)
        return out
