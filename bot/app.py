"""The Slack app: one Bolt `App` with every listener wired to the command router."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.answer_processes import DEFAULT_PROCESSES
from bot.listeners import register_listeners
from bot.replies import Replier
from bot.router import Router
from bot.settings import Settings, SettingsError
from bot.slack_io import make_web_client, protect_secrets


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    client: WebClient | None = None,
    process_before_response: bool = True,
    workers: int = 16,
    answer_processes: int = DEFAULT_PROCESSES,
) -> App:
    """A Bolt App answering every router command, mentions, DMs and buttons.

    The token and signing secret come from `settings`; the Web API client talks to
    `settings.slack_api_url` and retries 429 (Retry-After), 5xx and lost connections.
    Bolt checks every request's signature and refuses ones older than 5 minutes.
    `workers` threads compute answers; acknowledging never waits for them. Cacheable answers
    that were not pre-rendered are computed by `answer_processes` worker processes
    (bot/answer_processes.py; 0: on those threads), so that computing never holds this
    process's interpreter lock against the acknowledgements. Listeners only
    acknowledge and queue the answer, so by default they run in the request thread
    (`process_before_response`): the HTTP reply leaves as soon as they return, instead of
    after Bolt's 10 ms polling for an acknowledgement made on another thread.
    """
    token = client.token if client is not None else settings.slack_bot_token
    if not token:
        raise SettingsError("SLACK_BOT_TOKEN is not set; the Slack app needs the bot token (xoxb-…).")
    protect_secrets([token, settings.slack_signing_secret, settings.slack_app_token])
    if client is None:
        client = make_web_client(token, settings.slack_api_url)
    app = App(
        name="retail-pulse",
        client=client,
        signing_secret=settings.slack_signing_secret or "",
        process_before_response=process_before_response,
        # Runs listeners when process_before_response is off; answers run on the Replier's pool.
        listener_executor=ThreadPoolExecutor(max_workers=32, thread_name_prefix="bolt"),
    )
    replier = Replier(Router(engine, settings), settings, workers=workers,
                      answer_processes=answer_processes)
    app.replier = replier  # type: ignore[attr-defined] - for runners and tests (shutdown, waiting)
    register_listeners(app, replier)
    return app
