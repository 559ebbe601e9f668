"""The agent desktop's queue as the core reads it before offering a person to a chat: the
customers waiting, the agents who may take the queue and have room, the recent waits."""

from __future__ import annotations

import time

from gateway.agents import queue as q
from gateway.agents.dispatch import Dispatcher
from gateway.agents.live import LiveHub
from gateway.agents.queue import QueueEntry
from gateway.agents.queue_store import SqliteQueue
from gateway.agents.registry import AgentRegistry
from gateway.agents.access import Role
from gateway.config import load_settings
from gateway.context.audit import SqliteAuditLog
from gateway.context.fanout import InProcessFanout
from gateway.metrics import Metrics


async def test_the_desktop_queue_tells_how_long_a_chat_would_wait(tmp_path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    store, registry, audit = SqliteQueue(tmp_path / "queue.db"), AgentRegistry(), SqliteAuditLog(tmp_path / "a.db")
    dispatcher = Dispatcher(settings, store, registry, core=None, hub=LiveHub(InProcessFanout()),  # type: ignore[arg-type]
                            audit=audit, metrics=Metrics())
    try:
        assert await dispatcher.wait_estimate("billing", "chat") is None  # nobody waiting, no history: not guessed
        now = time.time()
        for i in range(3):
            await store.apply(f"c{i}", q.enqueue(QueueEntry(conversation_id=f"c{i}", queue="billing", since=now - i)))
        await store.record_wait("billing", 200.0)
        estimate = await dispatcher.wait_estimate("billing", "chat")
        assert estimate is not None and estimate.waiting == 3 and estimate.expected_seconds == 3600.0  # nobody signed in
        registry.update("alice", node="n1", skills=(), languages=(), available=True, role=Role.AGENT,
                        queues=("billing",))
        registry.update("bob", node="n1", skills=(), languages=(), available=True, role=Role.AGENT,
                        queues=("orders",))  # may not take billing
        estimate = await dispatcher.wait_estimate("billing", "chat")
        assert estimate is not None and estimate.agents_available == 1 and estimate.expected_seconds == 0.0
        assert await dispatcher.wait_estimate("billing", "voice") is None  # calls wait in the PBX's queue
    finally:
        await store.close()
        await audit.close()
