"""``voicegw conversations`` against a real SQLite store (the data dir comes from VOICEGW_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.context.sqlite_store import SqliteStore


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)  # voicegw's own parser (--config, -v, every command)
    return int(args.func(args))


async def _seed(path: Path) -> str:
    store = SqliteStore(path)
    rec = await store.create(customer_id="C001", caller_id="+15551234567", channel="voice")
    rec.journey, rec.step = "billing_dispute", "ask_problem"
    await store.save(rec)
    await store.append(rec.id, channel="voice", kind="UserSaid", payload={"text": "my card is 4111 1111 1111 1111"})
    await store.close()
    return rec.id


def test_list_show_and_find(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    monkeypatch.setenv("VOICEGW_DATA_DIR", str(tmp_path))
    cid = asyncio.run(_seed(tmp_path / "conversations.db"))
    assert _run(["conversations"]) == 0
    out = capsys.readouterr().out
    assert cid in out and "C001" in out and "billing_dispute/ask_problem" in out
    assert _run(["conversations", "show", cid]) == 0
    out = capsys.readouterr().out
    assert "UserSaid" in out and "[card ****1111]" in out and "4111 1111" not in out
    assert _run(["conversations", "find", "--customer", "C001"]) == 0
    assert cid in capsys.readouterr().out
    assert _run(["conversations", "find", "--customer", "C404"]) == 1
    assert _run(["conversations", "show", "nope"]) == 1
    (tmp_path / "conversations.db").unlink()
    for extra in tmp_path.glob("conversations.db-*"):
        extra.unlink()
    (tmp_path / "conversations.db").write_bytes(b"garbage" * 1000)
    assert _run(["conversations"]) == 1
    assert "corrupt" in capsys.readouterr().err
