"""The command router: one text in, one `Answer` out — for Slack, the console and tests.

A command is a module in `bot/commands/` that defines a `Command`; adding one is that
file plus one line in `bot/commands/__init__.py`.
"""

from __future__ import annotations

import logging
import shlex
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from bot.answers import Answer, error_answer
from bot.settings import Settings

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """The command text is wrong; the message says what is accepted."""


@dataclass(frozen=True)
class Requester:
    """Who asked, and where (both None in the console)."""

    user_id: str | None = None
    channel_id: str | None = None
    source: str = "console"


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    examples: tuple[str, ...]
    handler: Callable[[CommandContext, list[str]], Answer]
    aliases: tuple[str, ...] = ()
    # The answer depends only on the arguments, the data and the settings (not on who asks,
    # no side effects), so it may be pre-rendered and served from bot/answer_cache.py.
    cacheable: bool = False


@dataclass
class CommandContext:
    """What a handler gets: the store, settings, who asked, and shared lookups."""

    engine: Engine
    settings: Settings
    requester: Requester = field(default_factory=Requester)
    command: str = ""

    def as_of(self):  # -> analytics.asof.AsOf
        """The as-of date of the answers: the last refresh's (scores and features are as of
        it), unless settings fix another date; resolved from the orders before any refresh."""
        from analytics.asof import resolve_as_of, stored_as_of

        def compute():  # noqa: ANN202
            fixed = self.settings.as_of_date()
            stored = stored_as_of(self.engine)
            if stored is not None and (fixed is None or stored.date == fixed):
                return stored
            return resolve_as_of(self.engine, fixed=fixed)

        return _cached(self.engine, ("as_of", self.settings.as_of), compute)

    def place(self, text: str | None):  # -> storage.geography.Place
        """Resolve a place name; raises UnknownPlace with the closest matches."""
        from storage.geography import resolve_place

        states, regions = _cached(self.engine, ("places",), lambda: _known_places(self.engine))
        return resolve_place(text, states, regions)


def _known_places(engine: Engine) -> tuple[list[str], list[str]]:
    from sqlalchemy import select

    from storage.schema import customers

    with engine.connect() as conn:
        states = [r[0] for r in conn.execute(select(customers.c.state).distinct()) if r[0]]
        regions = [r[0] for r in conn.execute(select(customers.c.region).distinct()) if r[0]]
    return states, regions


# Small per-store cache of lookups that only change when data is loaded or refreshed.
_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def _data_version(engine: Engine) -> str:
    from storage.store import get_meta

    return str(get_meta(engine, "refreshed_at", "")) + str(get_meta(engine, "loaded_at", ""))


def _cached(engine: Engine, key: tuple, compute: Callable[[], object]):
    full = (id(engine), _data_version(engine), *key)
    with _CACHE_LOCK:
        if full in _CACHE:
            return _CACHE[full]
    value = compute()
    with _CACHE_LOCK:
        _CACHE[full] = value
    return value


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def split_command(text: str) -> tuple[str, list[str]]:
    """("segments", ["rfm", "SP"]) for "/segments rfm SP"; quotes group words."""
    text = (text or "").strip()
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.replace('"', " ").replace("'", " ").split()
    if not tokens:
        return "", []
    name = tokens[0].lstrip("/").lower()
    return name, tokens[1:]


class Router:
    """Turns command texts into Answers. Never raises: errors become error Answers."""

    def __init__(self, engine: Engine, settings: Settings):
        from bot.commands import COMMANDS

        self.engine = engine
        self.settings = settings
        self.commands: dict[str, Command] = {}
        for cmd in COMMANDS:
            self.commands[cmd.name] = cmd
            for alias in cmd.aliases:
                self.commands[alias] = cmd

    def resolve(self, text: str) -> tuple[str, Command | None, list[str]]:
        """(name typed, its Command or None, arguments) — "/pulse churn-risk SP" unwrapped."""
        name, args = split_command(text)
        if name == "pulse":  # the umbrella command: "/pulse segments SP"
            name, args = (args[0].lstrip("/").lower(), args[1:]) if args else ("help", [])
        name = name or "help"
        return name, self.commands.get(name), args

    def handle(self, text: str, requester: Requester | None = None) -> Answer:
        """The answer to `text` ("/segments rfm SP", "kpis", "/pulse churn-risk RJ")."""
        name, cmd, args = self.resolve(text)
        if cmd is None:
            from difflib import get_close_matches

            close = get_close_matches(name, list(self.commands), n=2)
            hint = f" Did you mean `/{close[0]}`?" if close else ""
            return error_answer(
                text, f"I don't know the command `/{name}`.{hint} Try `/pulse-help` for the list."
            )
        ctx = CommandContext(self.engine, self.settings, requester or Requester(), command=cmd.name)
        return run_handler(cmd, ctx, args, text)


def run_handler(cmd: Command, ctx: CommandContext, args: list[str], text: str) -> Answer:
    """Call a handler, turning every failure into a friendly error Answer."""
    from analytics.errors import AnalyticsError
    from storage.geography import UnknownPlace

    try:
        return cmd.handler(ctx, args)
    except UsageError as exc:
        return error_answer(text, f"{exc}\nUsage: `{cmd.usage}`\nExamples: "
                            + ", ".join(f"`{e}`" for e in cmd.examples))
    except UnknownPlace as exc:
        return error_answer(text, f"{exc} I accept a state code (SP), a state name (são paulo), "
                            "a region (sudeste, southeast) or `all`.")
    except AnalyticsError as exc:
        return error_answer(text, str(exc))
    except Exception:  # noqa: BLE001 - the user gets a reference, the log gets the details
        reference = uuid.uuid4().hex[:8]
        log.exception("command %r failed (reference %s)", text, reference)
        return error_answer(
            text, f"Something went wrong while answering. Reference `{reference}` — "
            "the details are in the bot's log.", reference=reference)
