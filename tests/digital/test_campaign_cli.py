"""``voicegw campaign`` and ``voicegw dnc`` on a data directory: clear errors, the audit log."""

from __future__ import annotations

import asyncio

from gateway.cli import main
from gateway.config import load_settings
from gateway.context import open_audit
from gateway.context.dnc import open_do_not_call


def audit_actions(tmp_path):
    async def read():
        audit = open_audit(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
        try:
            return [(e.action, e.detail) for e in reversed(await audit.entries(limit=100))]
        finally:
            await audit.close()
    return asyncio.run(read())


def test_dnc_add_list_remove_audited(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOICEGW_DATA_DIR", str(tmp_path))
    assert main(["dnc", "add", "+1 555 000 1234"]) == 0
    assert main(["dnc", "add", "15550001234"]) == 0
    assert main(["dnc", "add", "12"]) == 1
    assert main(["dnc", "list"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[:2] == ["added", "already on the list"] and "+15550001234" in out.out
    assert "'12' is not a phone number" in out.err
    assert main(["dnc", "remove", "+15550001234"]) == 0
    assert "removed" in capsys.readouterr().out

    async def listed():
        dnc = open_do_not_call(load_settings(environ={}, overrides={"data_dir": str(tmp_path)}))
        try:
            return await dnc.contains("+15550001234")
        finally:
            await dnc.close()
    assert asyncio.run(listed()) is False
    actions = audit_actions(tmp_path)
    assert [a for a, _ in actions] == ["dnc_add", "dnc_add", "dnc_remove"]
    assert all(d["number"] == "…1234" for _, d in actions)


def test_campaign_commands_report_problems(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOICEGW_DATA_DIR", str(tmp_path))
    csv = tmp_path / "list.csv"
    csv.write_text("id,phone,tz\na,+15551112222,Europe/Paris\nb,not-a-number,\n")
    assert main(["campaign", "create", "spring", "--quiet", "20:00-09:00", "--rate", "3"]) == 0
    assert main(["campaign", "create", "spring"]) == 1
    assert main(["campaign", "create", "other", "--quiet", "8pm"]) == 1
    assert main(["campaign", "import", "spring", str(csv)]) == 0
    assert main(["campaign", "import", "spring", str(tmp_path / "missing.csv")]) == 1
    assert main(["campaign", "start", "spring"]) == 0
    assert main(["campaign", "status", "spring"]) == 0
    out = capsys.readouterr()
    assert "1 contacts added, 0 already there, 1 rejected (of 2 rows)" in out.out
    assert "line 3: 'not-a-number' is not a full international number" in out.err
    assert "exists already" in out.err and "--quiet takes START-END" in out.err
    assert "campaign spring: running, journey appointment, 3/min" in out.out and "quiet 20:00-09:00" in out.out
    assert [a for a, _ in audit_actions(tmp_path)] == [
        "campaign_create", "campaign_create", "campaign_create", "campaign_import", "campaign_import",
        "campaign_start", "campaign_status"]
