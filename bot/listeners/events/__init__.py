"""Events: mentions in channels and direct messages to the bot."""

from __future__ import annotations

from slack_bolt import App

from bot.listeners.events.app_mention import make_answer_mention
from bot.listeners.events.direct_message import (
    ignore_message,
    is_direct_message,
    make_answer_direct_message,
)
from bot.replies import Replier


def register(app: App, replier: Replier) -> None:
    app.event("app_mention")(make_answer_mention(replier))
    app.event("message", matchers=[is_direct_message])(make_answer_direct_message(replier))
    # Every other message event (edits, joins, bots, channels) is acknowledged and dropped.
    app.event("message")(ignore_message)
