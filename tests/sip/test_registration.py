"""Register mode against a registrar (SIPp playing one): digest auth, refresh, unregister."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.sip.conftest import free_port, run_sipp, sipp_log

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


def _registrar(start_any_gateway, tmp_path, password: str):
    reg_port = free_port()
    registrar = run_sipp("uas_registrar.xml", "", tmp_path, uas=True, port=reg_port, background=True, timeout=40)
    time.sleep(0.5)
    gw = start_any_gateway(mode="tone", sip={
        "mode": "register", "registrar": f"sip:127.0.0.1:{reg_port}", "username": "gw",
        "password": password, "domain": "voicegw.test", "register_seconds": 60,
    })
    return gw, registrar


def test_digest_registration_refresh_and_unregister(start_any_gateway, tmp_path) -> None:
    gw, registrar = _registrar(start_any_gateway, tmp_path, "s3cret")
    deadline = time.monotonic() + 15
    while not gw.stats()["registered"]:
        assert time.monotonic() < deadline, gw.tail()
        time.sleep(0.3)
    time.sleep(7.5)  # granted 10 s: pjsip refreshes 5 s before expiry (at 5 s, then at 10 s)
    stats = gw.stats()
    assert stats["registered"]
    for worker in stats.get("workers", []):  # the password reaches a worker over its link, not argv
        assert b"s3cret" not in Path(f"/proc/{worker['pid']}/cmdline").read_bytes()
    assert gw.close() == 0  # close unregisters
    out, _ = registrar.communicate(timeout=30)
    assert registrar.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'uas_registrar.xml')}"
    messages = (tmp_path / "uas_registrar.xml.msg.log").read_text()
    assert "Authorization: Digest" in messages and 'username="gw"' in messages
    # the registered Contact is the gateway's SIP address (the front's, with workers)
    assert f"<sip:gw@127.0.0.1:{gw.port}" in messages, messages[-3000:]


def test_wrong_password_is_not_registered(start_any_gateway, tmp_path) -> None:
    gw, registrar = _registrar(start_any_gateway, tmp_path, "wrong")
    time.sleep(3)
    assert not gw.stats()["registered"]
    assert gw.alive()
    gw.close()
    registrar.communicate(timeout=30)
    assert registrar.returncode != 0  # the registrar refused the credentials
