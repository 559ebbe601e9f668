"""The Asterisk subcommands."""

from __future__ import annotations

from gateway.config import load_settings
from gateway.telephony.cli import ami_check, render_dialplan
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi


def test_dialplan_carries_this_gateways_addresses(tmp_path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "fastagi": {
        "port": 4600, "audiosocket_address": "10.0.0.5:9100"}})
    text = render_dialplan(settings)
    assert "\nVOICEGW_AGI=agi://10.0.0.5:4600 " in text
    assert "\nVOICEGW_AUDIOSOCKET=10.0.0.5:9100 " in text
    assert "[voicegw-inbound]" in text and "[voicegw-agents]" in text and "[voicegw-outbound]" in text
    assert "VOICEGW_AUDIOSOCKET=pbx-side:9100" in render_dialplan(settings, "pbx-side")


async def test_ami_check_reports_the_version(tmp_path):
    fake = ReplayAmi(fixtures.load("ami/ami_c_originate_local_events"),
                     extra=fixtures.load("ami/ami_a_login_ok_errors_logoff"))
    port = await fake.start()
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ami": {
        "enabled": True, "port": port, "secret": "gatewaysecret"}})
    try:
        ok, line = await ami_check(settings, 5)
    finally:
        await fake.close()
    assert ok and "Asterisk 22.10.1" in line
    assert fake.names() == ["Login", "CoreSettings", "Logoff"]


async def test_ami_check_fails_clearly(tmp_path):
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ami": {"enabled": True, "port": 1}})
    ok, line = await ami_check(settings, 0.5)
    assert not ok and "AMI login to 127.0.0.1:1 as 'gateway' failed" in line
