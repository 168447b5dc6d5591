"""The Slack emulator, driven by the real slack_sdk clients over 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from slack_emulator import (
    RESPONSE_URL,
    UPLOAD,
    Channel,
    SlackEmulator,
    User,
    validate_blocks,
)
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

TOKEN = "xoxb-test-token"
GENERAL = "C0GENERAL"
RANDOM = "C0RANDOM01"  # exists, bot not a member
LEADS = "G0LEADS01"  # private, bot not a member


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    channels = [
        Channel(GENERAL, "general"),
        Channel(RANDOM, "random", is_member=False),
        Channel(LEADS, "leads", is_member=False, is_private=True),
        Channel("C0PULSE001", "retail-pulse", members=frozenset({"U0ALICE01"})),
        Channel("C0OLD00001", "old-news", is_archived=True),
    ]
    with SlackEmulator(token=TOKEN, channels=channels) as emulator:
        yield emulator


@pytest.fixture
def client(emu: SlackEmulator) -> WebClient:
    return WebClient(token=TOKEN, base_url=emu.base_url, timeout=5)


def section(text: str, **extra: object) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def api_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return excinfo.value.response["error"]


# ----------------------------------------------------------------------- lifecycle


def test_base_url_is_local_and_port_is_released_on_stop() -> None:
    emulator = SlackEmulator().start()
    url = emulator.base_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
    assert emulator.response_url("x") == url.replace("/api/", "/response/x")
    emulator.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "auth.test", data=b"", timeout=2)


# ---------------------------------------------------------------------------- auth


def test_auth_test_reports_the_bot_identity(emu: SlackEmulator, client: WebClient) -> None:
    resp = client.auth_test()
    assert resp["ok"] is True
    assert (resp["user_id"], resp["bot_id"], resp["team_id"]) == (
        emu.bot_user_id, emu.bot_id, emu.team_id,
    )
    assert emu.calls("auth.test")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_wrong_token_is_invalid_auth_and_missing_token_not_authed(emu: SlackEmulator) -> None:
    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=emu.base_url).chat_postMessage(
            channel=GENERAL, text="x")
    assert api_error(wrong) == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        WebClient(base_url=emu.base_url).auth_test()
    assert api_error(missing) == "not_authed"
    assert emu.messages() == []


def test_token_as_form_parameter_is_accepted_but_not_in_json(emu: SlackEmulator) -> None:
    form = urllib.request.Request(
        emu.base_url + "auth.test", data=f"token={TOKEN}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert json.load(urllib.request.urlopen(form))["ok"] is True
    as_json = urllib.request.Request(
        emu.base_url + "auth.test", data=json.dumps({"token": TOKEN}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert json.load(urllib.request.urlopen(as_json))["error"] == "not_authed"
    # the token never lands in the recorded params
    assert all("token" not in c.params for c in emu.calls())


def test_unknown_method_is_404_unknown_method(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessagee", json={"channel": GENERAL, "text": "x"})
    assert exc.value.response.status_code == 404
    assert api_error(exc) == "unknown_method"


# ------------------------------------------------------------------- postMessage


def test_post_message_records_parsed_blocks_and_answers_like_slack(
    emu: SlackEmulator, client: WebClient
) -> None:
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Weekly digest"}},
              section("*42* customers at risk")]
    resp = client.chat_postMessage(channel="#general", text="digest", blocks=blocks)
    assert resp["channel"] == GENERAL
    assert resp["message"]["blocks"] == blocks
    assert resp["message"]["bot_id"] == emu.bot_id
    assert resp["ts"] == "1700000000.000100"
    [msg] = emu.messages(GENERAL)
    assert (msg.ts, msg.text, msg.blocks, msg.thread_ts) == (resp["ts"], "digest", blocks, None)
    assert emu.messages("#general") == [msg] == emu.messages("general")


def test_form_encoded_blocks_are_parsed_like_json_ones(
    emu: SlackEmulator, client: WebClient
) -> None:
    blocks = [section("from a form")]
    client.api_call("chat.postMessage", params={
        "channel": GENERAL, "text": "t", "blocks": json.dumps(blocks), "thread_ts": "1.000100",
    })
    call = emu.calls("chat.postMessage")[0]
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == blocks
    assert emu.messages(thread_ts="1.000100")[0].blocks == blocks


def test_ts_increases_strictly_across_messages(emu: SlackEmulator, client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=GENERAL, text=str(i))["ts"] for i in range(12)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 12
    assert all(len(s.split(".")[1]) == 6 for s in stamps)


@pytest.mark.parametrize(("channel", "error"), [
    ("C0NOPE0000", "channel_not_found"),
    ("#nope", "channel_not_found"),
    (RANDOM, "not_in_channel"),
    ("#random", "not_in_channel"),
    ("C0OLD00001", "is_archived"),
])
def test_post_message_channel_errors(
    emu: SlackEmulator, client: WebClient, channel: str, error: str
) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=channel, text="hello")
    assert api_error(exc) == error
    assert emu.messages() == []


def test_post_to_a_user_id_lands_in_the_dm(emu: SlackEmulator, client: WebClient) -> None:
    resp = client.chat_postMessage(channel="U0ALICE01", text="your export")
    assert resp["channel"] == "D0ALICE01"
    assert emu.messages("D0ALICE01")[0].text == "your export"


def test_no_text_and_text_length_limit(emu: SlackEmulator, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as none, pytest.warns(UserWarning, match="text"):
        client.chat_postMessage(channel=GENERAL, text="")
    assert api_error(none) == "no_text"
    with pytest.raises(SlackApiError) as long:
        client.chat_postMessage(channel=GENERAL, text="x" * 40_001)
    assert api_error(long) == "msg_too_long"
    client.chat_postMessage(channel=GENERAL, text="x" * 40_000)
    assert len(emu.messages()) == 1


# ------------------------------------------------------------------- block kit


def test_51_blocks_are_invalid_blocks_50_are_fine(emu: SlackEmulator, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=GENERAL, text="t", blocks=[section("x")] * 51)
    body = exc.value.response.data
    assert body["error"] == "invalid_blocks"
    assert body["errors"] == ["no more than 50 items allowed [json-pointer:/blocks]"]
    assert body["response_metadata"]["messages"] == [
        "[ERROR] no more than 50 items allowed [json-pointer:/blocks]"]
    assert emu.messages() == []
    client.chat_postMessage(channel=GENERAL, text="t", blocks=[section("x")] * 50)
    assert len(emu.messages()[0].blocks) == 50


def test_section_text_over_3000_chars_is_invalid_blocks(
    emu: SlackEmulator, client: WebClient
) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=GENERAL, text="t", blocks=[section("y" * 3001)])
    assert api_error(exc) == "invalid_blocks"
    assert exc.value.response["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]
    client.chat_postMessage(channel=GENERAL, text="t", blocks=[section("y" * 3000)])
    assert len(emu.messages()) == 1


def test_blocks_that_are_not_an_array_are_invalid_blocks_format(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage",
                        params={"channel": GENERAL, "text": "t", "blocks": "[{not json"})
    assert api_error(exc) == "invalid_blocks_format"


def button(text: str = "Export", action_id: str = "export") -> dict:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id}


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


@pytest.mark.parametrize(("blocks", "expected"), [
    ([{"type": "section", "fields": [mrkdwn("f")] * 11}],
     "no more than 10 items allowed [json-pointer:/blocks/0/fields]"),
    ([{"type": "section", "fields": [mrkdwn("f" * 2001)]}],
     "must be less than 2001 characters [json-pointer:/blocks/0/fields/0/text]"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
     "must be less than 151 characters [json-pointer:/blocks/0/text/text]"),
    ([{"type": "header", "text": mrkdwn("*bold*")}],
     "must be a valid enum value [json-pointer:/blocks/0/text/type]"),
    ([{"type": "context", "elements": [mrkdwn("c")] * 11}],
     "no more than 10 items allowed [json-pointer:/blocks/0/elements]"),
    ([{"type": "actions", "elements": [button("b" * 76)]}],
     "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]"),
    ([{"type": "actions", "elements": [button(action_id="a" * 256)]}],
     "must be less than 256 characters [json-pointer:/blocks/0/elements/0/action_id]"),
    ([{"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}],
     "no more than 25 items allowed [json-pointer:/blocks/0/elements]"),
    ([{"type": "section", "text": {"type": "markdown", "text": "x"}}],
     "must be a valid enum value [json-pointer:/blocks/0/text/type]"),
    ([{"type": "section", "text": mrkdwn("")}],
     "must be more than 0 characters [json-pointer:/blocks/0/text/text]"),
    ([{"type": "section"}],
     "must define either `text` or `fields` [json-pointer:/blocks/0/type]"),
    ([section("a", block_id="kpi"), section("b", block_id="kpi")],
     "Block ID needs to be unique [json-pointer:/blocks/1/block_id]"),
    ([{"type": "input", "label": {"type": "plain_text", "text": "x"}}],
     "failed to match all allowed schemas [json-pointer:/blocks/0]"),
])
def test_block_kit_limits(blocks: list, expected: str) -> None:
    assert expected in validate_blocks(blocks)


def test_blocks_at_every_limit_are_valid() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {"type": "section", "text": mrkdwn("s" * 3000), "block_id": "b" * 255,
         "accessory": button("a" * 75, "x" * 255)},
        {"type": "section", "fields": [mrkdwn("f" * 2000)] * 10},
        {"type": "context", "elements": [mrkdwn("c")] * 9
         + [{"type": "image", "image_url": "https://x/y.png", "alt_text": "y"}]},
        {"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(25)]},
        {"type": "divider"},
        {"type": "image", "image_url": "https://x/chart.png", "alt_text": "chart"},
    ]
    assert validate_blocks(blocks) == []


# ------------------------------------------------------------ update, ephemeral


def test_chat_update_replaces_text_keeps_blocks_and_keeps_history(
    emu: SlackEmulator, client: WebClient
) -> None:
    ts = client.chat_postMessage(channel=GENERAL, text="working…", blocks=[section("…")])["ts"]
    resp = client.chat_update(channel=GENERAL, ts=ts, text="done")
    assert (resp["ts"], resp["text"]) == (ts, "done")
    [msg] = emu.messages(GENERAL)
    assert (msg.text, msg.blocks) == ("done", [section("…")])
    assert msg.history == ({"text": "working…", "blocks": [section("…")], "attachments": None},)
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel=GENERAL, ts="1.000000", text="x")
    assert api_error(exc) == "message_not_found"


def test_post_ephemeral(emu: SlackEmulator, client: WebClient) -> None:
    resp = client.chat_postEphemeral(channel="C0PULSE001", user="U0ALICE01", text="only you")
    assert set(resp.data) == {"ok", "message_ts"}
    assert emu.ephemerals(user="U0ALICE01")[0].text == "only you"
    assert emu.messages() == []
    with pytest.raises(SlackApiError) as exc:
        client.chat_postEphemeral(channel="C0PULSE001", user="U0BOB0001", text="x")
    assert api_error(exc) == "user_not_in_channel"


# ------------------------------------------------------------------- files


def test_files_upload_v2_end_to_end(emu: SlackEmulator, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=GENERAL, text="churn list")["ts"]
    data = b"customer_id,churn_probability\r\nabc,0.91\n\x00\xff"
    resp = client.files_upload_v2(
        channel=GENERAL, thread_ts=parent, content=data, filename="at_risk.csv",
        title="At-risk customers", initial_comment="Here it is",
    )
    [up] = emu.uploads()
    assert resp["file"]["id"] == up.file_id
    assert (up.content, up.length) == (data, len(data))
    assert (up.filename, up.title) == ("at_risk.csv", "At-risk customers")
    assert (up.channel, up.thread_ts, up.initial_comment) == (GENERAL, parent, "Here it is")
    assert emu.uploads("#general") == [up] and emu.uploads(RANDOM) == []
    assert [c.method for c in emu.calls()][1:] == [
        "files.getUploadURLExternal", UPLOAD, "files.completeUploadExternal"]
    # the upload URL is the emulator's own and needs no token, like Slack's
    upload_call = emu.calls(UPLOAD)[0]
    assert "Authorization" not in upload_call.headers


def test_files_upload_v2_to_a_channel_the_bot_is_not_in(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.files_upload_v2(channel=RANDOM, content=b"x", filename="x.csv")
    assert api_error(exc) == "not_in_channel"


def test_complete_needs_uploaded_bytes(emu: SlackEmulator, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as never:
        client.files_completeUploadExternal(files=[{"id": "F999999999", "title": "x"}],
                                            channel_id=GENERAL)
    assert api_error(never) == "file_not_found"
    ticket = client.files_getUploadURLExternal(filename="a.png", length=3)
    with pytest.raises(SlackApiError) as not_uploaded:
        client.files_completeUploadExternal(files=[{"id": ticket["file_id"]}], channel_id=GENERAL)
    assert api_error(not_uploaded) == "file_not_found"
    assert emu.uploads() == []


def test_upload_url_takes_multipart_too(emu: SlackEmulator, client: WebClient) -> None:
    ticket = client.files_getUploadURLExternal(filename="chart.png", length=4)
    boundary = uuid.uuid4().hex
    payload = b"\x89PNG\r\n"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; "
        f"filename=\"chart.png\"\r\nContent-Type: image/png\r\n\r\n"
    ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(ticket["upload_url"], data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert urllib.request.urlopen(req).read() == f"OK - {len(payload)}".encode()
    client.files_completeUploadExternal(files=[{"id": ticket["file_id"], "title": "Chart"}],
                                        channel_id=GENERAL)
    assert emu.uploads()[0].content == payload


# ----------------------------------------------------------- conversations, users


def test_conversations_info_join_and_list(emu: SlackEmulator, client: WebClient) -> None:
    assert client.conversations_info(channel=RANDOM)["channel"]["is_member"] is False
    with pytest.raises(SlackApiError) as by_name:
        client.conversations_info(channel="#random")
    assert api_error(by_name) == "channel_not_found"

    joined = client.conversations_join(channel=RANDOM)
    assert joined["channel"]["is_member"] is True and "warning" not in joined
    assert client.conversations_join(channel=RANDOM)["warning"] == "already_in_channel"
    client.chat_postMessage(channel=RANDOM, text="now I can post")
    assert emu.messages(RANDOM)[0].text == "now I can post"

    with pytest.raises(SlackApiError) as private:
        client.conversations_join(channel=LEADS)
    assert api_error(private) == "channel_not_found"  # invisible to a non-member bot

    # SlackResponse iterates pages by following response_metadata.next_cursor
    pages = [[c["name"] for c in page["channels"]] for page in client.conversations_list(limit=2)]
    assert [len(p) for p in pages] == [2, 2]
    names = [name for page in pages for name in page]
    assert sorted(names) == ["general", "old-news", "random", "retail-pulse"]
    live = client.conversations_list(exclude_archived=True)["channels"]
    assert "old-news" not in {c["name"] for c in live}


def test_users_info(emu: SlackEmulator, client: WebClient) -> None:
    emu.add_user(User("U0CAROL01", "carol", real_name="Carol Souza"))
    assert client.users_info(user="U0CAROL01")["user"]["real_name"] == "Carol Souza"
    assert client.users_info(user=emu.bot_user_id)["user"]["is_bot"] is True
    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="U0NOBODY1")
    assert api_error(exc) == "user_not_found"


# ----------------------------------------------------------------------- faults


def test_rate_limit_with_retry_handler_posts_once(emu: SlackEmulator) -> None:
    emu.fail_next("chat.postMessage", retry_after=0, times=2)
    client = WebClient(token=TOKEN, base_url=emu.base_url,
                       retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    assert client.chat_postMessage(channel=GENERAL, text="digest")["ok"] is True
    assert [m.text for m in emu.messages()] == ["digest"]
    assert [(c.status, c.faulted) for c in emu.calls("chat.postMessage")] == [
        (429, True), (429, True), (200, False)]
    assert emu.calls("chat.postMessage")[0].response == {"ok": False, "error": "ratelimited"}


def test_rate_limit_without_retry_handler_raises(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=GENERAL, text="digest")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "7"
    assert api_error(exc) == "ratelimited"
    assert emu.messages() == []
    client.chat_postMessage(channel=GENERAL, text="digest")  # the fault is used up
    assert len(emu.messages()) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_with_retry_handler(emu: SlackEmulator, status: int) -> None:
    emu.fail_next("chat.postMessage", status=status)
    handler = ServerErrorRetryHandler(
        max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.01))
    client = WebClient(token=TOKEN, base_url=emu.base_url, retry_handlers=[handler])
    client.chat_postMessage(channel=GENERAL, text="digest")
    assert len(emu.messages()) == 1
    assert [c.status for c in emu.calls("chat.postMessage")] == [status, 200]


def test_server_error_without_retry_raises(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=GENERAL, text="digest")
    assert exc.value.response.status_code == 503
    assert emu.messages() == []


def test_scripted_api_error_and_wildcard(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=GENERAL, text="x")
    assert (exc.value.response.status_code, api_error(exc)) == (200, "channel_not_found")
    emu.fail_next("*", error="internal_error", times=2)
    for call in (client.auth_test, lambda: client.users_info(user="U0ALICE01")):
        with pytest.raises(SlackApiError) as any_method:
            call()
        assert api_error(any_method) == "internal_error"
    assert client.auth_test()["ok"] is True


def test_dropped_connection_is_retried_by_the_default_handler(
    emu: SlackEmulator, client: WebClient
) -> None:
    emu.fail_next("chat.postMessage", disconnect=True)
    client.chat_postMessage(channel=GENERAL, text="after a reset")
    assert [c.status for c in emu.calls("chat.postMessage")] == [0, 200]
    assert len(emu.messages()) == 1


def test_delay_alone_slows_a_normal_answer(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next("auth.test", delay=0.2)
    started = time.monotonic()
    assert client.auth_test()["ok"] is True
    assert time.monotonic() - started >= 0.2


def test_upload_fault_surfaces_in_files_upload_v2(emu: SlackEmulator, client: WebClient) -> None:
    emu.fail_next(UPLOAD, status=500)
    with pytest.raises(urllib.error.HTTPError):
        client.files_upload_v2(channel=GENERAL, content=b"x", filename="x.csv")
    assert emu.uploads() == []


# ------------------------------------------------------------------ response_url


def test_response_url_records_valid_replies(emu: SlackEmulator) -> None:
    url = emu.response_url("segments")
    sent = WebhookClient(url).send(
        text="3 segments", blocks=[section("*Champions* 12%")], response_type="in_channel",
        replace_original=True)
    assert (sent.status_code, sent.body) == (200, "ok")
    [resp] = emu.responses("segments")
    assert resp.ok and resp.errors == ()
    assert (resp.text, resp.response_type, resp.replace_original) == (
        "3 segments", "in_channel", True)
    assert resp.blocks == [section("*Champions* 12%")]
    assert emu.responses("other") == []


def test_response_url_refuses_invalid_blocks_and_empty_replies(emu: SlackEmulator) -> None:
    hook = WebhookClient(emu.response_url("r"))
    bad = hook.send(text="t", blocks=[section("z" * 3001)])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    empty = hook.send(text="")
    assert (empty.status_code, empty.body) == (400, "no_text")
    first, second = emu.responses("r")
    assert not first.ok
    assert first.errors == ("must be less than 3001 characters [json-pointer:/blocks/0/text/text]",)
    assert not second.ok
    assert emu.calls(RESPONSE_URL)[0].params["errors"] == list(first.errors)


def test_response_url_fault(emu: SlackEmulator) -> None:
    emu.fail_next(RESPONSE_URL, status=404, error="expired_url")
    resp = WebhookClient(emu.response_url("late")).send(text="too late")
    assert (resp.status_code, resp.body) == (404, "expired_url")


# ------------------------------------------------------------- waiting, threads


def test_wait_for_sees_a_message_posted_later(emu: SlackEmulator, client: WebClient) -> None:
    timer = threading.Timer(0.1, client.chat_postMessage,
                            kwargs={"channel": GENERAL, "text": "scheduled digest"})
    timer.start()
    try:
        msgs = emu.wait_for(lambda: emu.messages(GENERAL), timeout=5)
    finally:
        timer.join()
    assert msgs[0].text == "scheduled digest"
    with pytest.raises(TimeoutError):
        emu.wait_for(lambda: emu.messages(RANDOM), timeout=0.1)


def test_concurrent_posts_are_all_recorded_with_distinct_ts(
    emu: SlackEmulator, client: WebClient
) -> None:
    def post(worker: int) -> None:
        for i in range(10):
            client.chat_postMessage(channel=GENERAL, text=f"{worker}-{i}")

    threads = [threading.Thread(target=post, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    msgs = emu.messages(GENERAL)
    assert len(msgs) == 80
    assert len({m.ts for m in msgs}) == 80
    assert {m.text for m in msgs} == {f"{w}-{i}" for w in range(8) for i in range(10)}
    assert len(emu.calls("chat.postMessage")) == 80


def test_reset_forgets_everything(emu: SlackEmulator, client: WebClient) -> None:
    client.chat_postMessage(channel=GENERAL, text="x")
    emu.fail_next("auth.test", error="invalid_auth")
    emu.reset()
    assert emu.calls() == [] and emu.messages() == []
    assert client.auth_test()["ok"] is True
