"""Slash commands: one listener per router command, plus the umbrella `/pulse`."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners.commands.slash_command import make_answer_command
from bot.replies import Replier
from bot.router import Router


def slash_command_names(router: Router) -> list[str]:
    """"/kpis", "/segments", … for every router command, then "/pulse".

    Aliases get no slash command, nor do commands whose usage is "/pulse NAME …"
    (reachable through the umbrella only, like `/pulse digest`).
    """
    names = list(dict.fromkeys(cmd.name for cmd in router.commands.values()
                               if not cmd.usage.startswith("/pulse ")))
    return [f"/{n}" for n in names] + ["/pulse"]


def register(app: App, replier: Replier) -> None:
    answer_command = make_answer_command(replier)
    for name in slash_command_names(replier.router):
        app.command(name)(answer_command)
