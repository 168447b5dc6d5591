"""Running the Slack app: over HTTP (waitress) or Socket Mode, picked from the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy import Engine, text

from bot.settings import Settings, SettingsError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
# Each request thread only waits for the acknowledgement (answers run elsewhere), so a
# few dozen threads carry many simultaneous users.
HTTP_THREADS = 32

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(app: App, engine: Engine | None = None) -> WsgiApp:
    """POST /slack/events for Slack; GET /healthz answers 200 when the store answers."""
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    acks = getattr(getattr(app, "replier", None), "acks", None)  # bot.replies.AcksFirst

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            ok = _store_ok(engine)
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n" if ok else b"store unavailable\n"]
        if not _timestamp_ok(environ):
            # Bolt would answer 500 to a non-numeric timestamp; it is simply unauthorised.
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8")])
            return [b""]
        if acks is None:
            return slack(environ, start_response)
        with acks.request():
            return slack(environ, start_response)

    return application


def _timestamp_ok(environ: dict[str, Any]) -> bool:
    value = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP")
    return value is None or value.strip().isdigit()


def _store_ok(engine: Engine | None) -> bool:
    if engine is None:
        return True
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        log.exception("health check: the store does not answer")
        return False


def make_http_server(app: App, host: str, port: int, *, engine: Engine | None = None,
                     threads: int = HTTP_THREADS):
    """A waitress server for the app, bound but not yet serving (port 0 picks a free one;
    read it from `.effective_port`). `.run()` serves, `.close()` stops."""
    import waitress

    return waitress.create_server(
        wsgi_app(app, engine), host=host, port=port, threads=threads, ident="retail-pulse",
        max_request_body_size=1 << 20, channel_timeout=60,
    )


def serve_http(app: App, host: str, port: int, *, engine: Engine | None = None,
               threads: int = HTTP_THREADS) -> None:
    """Serve Slack's HTTP requests on host:port until interrupted."""
    server = make_http_server(app, host, port, engine=engine, threads=threads)
    log.info("Retail Pulse listening on http://%s:%s%s (%d threads)", host,
             server.effective_port, EVENTS_PATH, threads)
    try:
        server.run()
    finally:
        server.close()


def serve_socket_mode(app: App, app_token: str) -> None:
    """Connect to Slack over Socket Mode (no public URL needed) until interrupted."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    log.info("Retail Pulse connecting to Slack in Socket Mode")
    SocketModeHandler(app, app_token).start()


def configure_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines on stderr, unless logging is already set up."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(settings: Settings, engine: Engine) -> bool:
    """Run the bot as the settings say; False when Slack is not configured (open the console).

    SLACK_APP_TOKEN → Socket Mode; SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET → HTTP on
    slack.host:slack.port. The scheduled digest and refresh run alongside. A half-done
    setup stops with a SettingsError saying what is missing.
    """
    from bot.app import create_app

    bot, secret, app_token = (settings.slack_bot_token, settings.slack_signing_secret,
                              settings.slack_app_token)
    if not (bot or secret or app_token):
        return False
    configure_logging()
    if app_token:
        if not bot:
            raise SettingsError("SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not; "
                                "Socket Mode needs both (xapp-… and xoxb-…).")
        app = create_app(settings, engine)
        try:
            with scheduled_jobs(settings, engine, app), answer_warming(settings, engine, app):
                serve_socket_mode(app, app_token)
        finally:
            app.replier.shutdown(wait=False)  # its answer processes stop with it
        return True
    missing = [n for n, v in (("SLACK_BOT_TOKEN", bot), ("SLACK_SIGNING_SECRET", secret)) if not v]
    if missing:
        raise SettingsError(f"{' and '.join(missing)} not set; HTTP mode needs SLACK_BOT_TOKEN and "
                            "SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode).")
    app = create_app(settings, engine)
    try:
        with scheduled_jobs(settings, engine, app), answer_warming(settings, engine, app):
            serve_http(app, settings.slack_host, settings.slack_port, engine=engine)
    finally:
        app.replier.shutdown(wait=False)
    return True


@contextmanager
def scheduled_jobs(settings: Settings, engine: Engine, app: App) -> Iterator[Any]:
    """The weekly digests and the nightly refresh (bot/scheduler.py) run next to the bot."""
    from bot.scheduler import start_scheduler

    scheduler = start_scheduler(settings, engine, app.client)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


@contextmanager
def answer_warming(settings: Settings, engine: Engine, app: App | None = None) -> Iterator[Any]:
    """Commands' answers pre-rendered in the background whenever the data changes (by the
    app's answer processes when it has them)."""
    from bot.answer_cache import Warmer

    processes = app.replier.answers.processes if app is not None else None
    warmer = Warmer(engine, settings, processes=processes).start()
    try:
        yield warmer
    finally:
        warmer.stop()
