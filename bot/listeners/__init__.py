"""Slack listeners, split by surface like Slack's Bolt starter: commands, events, actions."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, commands, events
from bot.replies import Replier


def register_listeners(app: App, replier: Replier) -> None:
    """Wire every listener of the bot into `app`."""
    commands.register(app, replier)
    events.register(app, replier)
    actions.register(app, replier)
