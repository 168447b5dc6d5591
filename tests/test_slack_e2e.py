"""The Slack face end to end: the real Bolt app served by waitress on 127.0.0.1, signed
requests as Slack sends them, and the Web API played by tests/slack_emulator.py.

Nothing in Bolt or HTTP is mocked. Test-only commands (`demo-*`) are added to the test
app's own router to drive charts, exports, huge tables, slow and failing answers through
the Slack layer before (and independently of) the analytics commands.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from slack_emulator import RESPONSE_URL, UPLOAD, SlackEmulator, validate_blocks
from sqlalchemy import Engine, delete, select

from bot.answers import Answer, Button, Chart, Export, Figure, Table
from bot.app import create_app
from bot.blocks import ACTION_PREFIX, MAX_BLOCKS
from bot.router import Command, Requester, Router
from bot.server import make_http_server
from bot.settings import Settings, SettingsError
from storage import schema

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "xoxb-e2e-0000000000-1111111111-abcdefGHIJKLmnopqrstuvwx"
SECRET = "e2e-signing-secret-9f8e7d6c5b4a39281706"
ALICE, BOB = "U0ALICE01", "U0BOB0001"  # alice may export, bob may not
GENERAL, RANDOM = "C0GENERAL", "C0RANDOM01"  # the bot is in #general, not in #random
ACK_LIMIT = 3.0


# --- Slack, emulated, and the app served for real --------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator(token=TOKEN) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh_emulator(request: pytest.FixtureRequest) -> None:
    if "served" in request.fixturenames:  # the last test's answers land before the reset
        assert request.getfixturevalue("served").app.replier.wait_idle(timeout=60)
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").reset()


@dataclass
class Served:
    url: str
    app: Any
    settings: Settings
    engine: Engine

    @property
    def router(self) -> Router:
        return self.app.replier.router


def _png(title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["a", "b"], [1, 2])
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


DEMO_ROWS = pd.DataFrame({"customer_id": [f"c{i}" for i in range(7)],
                          "churn_prob": [0.9 - i / 20 for i in range(7)]})


def _demo_commands() -> list[Command]:
    """Answers with what the analytics commands will carry: charts, exports, buttons."""

    def chart(ctx, args):
        return Answer(command="/demo-chart", title="Demo with a chart",
                      figures=[Figure("Customers", "1,234", 1234), Figure("Revenue", "R$ 9", 9.0)],
                      tables=[Table("Rows", DEMO_ROWS)], charts=[Chart("demo-chart", "Demo", _png("d"))],
                      buttons=[Button("Export CSV", "/pulse demo-export", "export")])

    def export(ctx, args):
        requester = ctx.requester
        if not ctx.settings.may_export(requester.user_id, requester.channel_id):
            return Answer(command="/demo-export", title="Sorry", kind="error",
                          summary="You are not on the export allowlist.")
        content = DEMO_ROWS.to_csv(index=False).encode()
        return Answer(command="/demo-export", title="Export ready",
                      summary=f"{len(DEMO_ROWS)} customers exported.",
                      export=Export("at-risk.csv", content, len(DEMO_ROWS), tuple(DEMO_ROWS.columns)))

    def huge(ctx, args):
        wide = pd.DataFrame({f"column {c}": [f"value {r} " + "x" * 50 for r in range(3000)]
                             for c in range(10)})
        return Answer(command="/demo-huge", title="H" * 400, summary="s " * 500,
                      figures=[Figure(f"f{i}", "v" * 50) for i in range(40)],
                      tables=[Table(f"t{i}", wide, note="n " * 2000) for i in range(60)])

    def slow(ctx, args):
        time.sleep(float(args[0]) if args else 2.0)
        return Answer(command="/demo-slow", title="Slow answer")

    def broken(ctx, args):
        # A well-formed command whose answer the Slack layer cannot render.
        return Answer(command="/demo-broken", title="Broken", tables=[Table("t", None)])  # type: ignore[arg-type]

    spec = {"demo-chart": chart, "demo-export": export, "demo-huge": huge, "demo-slow": slow,
            "demo-broken": broken}
    return [Command(name, f"/{name}", "test only", (f"/{name}",), fn) for name, fn in spec.items()]


def _serve(emu: SlackEmulator, engine: Engine, *, process_before_response: bool = True,
           **overrides: Any) -> Iterator[Served]:
    settings = Settings(
        database_url=str(engine.url), slack_api_url=emu.base_url, slack_bot_token=TOKEN,
        slack_signing_secret=SECRET, export_allowed_users=(ALICE,),
        in_channel_commands=(*Settings().in_channel_commands, "demo-chart", "demo-huge"),
        **overrides)
    app = create_app(settings, engine, process_before_response=process_before_response)
    for cmd in _demo_commands():
        app.replier.router.commands[cmd.name] = cmd
    server = make_http_server(app, "127.0.0.1", 0, engine=engine)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.effective_port}", app, settings, engine)
    finally:
        # the serving loop runs while its map holds sockets: emptied and woken, it returns
        # before the sockets close (closed under it, its select() failed with EBADF)
        server._map.clear()
        server.pull_trigger()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the HTTP server did not stop"
        server.close()
        app.replier.shutdown(wait=True)


@pytest.fixture(scope="module")
def served(emu: SlackEmulator, sample_engine: Engine) -> Iterator[Served]:
    yield from _serve(emu, sample_engine)


# --- speaking Slack's HTTP ---------------------------------------------------------------------


def signed_headers(body: str, *, ts: int | None = None, secret: str = SECRET,
                   content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    base = f"v0:{ts}:{body}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": signature,
            "Content-Type": content_type}


@dataclass
class Reply:
    status: int
    body: bytes
    seconds: float


def post(served: Served, body: str, headers: dict[str, str], path: str = "/slack/events") -> Reply:
    req = urllib.request.Request(served.url + path, data=body.encode(), headers=headers,
                                 method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, resp.read(), time.perf_counter() - start)
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read(), time.perf_counter() - start)


def slash(served: Served, emu: SlackEmulator, command: str, text: str = "", *,
          user: str = ALICE, channel: str = GENERAL) -> tuple[Reply, str]:
    """POST a signed slash command; (the HTTP reply, the name of its response_url sink)."""
    sink = uuid.uuid4().hex[:12]
    body = urllib.parse.urlencode({
        "token": "legacy-verification-token", "team_id": emu.team_id, "team_domain": "pulse",
        "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": "x",
        "command": command, "text": text, "api_app_id": emu.app_id, "is_enterprise_install": "false",
        "response_url": emu.response_url(sink), "trigger_id": f"{uuid.uuid4().int}.1.x",
    })
    return post(served, body, signed_headers(body)), sink


def event(served: Served, emu: SlackEmulator, ev: dict[str, Any], *, event_id: str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    payload = {
        "token": "legacy", "team_id": emu.team_id, "api_app_id": emu.app_id, "event": ev,
        "type": "event_callback", "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [{"team_id": emu.team_id, "user_id": emu.bot_user_id, "is_bot": True}],
    }
    body = json.dumps(payload)
    return post(served, body, {**signed_headers(body, content_type="application/json"),
                               **(headers or {})})


def click(served: Served, emu: SlackEmulator, button: dict[str, Any], message_ts: str, *,
          user: str = ALICE, channel: str = GENERAL) -> tuple[Reply, str]:
    sink = uuid.uuid4().hex[:12]
    payload = {
        "type": "block_actions", "user": {"id": user, "username": "x", "team_id": emu.team_id},
        "api_app_id": emu.app_id, "token": "legacy",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": "1.2.3", "team": {"id": emu.team_id, "domain": "pulse"},
        "channel": {"id": channel, "name": "general"},
        "message": {"type": "message", "ts": message_ts, "bot_id": emu.bot_id, "text": "x"},
        "response_url": emu.response_url(sink),
        "actions": [{**button, "block_id": "b1", "action_ts": str(time.time())}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    return post(served, body, signed_headers(body)), sink


def wait(emu: SlackEmulator, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    return emu.wait_for(predicate, timeout=timeout)


def response(emu: SlackEmulator, sink: str, timeout: float = 10.0):
    return wait(emu, lambda: emu.responses(sink), timeout)[0]


def figures_in(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """label -> value of the figure fields ("*Label*\\nvalue")."""
    out = {}
    for block in blocks:
        for fld in block.get("fields", []):
            label, _, value = fld["text"].partition("\n")
            out[label.strip("*")] = value
    return out


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def all_text(blocks: list[dict[str, Any]]) -> str:
    return unescape(json.dumps(blocks, ensure_ascii=False))


# --- acknowledging and answering -----------------------------------------------------------------


def test_help_is_acked_fast_and_answered_ephemerally(served: Served, emu: SlackEmulator) -> None:
    acks = served.app.replier.acks  # the server counts the request while it is acknowledged
    handled = acks.handled
    reply, sink = slash(served, emu, "/pulse-help")
    assert reply.status == 200 and reply.seconds < ACK_LIMIT
    assert acks.handled == handled + 1 and acks.in_flight == 0
    got = response(emu, sink)
    assert got.ok and got.errors == ()
    assert got.response_type == "ephemeral"
    expected = Router(served.engine, served.settings).handle("/pulse-help")
    assert got.blocks[0]["text"]["text"] == expected.title
    text = all_text(got.blocks)
    rows = expected.tables[0].frame.to_dict(orient="records")
    assert rows
    for row in rows:
        assert f"• `{row['command']}` — {row['what it answers']} — `{row['example']}`" in text
    assert validate_blocks(got.blocks) == []
    # Nothing is posted into the channel for an ephemeral answer.
    assert emu.messages(GENERAL) == []


def test_umbrella_command_gives_the_same_answer(served: Served, emu: SlackEmulator) -> None:
    _, a = slash(served, emu, "/pulse-help")
    _, b = slash(served, emu, "/pulse", "help")
    assert response(emu, a).blocks == response(emu, b).blocks


def test_unknown_command_is_an_ephemeral_error(served: Served, emu: SlackEmulator) -> None:
    _, sink = slash(served, emu, "/pulse", "segmnts SP")
    got = response(emu, sink)
    assert got.response_type == "ephemeral"
    assert got.blocks[0]["text"]["text"].startswith("⚠️")
    assert "I don't know the command `/segmnts`" in all_text(got.blocks)


def test_every_router_command_has_a_slash_listener(served: Served) -> None:
    from bot.commands import COMMANDS
    from bot.listeners.commands import slash_command_names

    names = slash_command_names(Router(served.engine, served.settings))
    assert names[-1] == "/pulse"
    own = {f"/{c.name}" for c in COMMANDS if not c.usage.startswith("/pulse ")}
    assert own and own <= set(names)
    umbrella_only = {f"/{c.name}" for c in COMMANDS} - own
    assert not umbrella_only & set(names)


def test_in_channel_answer_with_chart_threaded_under_it(served: Served, emu: SlackEmulator) -> None:
    from PIL import Image

    reply, _ = slash(served, emu, "/pulse", "demo-chart")
    assert reply.seconds < ACK_LIMIT
    upload = wait(emu, lambda: emu.uploads(GENERAL))[0]
    message = emu.messages(GENERAL)[0]
    assert message.thread_ts is None
    assert upload.thread_ts == message.ts and upload.channels == (GENERAL,)
    image = Image.open(io.BytesIO(upload.content))
    assert image.format == "PNG" and image.size[0] > 10
    assert upload.filename == "demo-chart.png"
    assert figures_in(message.blocks) == {"Customers": "1,234", "Revenue": "R$ 9"}
    assert "asked by <@U0ALICE01> · `/pulse demo-chart`" in json.dumps(message.blocks,
                                                                       ensure_ascii=False)
    button = message.blocks[-1]["elements"][0]
    assert button["action_id"] == ACTION_PREFIX + "export" and button["value"] == "/pulse demo-export"


def test_bot_not_in_channel_answers_through_response_url(served: Served, emu: SlackEmulator) -> None:
    _, sink = slash(served, emu, "/pulse", "demo-chart", channel=RANDOM)
    wait(emu, lambda: len(emu.responses(sink)) >= 2)
    answer, note = emu.responses(sink)[:2]
    assert answer.response_type == "in_channel" and answer.ok
    assert figures_in(answer.blocks)["Customers"] == "1,234"
    assert note.response_type == "ephemeral" and "invite me" in note.text
    assert emu.uploads() == []


def test_export_uploads_the_csv_for_an_allowed_user(served: Served, emu: SlackEmulator) -> None:
    _, sink = slash(served, emu, "/pulse", "demo-export")
    upload = wait(emu, lambda: emu.uploads(GENERAL))[0]
    rows = list(csv.DictReader(io.StringIO(upload.content.decode())))
    assert [r["customer_id"] for r in rows] == list(DEMO_ROWS["customer_id"])
    assert upload.filename == "at-risk.csv" and "<@U0ALICE01> exported 7 rows" in upload.initial_comment
    assert response(emu, sink).response_type == "ephemeral"


def test_export_refused_for_a_user_not_on_the_allowlist(served: Served, emu: SlackEmulator) -> None:
    _, sink = slash(served, emu, "/pulse", "demo-export", user=BOB)
    got = response(emu, sink)
    assert got.response_type == "ephemeral" and "allowlist" in got.text + all_text(got.blocks)
    time.sleep(0.3)
    assert emu.uploads() == [] and emu.calls("files.getUploadURLExternal") == []


def test_export_into_a_channel_that_refuses_gets_a_note(served: Served, emu: SlackEmulator) -> None:
    _, sink = slash(served, emu, "/pulse", "demo-export", channel=RANDOM)
    wait(emu, lambda: len(emu.responses(sink)) >= 2)
    note = emu.responses(sink)[1]
    assert "could not share `at-risk.csv`" in note.text and "not_in_channel" in note.text
    assert emu.uploads() == []


def test_export_button_runs_in_the_thread_of_its_message(served: Served, emu: SlackEmulator) -> None:
    slash(served, emu, "/pulse", "demo-chart")
    wait(emu, lambda: emu.uploads(GENERAL))
    message = emu.messages(GENERAL)[0]
    button = message.blocks[-1]["elements"][0]
    emu.reset()
    reply, sink = click(served, emu, button, message.ts)
    assert reply.status == 200 and reply.seconds < ACK_LIMIT
    upload = wait(emu, lambda: emu.uploads(GENERAL))[0]
    assert upload.thread_ts == message.ts and upload.filename == "at-risk.csv"
    assert response(emu, sink).response_type == "ephemeral"


def test_huge_answer_is_cut_to_slack_limits_and_accepted(served: Served, emu: SlackEmulator) -> None:
    slash(served, emu, "/pulse", "demo-huge")
    call = wait(emu, lambda: emu.calls("chat.postMessage"))[0]
    assert call.ok, call.response
    blocks = call.params["blocks"]
    assert len(blocks) <= MAX_BLOCKS and validate_blocks(blocks) == []
    text = all_text(blocks)
    assert "showing " in text and " of 3,000 rows" in text
    assert "cut to fit Slack" in text


# --- security ------------------------------------------------------------------------------


def _command_body() -> str:
    return urllib.parse.urlencode({"command": "/pulse-help", "text": "", "user_id": ALICE,
                                   "channel_id": GENERAL, "team_id": "T0PULSE01",
                                   "response_url": "http://127.0.0.1:9/x", "trigger_id": "1"})


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "tampered body", "replayed",
                                  "future", "bad timestamp"])
def test_bad_signatures_get_401_and_no_api_call(served: Served, emu: SlackEmulator, case: str) -> None:
    body = _command_body()
    now = int(time.time())
    headers = {
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
        "wrong secret": signed_headers(body, secret="not-the-secret"),
        "tampered body": signed_headers(body.replace("pulse-help", "pulse-hel")),
        "replayed": signed_headers(body, ts=now - 5 * 60 - 30),
        "future": signed_headers(body, ts=now + 5 * 60 + 30),
        "bad timestamp": {**signed_headers(body), "X-Slack-Request-Timestamp": "yesterday"},
    }[case]
    reply = post(served, body, headers)
    assert reply.status == 401
    time.sleep(0.3)
    assert emu.calls() == []


def test_a_request_four_minutes_old_is_still_accepted(served: Served, emu: SlackEmulator) -> None:
    # The other side of the replay window: Bolt allows 5 minutes of clock skew.
    body = _command_body()
    assert post(served, body, signed_headers(body, ts=int(time.time()) - 4 * 60)).status == 200


def test_url_verification_challenge(served: Served) -> None:
    body = json.dumps({"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"})
    reply = post(served, body, signed_headers(body, content_type="application/json"))
    assert reply.status == 200
    assert b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in reply.body


def test_health_and_unknown_paths(served: Served) -> None:
    with urllib.request.urlopen(served.url + "/healthz", timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(served.url + "/slack/events", timeout=5)  # GET
    assert err.value.code == 404


def test_the_bot_token_never_reaches_the_logs(served: Served, emu: SlackEmulator,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, sink = slash(served, emu, "/pulse-help")
    response(emu, sink)
    slash(served, emu, "/pulse", "demo-chart")
    wait(emu, lambda: emu.uploads(GENERAL))
    # Even a careless log line of ours is scrubbed.
    logging.getLogger("bot.test").warning("token is %s and secret %s", TOKEN, SECRET)
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        logging.getLogger("bot.test").exception("failed")
    time.sleep(0.2)
    text = caplog.text
    assert "chat.postMessage" in text or "chat_postMessage" in text or "Sending a request" in text
    assert TOKEN not in text and SECRET not in text
    assert "token is [redacted] and secret [redacted]" in text
    assert "boom [redacted]" in text


# --- events ------------------------------------------------------------------------------


def test_mention_that_cannot_be_mapped_gets_help_in_its_thread(served: Served,
                                                                  emu: SlackEmulator) -> None:
    reply = event(served, emu, {"type": "app_mention", "user": ALICE, "text": "<@U0PULSEBOT> hello!",
                                "ts": "1700000100.000100", "channel": GENERAL,
                                "event_ts": "1700000100.000100"})
    assert reply.status == 200 and reply.seconds < ACK_LIMIT
    eph = wait(emu, lambda: emu.ephemerals(GENERAL, user=ALICE))[0]
    assert eph.thread_ts == "1700000100.000100"
    text = all_text(eph.blocks)
    assert "couldn't tell what you're asking" in text and "churn risk in Rio de Janeiro" in text


def test_mention_runs_the_mapped_command_in_a_thread(served: Served, emu: SlackEmulator) -> None:
    event(served, emu, {"type": "app_mention", "user": ALICE, "ts": "1700000200.000200",
                        "text": "<@U0PULSEBOT> /pulse demo-chart", "channel": GENERAL})
    upload = wait(emu, lambda: emu.uploads(GENERAL))[0]
    message = emu.messages(GENERAL)[0]
    assert message.thread_ts == "1700000200.000200"
    assert upload.thread_ts == message.ts  # charts go under the answer (same thread)
    assert figures_in(message.blocks)["Customers"] == "1,234"


def test_direct_message_is_answered_in_the_dm(served: Served, emu: SlackEmulator) -> None:
    event(served, emu, {"type": "message", "channel_type": "im", "user": ALICE, "text": "help",
                        "ts": "1700000300.000300", "channel": "D0ALICE01"})
    message = wait(emu, lambda: emu.messages("D0ALICE01"))[0]
    assert message.thread_ts is None
    assert message.blocks[0]["text"]["text"] == Router(served.engine, served.settings).handle(
        "/pulse-help").title


@pytest.mark.parametrize("ev", [
    {"type": "message", "channel_type": "im", "bot_id": "B0OTHER", "text": "help", "user": "U0X"},
    {"type": "message", "channel_type": "im", "subtype": "message_changed", "text": "help"},
    {"type": "message", "channel_type": "im", "subtype": "bot_message", "text": "help"},
    {"type": "message", "channel_type": "channel", "user": ALICE, "text": "help"},
])
def test_bot_messages_and_subtypes_are_ignored(served: Served, emu: SlackEmulator, ev: dict) -> None:
    reply = event(served, emu, {**ev, "ts": "1700000400.000400", "channel": "D0ALICE01"})
    assert reply.status == 200
    time.sleep(0.5)
    assert [c.method for c in emu.calls()] == []


def test_an_event_retried_by_slack_is_answered_once(served: Served, emu: SlackEmulator) -> None:
    ev = {"type": "app_mention", "user": ALICE, "text": "<@U0PULSEBOT> help",
          "ts": "1700000500.000500", "channel": GENERAL}
    event(served, emu, ev, event_id="Ev0SAME0001")
    event(served, emu, ev, event_id="Ev0SAME0001",
          headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    wait(emu, lambda: emu.ephemerals(GENERAL))
    time.sleep(0.5)
    assert len(emu.ephemerals(GENERAL)) == 1


# --- faults --------------------------------------------------------------------------------------


def test_rate_limited_post_is_retried_after_retry_after(served: Served, emu: SlackEmulator) -> None:
    emu.fail_next("chat.postMessage", retry_after=1, times=2)
    slash(served, emu, "/pulse", "demo-chart")
    wait(emu, lambda: emu.uploads(GENERAL), timeout=15)
    calls = emu.calls("chat.postMessage")
    assert [c.status for c in calls] == [429, 429, 200]
    assert calls[1].time - calls[0].time >= 1.0  # waited Retry-After
    assert len(emu.messages(GENERAL)) == 1


def test_rate_limited_response_url_is_retried(served: Served, emu: SlackEmulator) -> None:
    emu.fail_next(RESPONSE_URL, retry_after=1)
    _, sink = slash(served, emu, "/pulse-help")
    wait(emu, lambda: [r for r in emu.responses(sink) if r.ok], timeout=15)
    assert [c.status for c in emu.calls(RESPONSE_URL)] == [429, 200]


def test_server_errors_are_retried(served: Served, emu: SlackEmulator) -> None:
    emu.fail_next("chat.postMessage", status=503)
    emu.fail_next("files.completeUploadExternal", status=502)
    emu.fail_next(UPLOAD, status=500)
    slash(served, emu, "/pulse", "demo-chart")
    upload = wait(emu, lambda: emu.uploads(GENERAL), timeout=15)[0]
    assert upload.thread_ts == emu.messages(GENERAL)[0].ts
    assert len(emu.messages(GENERAL)) == 1


def test_a_failure_in_the_slack_layer_becomes_a_reply_with_a_reference(
        served: Served, emu: SlackEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bot.replies")
    _, sink = slash(served, emu, "/pulse", "demo-broken")
    got = response(emu, sink)
    reference = re.search(r"Reference `([0-9a-f]{8})`", got.text).group(1)
    assert got.response_type == "ephemeral"
    assert any(reference in r.getMessage() and r.exc_info for r in caplog.records)


def test_fifty_concurrent_commands_are_all_acked_and_answered(served: Served,
                                                             emu: SlackEmulator) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: slash(served, emu, "/pulse-help"), range(50)))
    acks = sorted(r.seconds for r, _ in results)
    assert all(r.status == 200 for r, _ in results)
    assert acks[-1] < ACK_LIMIT, acks
    sinks = {s for _, s in results}
    wait(emu, lambda: {r.name for r in emu.responses() if r.ok} >= sinks, timeout=30)


@pytest.mark.slow
def test_concurrent_analytics_commands_all_answered(served: Served, emu: SlackEmulator) -> None:
    _needs(served, "kpis")
    texts = [t for t in ["/kpis SP", "/kpis nordeste", "/cohorts", "/delivery RJ", "/payments",
                         "/finance sul", "/ltv", "/segments", "/churn-risk MG", "/pulse-help"]
             if t.split()[0][1:] in served.router.commands]
    jobs = texts + texts[:1]  # one asked twice at once
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda t: slash(served, emu, *t.partition(" ")[::2]), jobs))
    assert all(r.status == 200 and r.seconds < ACK_LIMIT for r, _ in results), \
        max(r.seconds for r, _ in results)

    def answered() -> bool:
        asked = [json.dumps(m.blocks) for m in emu.messages(GENERAL)]
        replied = {r.name for r in emu.responses()}
        return all(any(f"`{t}`" in a for a in asked) or sink in replied
                   for t, (_, sink) in zip(jobs, results, strict=True))

    wait(emu, answered, timeout=120)
    # Same text, same figures, whoever answered first.
    by_text: dict[str, set[str]] = {}
    for m in emu.messages(GENERAL):
        asked = re.search(r"asked by <@U0ALICE01> · `([^`]+)`", json.dumps(m.blocks, ensure_ascii=False))
        shown = {unescape(k): unescape(v) for k, v in figures_in(m.blocks).items()}
        by_text.setdefault(asked.group(1), set()).add(json.dumps(shown))
    assert by_text and all(len(v) == 1 for v in by_text.values())
    for text, figs in by_text.items():
        expected = _router_answer(served, text)
        assert json.loads(next(iter(figs))) == {f.label: f.value for f in expected.figures}


def test_a_pre_rendered_answer_reaches_slack_as_the_router_computes_it(
        served: Served, emu: SlackEmulator) -> None:
    _needs(served, "segments")
    cache = served.app.replier.answers
    text = "/segments rfm SP"
    report = cache.warm([text])
    key = cache.key_for(text)
    assert report.rendered + report.already == 1 and cache.contains(key)
    expected = _router_answer(served, text)
    reply, _ = slash(served, emu, "/segments", "rfm sp")  # another spelling, the same entry
    assert reply.status == 200 and reply.seconds < ACK_LIMIT
    uploads = wait(emu, lambda: emu.uploads(GENERAL))
    message = emu.messages(GENERAL)[0]
    shown = {unescape(k): unescape(v) for k, v in figures_in(message.blocks).items()}
    assert shown == {f.label: f.value for f in expected.figures}
    assert [u.content for u in uploads] == [c.png for c in expected.charts]
    assert uploads[0].thread_ts == message.ts


def test_an_answer_not_pre_rendered_is_computed_by_a_worker_process(
        served: Served, emu: SlackEmulator) -> None:
    # computed off the Slack process (bot/answer_processes.py), then shown as the router
    # computes it, and kept for the next asker
    _needs(served, "delivery")
    cache, processes = served.app.replier.answers, served.app.replier.answers.processes
    assert processes is not None and processes.usable
    text = "/delivery nordeste"
    key = cache.key_for(text)
    with served.engine.begin() as conn:
        conn.execute(delete(schema.answer_cache).where(schema.answer_cache.c.cache_key == key.key))
    cache._memory.clear()
    before = processes.answered
    expected = _router_answer(served, text)
    reply, _ = slash(served, emu, "/delivery", "nordeste")
    assert reply.status == 200 and reply.seconds < ACK_LIMIT
    message = wait(emu, lambda: emu.messages(GENERAL), timeout=60)[0]
    shown = {unescape(k): unescape(v) for k, v in figures_in(message.blocks).items()}
    assert shown == {f.label: f.value for f in expected.figures}
    assert processes.answered == before + 1
    assert cache.contains(key)


def test_slow_answers_do_not_delay_acks_or_other_answers(served: Served, emu: SlackEmulator) -> None:
    # More slow commands than answer workers: acks still come at once, and a quick
    # command sent after them is not stuck behind all of them.
    workers = served.app.replier.pool._max_workers
    with ThreadPoolExecutor(max_workers=40) as pool:
        slow = list(pool.map(lambda _: slash(served, emu, "/pulse", "demo-slow 3"),
                             range(workers + 8)))
    assert max(r.seconds for r, _ in slow) < ACK_LIMIT
    started = time.perf_counter()
    quick_reply, quick = slash(served, emu, "/pulse-help")
    assert quick_reply.seconds < ACK_LIMIT
    response(emu, quick, timeout=20)
    assert time.perf_counter() - started < 3.5 * 2 + 1  # behind at most one round of slow ones
    wait(emu, lambda: {r.name for r in emu.responses()} >= {s for _, s in slow}, timeout=30)


# --- modes and settings ------------------------------------------------------------------------


def test_the_ack_on_another_thread_mode_also_answers(emu: SlackEmulator, sample_engine: Engine) -> None:
    # Bolt's other mode (listeners on its executor, the request thread waits for the ack)
    # works the same way.
    gen = _serve(emu, sample_engine, process_before_response=False)
    other = next(gen)
    try:
        reply, sink = slash(other, emu, "/pulse", "demo-chart")
        assert reply.status == 200 and reply.seconds < ACK_LIMIT
        assert wait(emu, lambda: emu.uploads(GENERAL))[0].thread_ts == emu.messages(GENERAL)[0].ts
    finally:
        gen.close()


def test_run_returns_false_without_slack_settings(sample_engine: Engine) -> None:
    from bot.server import run

    assert run(Settings(database_url=str(sample_engine.url)), sample_engine) is False


@pytest.mark.parametrize(("tokens", "missing"), [
    ({"slack_bot_token": TOKEN}, "SLACK_SIGNING_SECRET"),
    ({"slack_signing_secret": SECRET}, "SLACK_BOT_TOKEN"),
    ({"slack_app_token": "xapp-1-abc"}, "SLACK_BOT_TOKEN"),
])
def test_run_refuses_a_half_done_setup(sample_engine: Engine, tokens: dict, missing: str) -> None:
    from bot.server import run

    with pytest.raises(SettingsError, match=missing):
        run(Settings(database_url=str(sample_engine.url), **tokens), sample_engine)


def test_run_with_an_app_token_uses_socket_mode(emu: SlackEmulator, sample_engine: Engine) -> None:
    from slack_sdk.errors import SlackApiError

    from bot.server import run

    app_token = "xapp-1-A0PULSEAPP-1-0123456789abcdef"
    settings = Settings(database_url=str(sample_engine.url), slack_api_url=emu.base_url,
                        slack_bot_token=TOKEN, slack_app_token=app_token)
    # The emulator has no WebSocket endpoint: asking Slack for one is as far as it goes.
    with pytest.raises(SlackApiError, match="unknown_method"):
        run(settings, sample_engine)
    call = emu.calls("apps.connections.open")[0]
    assert call.headers.get("Authorization") == f"Bearer {app_token}"


def test_create_app_needs_a_token(sample_engine: Engine) -> None:
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN"):
        create_app(Settings(database_url=str(sample_engine.url)), sample_engine)


def test_app_client_retries_and_uses_the_configured_url(served: Served, emu: SlackEmulator) -> None:
    from slack_sdk.http_retry import RateLimitErrorRetryHandler

    client = served.app.client
    assert client.base_url == emu.base_url
    assert any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers)


# --- the manifest --------------------------------------------------------------------------


def _manifest_text() -> str:
    return (ROOT / "config" / "slack-manifest.yml").read_text(encoding="utf-8")


def test_manifest_declares_every_slash_command(sample_engine: Engine) -> None:
    from bot.listeners.commands import slash_command_names

    declared = re.findall(r"^\s*- command: (/[\w-]+)\s*$", _manifest_text(), flags=re.M)
    assert len(declared) == len(set(declared))
    assert set(slash_command_names(Router(sample_engine, Settings()))) == set(declared)


def _manifest_commands() -> dict[str, dict[str, str]]:
    """command -> its keys (url, description, usage_hint), read without a YAML library."""
    out: dict[str, dict[str, str]] = {}
    for chunk in re.split(r"^    - command: ", _manifest_text(), flags=re.M)[1:]:
        lines = chunk.splitlines()
        keys = {}
        for line in lines[1:]:
            m = re.match(r"^      (\w+): (.*)$", line)
            if not m:
                break
            keys[m.group(1)] = m.group(2).strip().strip('"')
        out[lines[0].strip()] = keys
    return out


def test_manifest_usage_hints_follow_the_router() -> None:
    from bot.commands import COMMANDS

    declared = _manifest_commands()
    for cmd in COMMANDS:
        if cmd.usage.startswith("/pulse "):
            continue
        hint = cmd.usage.removeprefix(f"/{cmd.name}").strip()
        assert declared[f"/{cmd.name}"].get("usage_hint", "") == hint, cmd.name
        assert declared[f"/{cmd.name}"]["description"]


def test_manifest_structure() -> None:
    import yaml
    manifest = yaml.safe_load(_manifest_text())
    commands = manifest["features"]["slash_commands"]
    assert all(c["url"] == "https://YOUR-HOST/slack/events" and c["description"] for c in commands)
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "commands", "chat:write", "files:write", "app_mentions:read", "im:history"}
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["bot_events"] == ["app_mention", "message.im"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False


def test_manifest_scopes_and_events_text() -> None:
    text = _manifest_text()
    bot_scopes = re.search(r"^    bot:\n((?:      - .+\n)+)", text, flags=re.M).group(1)
    assert re.findall(r"- (\S+)", bot_scopes) == [
        "commands", "chat:write", "files:write", "app_mentions:read", "im:history"]
    events = re.search(r"bot_events:\n((?:      - .+\n)+)", text).group(1)
    assert re.findall(r"- (\S+)", events) == ["app_mention", "message.im"]
    assert "socket_mode_enabled: false" in text
    urls = re.findall(r"^\s+url: (\S+)$", text, flags=re.M)
    assert urls == ["https://YOUR-HOST/slack/events"] * len(re.findall(r"- command: ", text))


# --- the analytics commands, as the router answers them --------------------------------------------


def _needs(served: Served, name: str) -> None:
    assert name in served.router.commands, f"/{name} is not in the router"


_ANSWERS: dict[tuple[str, str], Answer] = {}


def _router_answer(served: Served, text: str, user: str = ALICE) -> Answer:
    """What the router answers `text` (computed once per module: answers are deterministic)."""
    key = (text, user)
    if key not in _ANSWERS:
        router = Router(served.engine, served.settings)
        _ANSWERS[key] = router.handle(text, Requester(user, GENERAL, "slack"))
    return _ANSWERS[key]


@pytest.mark.parametrize("text", ["/kpis", "/segments", "/churn-risk", "/cohorts", "/ltv",
                                  "/delivery", "/payments", "/finance", "/migration", "/model"])
def test_analytics_command_figures_match_the_router(served: Served, emu: SlackEmulator,
                                                    text: str) -> None:
    name = text[1:]
    _needs(served, name)
    expected = _router_answer(served, text)
    reply, sink = slash(served, emu, text)
    assert reply.seconds < ACK_LIMIT
    visible = not expected.is_error and name in served.settings.in_channel_commands
    if visible:
        message = wait(emu, lambda: emu.messages(GENERAL), timeout=30)[0]
        blocks = message.blocks
    else:
        blocks = response(emu, sink, timeout=30).blocks
    assert validate_blocks(blocks) == []
    assert blocks[0]["text"]["text"].endswith(expected.title[:140])
    shown = {unescape(k): unescape(v) for k, v in figures_in(blocks).items()}
    assert shown == {f.label: f.value for f in expected.figures}
    if visible and expected.charts:
        from PIL import Image

        n = len(expected.charts)
        uploads = wait(emu, lambda: len(emu.uploads(GENERAL)) >= n and emu.uploads(GENERAL),
                       timeout=30)
        assert all(u.thread_ts == message.ts for u in uploads)
        assert sorted(u.filename for u in uploads) == sorted(f"{c.name}.png" for c in expected.charts)
        assert all(Image.open(io.BytesIO(u.content)).format == "PNG" for u in uploads)


def test_kpis_in_slack_match_the_raw_sample_csvs(served: Served, emu: SlackEmulator) -> None:
    """Customers, orders and revenue shown in Slack, recomputed with pandas from the CSVs."""
    _needs(served, "kpis")
    from storage.sample_data import sample_dir
    from storage.store import NON_PURCHASE_STATUSES

    folder = sample_dir()
    orders = pd.read_csv(folder / "olist_orders_dataset.csv.xz",
                         parse_dates=["order_purchase_timestamp"])
    assert len(orders) == _count(served.engine, "orders")
    people = pd.read_csv(folder / "olist_customers_dataset.csv.xz")
    items = pd.read_csv(folder / "olist_order_items_dataset.csv.xz")
    expected = _router_answer(served, "/kpis")
    end = pd.Timestamp(expected.as_of) + pd.Timedelta(days=1)
    bought = orders[~orders["order_status"].isin(NON_PURCHASE_STATUSES)
                    & (orders["order_purchase_timestamp"] < end)]
    customers = bought.merge(people, on="customer_id")["customer_unique_id"].nunique()
    lines = items[items["order_id"].isin(bought["order_id"])]
    revenue = float(lines["price"].sum() + lines["freight_value"].sum())

    slash(served, emu, "/kpis")
    message = wait(emu, lambda: emu.messages(GENERAL), timeout=30)[0]
    shown = figures_in(message.blocks)
    assert shown["Customers"] == f"{customers:,}"
    assert shown["Orders"] == f"{len(bought):,}"
    raw = {f.label: f.raw for f in expected.figures}
    assert raw["Revenue"] == pytest.approx(revenue, rel=1e-9)
    assert shown["Revenue"] == expected.figures[2].value


def _count(engine: Engine, table: str) -> int:
    from sqlalchemy import func

    from storage import schema

    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.metadata.tables[table])).scalar_one()


def test_churn_risk_export_button_and_csv_rows(served: Served, emu: SlackEmulator) -> None:
    _needs(served, "churn-risk")
    _needs(served, "export-at-risk")
    answer = _router_answer(served, "/churn-risk")
    assert answer.buttons, "/churn-risk has no export button"
    slash(served, emu, "/churn-risk")
    message = wait(emu, lambda: emu.messages(GENERAL), timeout=30)[0]
    button = next(el for b in message.blocks if b["type"] == "actions" for el in b["elements"])
    emu.reset()
    click(served, emu, button, message.ts)
    upload = wait(emu, lambda: [u for u in emu.uploads(GENERAL) if u.filename.endswith(".csv")],
                  timeout=30)[0]
    assert upload.thread_ts == message.ts
    expected = _router_answer(served, button["value"])
    assert expected.export is not None
    got = list(csv.reader(io.StringIO(upload.content.decode("utf-8-sig"))))
    want = list(csv.reader(io.StringIO(expected.export.content.decode("utf-8-sig"))))
    assert got == want and len(got) - 1 == expected.export.rows


def test_export_at_risk_rows_equal_the_at_risk_list(served: Served, emu: SlackEmulator) -> None:
    """The CSV shared in Slack holds exactly the customers whose stored risk band is high,
    ranked by expected value at risk."""
    _needs(served, "export-at-risk")
    from storage import schema

    reply, sink = slash(served, emu, "/export-at-risk", "SP")
    assert reply.seconds < ACK_LIMIT
    upload = wait(emu, lambda: emu.uploads(GENERAL), timeout=30)[0]
    frame = pd.read_csv(io.BytesIO(upload.content), dtype={"customer_id": str})
    scores, features = schema.customer_scores, schema.customer_features
    query = (select(scores.c.customer_id, scores.c.value_at_risk)
             .join(features, features.c.customer_id == scores.c.customer_id)
             .where(scores.c.risk_band == "high", features.c.state == "SP"))
    with served.engine.connect() as conn:
        expected = pd.read_sql(query, conn)
    assert len(expected) > 0
    assert sorted(frame["customer_id"]) == sorted(expected["customer_id"])
    values = frame["expected_value_at_risk"].to_numpy()
    assert (values[:-1] >= values[1:] - 0.005).all()  # ranked (2-decimal CSV money)
    assert upload.filename.endswith(".csv") and upload.channels == (GENERAL,)
    got = response(emu, sink, timeout=30)
    assert got.response_type == "ephemeral"
    assert figures_in(got.blocks)["Rows"] == f"{len(expected):,}"


def test_export_at_risk_refused_for_bob(served: Served, emu: SlackEmulator) -> None:
    _needs(served, "export-at-risk")
    _, sink = slash(served, emu, "/export-at-risk", user=BOB)
    got = response(emu, sink, timeout=30)
    assert got.response_type == "ephemeral"
    time.sleep(0.3)
    assert emu.uploads() == []
