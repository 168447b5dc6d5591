"""Settings: `config/pulse.toml` (or PULSE_CONFIG), then `.env`, then the environment.

A wrong value stops start-up with a `SettingsError` that names the setting and what
is accepted. Secrets (Slack tokens) are read only from the environment or `.env`.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_CONFIG = Path("config") / "pulse.toml"


class SettingsError(ValueError):
    """A setting has a value that is not accepted."""


@dataclass(frozen=True)
class DigestSchedule:
    channel: str
    cron: str = "0 9 * * mon"
    timezone: str = "America/Sao_Paulo"
    filter: str = ""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///pulse.db"
    as_of: str = "auto"
    churn_horizon_days: int = 90
    churn_retrain_days: int = 0
    discount_rate: float = 0.10
    risk_high: float = 0.70
    risk_medium: float = 0.40
    min_group_customers: int = 30
    currency: str = "R$"
    seed: int = 42
    output_dir: str = "pulse-out"
    slack_api_url: str = "https://slack.com/api/"
    slack_host: str = "0.0.0.0"
    slack_port: int = 3000
    in_channel_commands: tuple[str, ...] = (
        "kpis", "segments", "cohorts", "ltv", "delivery", "payments", "finance",
        "churn-risk", "migration", "model",
    )
    export_allowed_users: tuple[str, ...] = ()
    export_allowed_channels: tuple[str, ...] = ()
    export_max_rows: int = 100_000
    admin_channel: str = ""
    refresh_cron: str = "0 3 * * *"
    misfire_grace_seconds: int = 21_600
    digests: tuple[DigestSchedule, ...] = (DigestSchedule(channel="#retail-pulse"),)
    # Secrets: environment / .env only.
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)

    def without_secrets(self) -> Settings:
        """These settings with the Slack secrets left out (for a process that needs none)."""
        return replace(self, slack_bot_token=None, slack_signing_secret=None, slack_app_token=None)

    def as_of_date(self) -> dt.date | None:
        """The fixed as-of date, or None when it is `auto`."""
        return None if self.as_of == "auto" else dt.date.fromisoformat(self.as_of)

    def may_export(self, user_id: str | None, channel_id: str | None) -> bool:
        """True when the user or the channel is on the export allowlist."""
        return (user_id is not None and user_id in self.export_allowed_users) or (
            channel_id is not None and channel_id in self.export_allowed_channels
        )


# (toml section, toml key) -> Settings field
_TOML_KEYS: dict[tuple[str, str], str] = {
    ("store", "database_url"): "database_url",
    ("analytics", "as_of"): "as_of",
    ("analytics", "churn_horizon_days"): "churn_horizon_days",
    ("analytics", "churn_retrain_days"): "churn_retrain_days",
    ("analytics", "discount_rate"): "discount_rate",
    ("analytics", "risk_high"): "risk_high",
    ("analytics", "risk_medium"): "risk_medium",
    ("analytics", "min_group_customers"): "min_group_customers",
    ("analytics", "currency"): "currency",
    ("analytics", "seed"): "seed",
    ("output", "dir"): "output_dir",
    ("slack", "api_url"): "slack_api_url",
    ("slack", "host"): "slack_host",
    ("slack", "port"): "slack_port",
    ("slack", "in_channel_commands"): "in_channel_commands",
    ("export", "allowed_users"): "export_allowed_users",
    ("export", "allowed_channels"): "export_allowed_channels",
    ("export", "max_rows"): "export_max_rows",
    ("digest", "admin_channel"): "admin_channel",
    ("digest", "refresh_cron"): "refresh_cron",
    ("digest", "misfire_grace_seconds"): "misfire_grace_seconds",
}

_ENV_KEYS: dict[str, str] = {
    "PULSE_DATABASE_URL": "database_url",
    "PULSE_AS_OF": "as_of",
    "PULSE_CHURN_HORIZON_DAYS": "churn_horizon_days",
    "PULSE_CHURN_RETRAIN_DAYS": "churn_retrain_days",
    "PULSE_CURRENCY": "currency",
    "PULSE_OUTPUT_DIR": "output_dir",
    "SLACK_API_URL": "slack_api_url",
    "PULSE_HOST": "slack_host",
    "PULSE_PORT": "slack_port",
    "PULSE_EXPORT_USERS": "export_allowed_users",
    "PULSE_EXPORT_CHANNELS": "export_allowed_channels",
    "PULSE_ADMIN_CHANNEL": "admin_channel",
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_APP_TOKEN": "slack_app_token",
}

_INT_FIELDS = {"churn_horizon_days", "churn_retrain_days", "min_group_customers", "seed", "slack_port",
               "export_max_rows", "misfire_grace_seconds"}
_FLOAT_FIELDS = {"discount_rate", "risk_high", "risk_medium"}
_LIST_FIELDS = {"in_channel_commands", "export_allowed_users", "export_allowed_channels"}
_SECTIONS = {"store", "analytics", "output", "slack", "export", "digest"}


def read_dotenv(path: Path) -> dict[str, str]:
    """Variables of a `.env` file (KEY=value lines; # comments; optional quotes)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _coerce(name: str, value: Any, origin: str) -> Any:
    try:
        if name in _INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
        if name in _LIST_FIELDS:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return tuple(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        kind = ("a whole number" if name in _INT_FIELDS else "a number" if name in _FLOAT_FIELDS
                else "a list of strings" if name in _LIST_FIELDS else "a string")
        raise SettingsError(f"{origin}: {value!r} is not accepted; expected {kind}.") from None


def _validate(s: Settings) -> None:
    if s.as_of != "auto":
        try:
            dt.date.fromisoformat(s.as_of)
        except ValueError:
            raise SettingsError(
                f"analytics.as_of / PULSE_AS_OF: {s.as_of!r} is not accepted; "
                "use \"auto\" or a date like 2018-08-29."
            ) from None
    if not 7 <= s.churn_horizon_days <= 730:
        raise SettingsError(
            f"analytics.churn_horizon_days: {s.churn_horizon_days} is not accepted; "
            "use a number of days from 7 to 730."
        )
    if not 0 <= s.churn_retrain_days <= 365:
        raise SettingsError(
            f"analytics.churn_retrain_days: {s.churn_retrain_days} is not accepted; use a number "
            "of days from 0 (retrain whenever the data or the as-of date change) to 365."
        )
    if not 0 <= s.discount_rate < 1:
        raise SettingsError(f"analytics.discount_rate: {s.discount_rate} is not accepted; use 0 to 0.99.")
    if not 0 < s.risk_medium < s.risk_high < 1:
        raise SettingsError(
            f"analytics.risk_medium/risk_high: {s.risk_medium}/{s.risk_high} are not accepted; "
            "they must satisfy 0 < risk_medium < risk_high < 1."
        )
    if s.min_group_customers < 1:
        raise SettingsError("analytics.min_group_customers: must be at least 1.")
    if not 1 <= s.slack_port <= 65535:
        raise SettingsError(f"slack.port / PULSE_PORT: {s.slack_port} is not accepted; use 1-65535.")
    if s.export_max_rows < 1:
        raise SettingsError("export.max_rows: must be at least 1.")
    if not s.database_url.startswith(("sqlite", "postgresql")):
        raise SettingsError(
            f"store.database_url / PULSE_DATABASE_URL: {s.database_url.split(':')[0]!r} is not "
            "accepted; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB."
        )
    if not s.slack_api_url.startswith(("http://", "https://")):
        raise SettingsError("slack.api_url / SLACK_API_URL: must be an http(s) URL.")
    for d in s.digests:
        _validate_cron("digest.schedules.cron", d.cron)
        try:
            ZoneInfo(d.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"digest.schedules.timezone: {d.timezone!r} is not accepted; use an IANA "
                "name such as America/Sao_Paulo or Europe/London."
            ) from None
    _validate_cron("digest.refresh_cron", s.refresh_cron)


def _validate_cron(name: str, cron: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise SettingsError(
            f"{name}: {cron!r} is not accepted ({exc}); use five crontab fields, "
            "e.g. \"0 9 * * mon\"."
        ) from None


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | Path | None = ".env",
) -> Settings:
    """Settings from the TOML file, `.env` and environment (later wins), validated."""
    environ: dict[str, str] = {}
    if dotenv is not None:
        environ.update(read_dotenv(Path(dotenv)))
    environ.update(os.environ if env is None else env)

    cfg_path = Path(path) if path else Path(environ.get("PULSE_CONFIG", DEFAULT_CONFIG))
    values: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{cfg_path}: not valid TOML ({exc}).") from None
        for section, table in data.items():
            if section not in _SECTIONS or not isinstance(table, dict):
                raise SettingsError(
                    f"{cfg_path}: unknown section [{section}]; accepted: {', '.join(sorted(_SECTIONS))}."
                )
            for key, value in table.items():
                if section == "digest" and key == "schedules":
                    values["digests"] = _digests(value)
                    continue
                name = _TOML_KEYS.get((section, key))
                if name is None:
                    accepted = sorted(k for s, k in _TOML_KEYS if s == section)
                    raise SettingsError(
                        f"{cfg_path}: unknown setting {section}.{key}; accepted in [{section}]: "
                        f"{', '.join(accepted)}."
                    )
                values[name] = _coerce(name, value, f"{section}.{key}")
    elif path:
        raise SettingsError(f"settings file {cfg_path} does not exist.")

    for var, name in _ENV_KEYS.items():
        if environ.get(var):
            values[name] = _coerce(name, environ[var], var)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _digests(value: Any) -> tuple[DigestSchedule, ...]:
    if not isinstance(value, list):
        raise SettingsError("digest.schedules: use [[digest.schedules]] tables.")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("channel"), str):
            raise SettingsError("digest.schedules: every schedule needs a channel = \"…\".")
        unknown = set(item) - {"channel", "cron", "timezone", "filter"}
        if unknown:
            raise SettingsError(
                f"digest.schedules: unknown key(s) {', '.join(sorted(unknown))}; "
                "accepted: channel, cron, timezone, filter."
            )
        out.append(DigestSchedule(**{k: str(v) for k, v in item.items()}))
    return tuple(out)
