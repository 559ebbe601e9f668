"""Journey files: the shipped ones are valid; bad ones are reported with file, line and reason."""

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from gateway.config import PACKAGE_ROOT
from gateway.core.dialog import DialogEngine
from gateway.core.journeys import JourneyError, load_journeys

JOURNEYS = PACKAGE_ROOT / "config" / "journeys"


def test_shipped_journeys_are_valid():
    journeys = load_journeys(JOURNEYS, DialogEngine.known_lookups())
    for name in ("welcome", "verify_identity", "order_status", "billing_dispute", "password_reset",
                 "loan_resume", "appointment", "agent_handoff", "wrap_up"):
        assert name in journeys.journeys
    assert journeys.for_intent("billing_dispute").journey == "billing_dispute"
    assert len(journeys.intent_examples["order_status"]) >= 10


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "journeys"
    shutil.copytree(JOURNEYS, target)
    return target


def _problems(directory: Path) -> list[str]:
    with pytest.raises(JourneyError) as err:
        load_journeys(directory, DialogEngine.known_lookups())
    return [str(p) for p in err.value.problems]


def test_unknown_step_target_reports_line(tmp_path):
    directory = _copy(tmp_path)
    path = directory / "order_status.yaml"
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "default: send_tracking" in line)
    lines[index] = lines[index].replace("send_tracking", "send_trackin")
    path.write_text("\n".join(lines) + "\n")
    problems = _problems(directory)
    assert any("order_status.yaml" in p and "unknown step 'send_trackin'" in p for p in problems), problems


def test_step_with_two_kinds_and_unknown_key(tmp_path):
    directory = _copy(tmp_path)
    (directory / "broken.yaml").write_text(
        "journey: broken\n"
        "steps:\n"
        "  - id: one\n"
        "    say: hello\n"
        "    ask: what?\n"
        "  - id: two\n"
        "    say: bye\n"
        "    colour: blue\n")
    problems = _problems(directory)
    assert any(p.startswith(f"{directory / 'broken.yaml'}:3:") and "exactly one of" in p for p in problems), problems
    assert any(":8:" in p and "unknown key" in p for p in problems), problems


def test_misspelt_kind_is_named_at_its_step(tmp_path):
    directory = _copy(tmp_path)
    (directory / "typo.yaml").write_text(
        "journey: typo\n"
        "steps:\n"
        "  - id: hello\n"
        "    say: Hello.\n"
        "  - id: handover\n"
        "    transferr: orders\n"
        "    reason: asked\n")
    problems = _problems(directory)
    assert any(p.startswith(f"{directory / 'typo.yaml'}:5:") and "(found: none)" in p
               and "unknown key transferr: check the spelling" in p for p in problems), problems


def test_invalid_yaml_and_unknown_lookup(tmp_path):
    directory = _copy(tmp_path)
    (directory / "syntax.yaml").write_text("journey: x\nsteps:\n  - id: a\n    say: [unclosed\n")
    (directory / "lookup.yaml").write_text("journey: y\nsteps:\n  - id: a\n    run: launch_rocket\n")
    problems = _problems(directory)
    assert any("syntax.yaml:" in p and "not valid YAML" in p for p in problems), problems
    assert any("lookup.yaml:4:" in p and "unknown lookup 'launch_rocket'" in p for p in problems), problems


def test_cli_validate_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "journeys", "validate"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "journeys" in ok.stdout
    directory = _copy(tmp_path)
    (directory / "bad.yaml").write_text("journey: bad\nsteps: []\n")
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "journeys", "validate", str(directory)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "bad.yaml:2:" in bad.stderr and "at least one step" in bad.stderr


def test_each_kind_of_step_takes_only_its_own_options(tmp_path):
    directory = _copy(tmp_path)
    (directory / "mixed.yaml").write_text(
        "journey: mixed\n"
        "steps:\n"
        "  - id: hello\n"
        "    say: Hello.\n"
        "    expect: digits\n"
        "  - id: number\n"
        "    ask: Your number?\n"
        "    expect: digits\n"
        "  - id: bye\n"
        "    end: Bye.\n")
    problems = _problems(directory)
    # an ask's option on a say step is a mistake in the file, at its own line
    assert any("mixed.yaml:5:" in p and "steps.0.expect: unknown key" in p for p in problems), problems
    # a kind's own rule is reported at its step, as before
    assert any("mixed.yaml:6:" in p and "asks for digits but names no slot" in p for p in problems), problems


def test_every_kind_of_step_has_a_runner():
    from gateway.core.journey_steps import STEP_KINDS
    from gateway.core.step_runners import STEP_RUNNERS

    assert set(STEP_RUNNERS) == set(STEP_KINDS)
    journeys = load_journeys(JOURNEYS, DialogEngine.known_lookups())
    kinds = {type(step) for journey in journeys.journeys.values() for step in journey.steps}
    assert kinds == set(STEP_KINDS)  # the shipped journeys use every kind
