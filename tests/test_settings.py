"""Settings: defaults match config/pulse.toml, overrides, and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_file_equals_code_defaults() -> None:
    from_file = load_settings(ROOT / "config" / "pulse.toml", env={}, dotenv=None)
    assert from_file == Settings()


def test_every_setting_is_in_the_file_with_a_comment() -> None:
    from bot.settings import _TOML_KEYS

    lines = (ROOT / "config" / "pulse.toml").read_text(encoding="utf-8").splitlines()
    section = None
    seen = set()
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[] ")
        elif "=" in line and not line.lstrip().startswith("#") and section in {s for s, _ in _TOML_KEYS}:
            key = line.split("=", 1)[0].strip()
            seen.add((section, key))
            block = lines[max(0, i - 6):i]
            assert any(x.lstrip().startswith("#") for x in block), f"{section}.{key} has no comment"
    assert seen == set(_TOML_KEYS)


def test_environment_overrides_file_and_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PULSE_DATABASE_URL=sqlite:///from-dotenv.db\nSLACK_BOT_TOKEN=xoxb-dotenv\n")
    s = load_settings(ROOT / "config" / "pulse.toml", env={"PULSE_CHURN_HORIZON_DAYS": "60",
                                                          "PULSE_CHURN_RETRAIN_DAYS": "7"},
                      dotenv=tmp_path / ".env")
    assert s.database_url == "sqlite:///from-dotenv.db"
    assert s.slack_bot_token == "xoxb-dotenv"
    assert s.churn_horizon_days == 60 and s.churn_retrain_days == 7
    assert load_settings(ROOT / "config" / "pulse.toml", env={}, dotenv=None).churn_retrain_days == 0
    s2 = load_settings(ROOT / "config" / "pulse.toml",
                       env={"PULSE_DATABASE_URL": "postgresql://u@h/db"}, dotenv=tmp_path / ".env")
    assert s2.database_url == "postgresql://u@h/db"


def test_tokens_never_in_repr() -> None:
    s = dataclasses.replace(Settings(), slack_bot_token="xoxb-secret-123", slack_signing_secret="shh")
    assert "xoxb-secret-123" not in repr(s) and "shh" not in repr(s)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PULSE_AS_OF": "yesterday"}, "PULSE_AS_OF"),
        ({"PULSE_CHURN_HORIZON_DAYS": "ninety"}, "PULSE_CHURN_HORIZON_DAYS"),
        ({"PULSE_CHURN_HORIZON_DAYS": "3"}, "churn_horizon_days"),
        ({"PULSE_CHURN_RETRAIN_DAYS": "-1"}, "churn_retrain_days"),
        ({"PULSE_CHURN_RETRAIN_DAYS": "a week"}, "PULSE_CHURN_RETRAIN_DAYS"),
        ({"PULSE_DATABASE_URL": "mysql://x"}, "PULSE_DATABASE_URL"),
        ({"PULSE_PORT": "70000"}, "PULSE_PORT"),
    ],
)
def test_wrong_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(ROOT / "config" / "pulse.toml", env=env, dotenv=None)
    assert needle in str(err.value)


def test_unknown_key_and_bad_schedule(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[analytics]\nchurn_horizon = 90\n")
    with pytest.raises(SettingsError, match="analytics.churn_horizon.*accepted"):
        load_settings(cfg, env={}, dotenv=None)
    cfg.write_text('[[digest.schedules]]\nchannel = "C1"\ncron = "every monday"\n')
    with pytest.raises(SettingsError, match="cron"):
        load_settings(cfg, env={}, dotenv=None)
    cfg.write_text('[[digest.schedules]]\nchannel = "C1"\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(SettingsError, match="timezone"):
        load_settings(cfg, env={}, dotenv=None)
    cfg.write_text("[analytics]\nrisk_high = 0.3\nrisk_medium = 0.5\n")
    with pytest.raises(SettingsError, match="risk_medium"):
        load_settings(cfg, env={}, dotenv=None)


def test_cli_reports_bad_setting_without_traceback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bot.cli import cli

    cfg = tmp_path / "p.toml"
    cfg.write_text("[analytics]\nas_of = \"soon\"\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "db", "info"])
    assert result.exit_code != 0
    assert "analytics.as_of" in result.output and "Traceback" not in result.output
