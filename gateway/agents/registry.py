"""Who is signed in to the agent desktop, with which skills and languages, and who gets a call.

Sans-IO: plain data and a chooser, no sockets. Each gateway node announces its own agents over
the fan-out, so every node's registry holds the agents of all nodes (``node`` says where the
agent's desktop is connected) and any node can route a transfer. Role and queues come from the
agent's account (never from the desktop); a transfer goes only to someone
:func:`~gateway.agents.access.authorize` lets take it, agents of its queue first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from gateway.agents.access import ConversationFacts, Permission, authorize, serves
from gateway.agents.accounts import Principal, Role

MAX_SKILLS = 32
MAX_LABEL_CHARS = 40


def clean_labels(values: Any) -> frozenset[str]:
    """Skills or languages from a client: a bounded set of short lower-case labels."""
    if not isinstance(values, (list, tuple)):
        raise ValueError("expected a list of strings")
    out: set[str] = set()
    for value in values[:MAX_SKILLS]:
        if not isinstance(value, str):
            raise ValueError("expected a list of strings")
        label = value.strip().lower()[:MAX_LABEL_CHARS]
        if label:
            out.add(label)
    return frozenset(out)


@dataclass
class AgentPresence:
    """One signed-in agent as the router sees it."""

    agent_id: str
    node: str
    skills: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    available: bool = True
    assigned: int = 0
    idle_since: float = field(default_factory=time.time)
    role: Role = Role.AGENT
    queues: frozenset[str] = frozenset()

    @property
    def principal(self) -> Principal:
        return Principal(self.agent_id, self.role, self.queues)

    def as_message(self) -> dict[str, Any]:
        """The fan-out announcement of this presence."""
        return {"agent_id": self.agent_id, "node": self.node, "skills": sorted(self.skills),
                "languages": sorted(self.languages), "available": self.available, "role": self.role.value,
                "queues": sorted(self.queues)}


class AgentRegistry:
    """Presence of agents (all nodes) and the choice of an agent for a transfer."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._agents: dict[str, AgentPresence] = {}

    def update(self, agent_id: str, *, node: str, skills: Iterable[str], languages: Iterable[str],
               available: bool, role: Role = Role.AGENT, queues: Iterable[str] = ()) -> AgentPresence:
        """Record an agent's (new) skills, languages and availability, and their account's role and queues."""
        presence = self._agents.get(agent_id)
        if presence is None:
            presence = self._agents[agent_id] = AgentPresence(agent_id, node, idle_since=self._clock())
        presence.node = node
        presence.role = role
        presence.queues = frozenset(queues)
        presence.skills = frozenset(skills)
        presence.languages = frozenset(languages)
        if available and not presence.available:
            presence.idle_since = self._clock()
        presence.available = available
        return presence

    def remove(self, agent_id: str) -> None:
        """The agent signed out or their desktop went away."""
        self._agents.pop(agent_id, None)

    def get(self, agent_id: str) -> AgentPresence | None:
        return self._agents.get(agent_id)

    def agents(self) -> list[AgentPresence]:
        """Everyone known, sorted by id."""
        return sorted(self._agents.values(), key=lambda a: a.agent_id)

    def candidates(self, queue: str, skills: Iterable[str] = (), language: str = "") -> list[AgentPresence]:
        """Everyone available whom :func:`~gateway.agents.access.authorize` lets take a
        conversation of ``queue``, best first (the ranking :meth:`choose` describes)."""
        need = {s.lower() for s in skills}
        lang = language.lower().split("-")[0] if language else ""
        facts = ConversationFacts("", queue.strip().lower())
        found = [a for a in self._agents.values()
                 if a.available and authorize(a.principal, Permission.TAKE_CONVERSATION, facts)]

        def speaks(agent: AgentPresence) -> bool:
            return not lang or not agent.languages or lang in {x.split("-")[0] for x in agent.languages}

        return sorted(found, key=lambda a: (not serves(a.principal, facts.queue), not speaks(a),
                                            -len(need & a.skills), a.assigned, a.idle_since, a.agent_id))

    def picked(self, agent_id: str) -> None:
        """``agent_id`` was just given a conversation: others go first next time."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.assigned += 1
            agent.idle_since = self._clock()

    def choose(self, queue: str, skills: Iterable[str] = (), language: str = "") -> str:
        """The agent for a transfer to ``queue`` needing ``skills`` in ``language``, or '' when
        nobody who may take it is available.

        Only those :func:`~gateway.agents.access.authorize` lets take a conversation of ``queue``
        are candidates. They are ranked: agents of the queue before supervisors and admins, then
        speaking the language (when one is given), then how many of the needed skills they have,
        then fewest assignments, then the longest idle. Within the queue, an agent lacking the
        language or every skill still beats nobody: the customer reaches a person, who sees the
        whole context.
        """
        ranked = self.candidates(queue, skills, language)
        if not ranked:
            return ""
        self.picked(ranked[0].agent_id)
        return ranked[0].agent_id
