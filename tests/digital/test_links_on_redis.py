"""Single-use links across gateway nodes: with the Redis context backend, used links are recorded
in Redis (a real ``redis-server``), so a link used on one node is refused on every other."""

from __future__ import annotations

import threading
from pathlib import Path

import aiohttp
import pytest
import redis

from gateway.links import REDIS_KEY_PREFIX, LinkRefused, LinkSigner
from tests.digital.helpers import ALICE, logged, real_gateway
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)

SECRET = b"a shared link secret for all nodes"


def test_a_link_used_on_one_node_is_used_on_all(redis_url: str) -> None:
    node_a = LinkSigner(SECRET, ttl_seconds=600, used_redis_url=redis_url)
    node_b = LinkSigner(SECRET, ttl_seconds=600, used_redis_url=redis_url)
    token = node_a.issue("conv-1", "complete_form")
    assert node_b.verify(token).conversation_id == "conv-1"  # not used yet
    node_a.consume(token)
    with pytest.raises(LinkRefused) as refused:
        node_b.verify(token)
    assert refused.value.reason == "used" and refused.value.status == 410
    with pytest.raises(LinkRefused):
        node_b.consume(token)
    ttl = redis.Redis.from_url(redis_url).ttl(REDIS_KEY_PREFIX + node_a.verify(token, check_used=False).nonce)
    assert 600 <= ttl <= 660  # the record lasts as long as the link could be presented
    node_a.close()
    node_b.close()


def test_racing_nodes_let_a_link_through_once(redis_url: str) -> None:
    nodes = [LinkSigner(SECRET, ttl_seconds=600, used_redis_url=redis_url) for _ in range(4)]
    token = nodes[0].issue("conv-2", "reset_password")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            nodes[i % 4].consume(token)
            wins.append(i)
        except LinkRefused as exc:
            assert exc.reason == "used"

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(wins) == 1, wins


def test_an_unreachable_redis_refuses_the_link_instead_of_reusing_it() -> None:
    signer = LinkSigner(SECRET, ttl_seconds=600, used_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    token = signer.issue("conv-3", "complete_form")
    with pytest.raises(LinkRefused) as refused:
        signer.consume(token)
    assert refused.value.reason == "unavailable" and refused.value.status == 503


async def test_form_link_submitted_on_one_web_node_is_gone_on_the_other(redis_url: str, tmp_path: Path) -> None:
    shared = {"context": {"backend": "redis", "redis_url": redis_url},
              "links": {"secret": SECRET.decode()}}
    async with real_gateway(tmp_path / "a", **shared) as (core_a, node_a), \
            real_gateway(tmp_path / "b", **shared) as (core_b, node_b):
        opened = await core_a.open("voice", caller_id=ALICE)
        url = node_a.parts.followups.link_for(opened.conversation_id, "complete_form")
        other = url.replace(node_a.url, node_b.url)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data={"name": "Alice"}) as resp:
                assert resp.status == 200
            async with http.post(other, data={"name": "Mallory"}) as resp:
                assert resp.status == 410 and "already used" in await resp.text()
        # one submission, in the conversation both nodes share
        forms = [e.payload["fields"] for e in await logged(core_b, "FormSubmitted", opened.conversation_id)]
        assert forms == [{"name": "Alice"}]
