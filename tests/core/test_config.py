"""Settings: defaults file, --config file, VOICEGW_* overrides, clear errors."""

from pathlib import Path

import pytest
import yaml

from gateway.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings


def test_defaults_file_mirrors_the_settings_tree():
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert Settings.model_validate(data) == Settings()


def test_every_default_key_has_a_comment():
    for number, line in enumerate(DEFAULT_CONFIG.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue
        assert "#" in line, f"gateway.yaml line {number} has no comment: {line!r}"


def test_environment_overrides_nested_keys():
    settings = load_settings(environ={"VOICEGW_WEB__PORT": "9999", "VOICEGW_VOICE__ENDPOINT__END_OF_TURN_MS": "450",
                                      "VOICEGW_SIP__TRANSPORTS": "[udp, tcp]"})
    assert settings.web.port == 9999
    assert settings.voice.endpoint.end_of_turn_ms == 450
    assert settings.sip.transports == ("udp", "tcp")


def test_config_file_overrides_defaults(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("web:\n  port: 8181\ncontext:\n  resume_window_minutes: 5\n")
    settings = load_settings(path, environ={})
    assert settings.web.port == 8181 and settings.context.resume_window_minutes == 5
    assert settings.audiosocket.port == 9092


@pytest.mark.parametrize("env, words", [
    ({"VOICEGW_WEB__PORT": "eighty"}, ["web.port", "'eighty'", "integer"]),
    ({"VOICEGW_WEB__PORT": "70000"}, ["web.port", "70000", "less than or equal to 65535"]),
    ({"VOICEGW_VOICE__VAD__ENGINE": "magic"}, ["voice.vad.engine", "'magic'", "silero"]),
    ({"VOICEGW_WEB__PROT": "1"}, ["web.prot", "unknown key"]),
])
def test_bad_value_names_key_value_and_expectation(env, words):
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    for word in words:
        assert word in str(err.value)


def test_unreadable_or_malformed_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("web: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
