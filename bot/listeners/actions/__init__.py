"""Interactive actions: buttons under answers ("Export CSV")."""

from __future__ import annotations

import re

from slack_bolt import App

from bot.blocks import ACTION_PREFIX
from bot.listeners.actions.run_button import make_run_button
from bot.replies import Replier


def register(app: App, replier: Replier) -> None:
    app.action(re.compile("^" + re.escape(ACTION_PREFIX)))(make_run_button(replier))
