"""`/pulse-help`: every command with its usage and examples."""

from __future__ import annotations

import pandas as pd

from bot.answers import Answer, Table
from bot.router import Command, CommandContext


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    from bot.commands import COMMANDS

    rows = [{"command": c.usage, "what it answers": c.summary, "example": c.examples[0]}
            for c in COMMANDS if c.name != "pulse-help"]
    return Answer(
        command="/pulse-help",
        title="Retail Pulse — what you can ask",
        kind="help",
        summary=(
            "Ask with a slash command, `/pulse <command>`, or by mentioning me "
            "(“@Retail Pulse churn risk in Rio de Janeiro”). Places: a state code (SP), a state "
            "name with or without accents (são paulo), a region (sudeste, southeast) or `all`."
        ),
        tables=[Table("Commands", pd.DataFrame(rows))],
    )


COMMAND = Command(
    name="pulse-help",
    usage="/pulse-help",
    summary="This list of commands.",
    examples=("/pulse-help",),
    handler=handle,
    aliases=("help", "h", "?"),
)
