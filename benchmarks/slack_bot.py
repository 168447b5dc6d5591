"""The real Slack app (Bolt over waitress) in its own process, for the answers benchmark,
and the client that fires signed slash commands at it from another.

    python -m benchmarks.slack_bot '{"url": ..., "api_url": ..., "token": ..., "secret": ...}'
    python -m benchmarks.slack_bot fire '{"endpoint": ..., "secret": ..., "commands": [...]}'

The bot prints ``PORT <n>`` once it listens on 127.0.0.1 and serves until its stdin
closes. `fire` posts all its commands at once and prints ``{"sent": t, "acks": [s, …]}``.
Bot, client and Slack emulator run in three processes, so an acknowledgement time is the
bot's own, not the emulator's or the client's share of a GIL.
"""

from __future__ import annotations

import json
import sys
import threading


def fire(params: dict) -> dict:
    """POST every (user, command text) of `params["commands"]` at once; the ack times."""
    import hashlib
    import hmac
    import time
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def post(job: list[str]) -> float:
        user, text = job
        cmd, _, rest = text.partition(" ")
        body = urllib.parse.urlencode({
            "token": "x", "team_id": params["team_id"], "channel_id": "C0GENERAL",
            "channel_name": "general", "user_id": user, "user_name": user, "command": cmd,
            "text": rest, "api_app_id": params["app_id"],
            "response_url": params["response_url"] + user, "trigger_id": f"{user}.1"})
        ts = str(int(time.time()))
        sig = "v0=" + hmac.new(params["secret"].encode(), f"v0:{ts}:{body}".encode(),
                               hashlib.sha256).hexdigest()
        req = urllib.request.Request(params["endpoint"], data=body.encode(), method="POST", headers={
            "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        return time.perf_counter() - t0

    jobs = params["commands"]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        sent = time.time()
        acks = list(pool.map(post, jobs))
    return {"sent": sent, "acks": acks}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "fire":
        print(json.dumps(fire(json.loads(argv[1]))), flush=True)
        return 0
    import matplotlib

    matplotlib.use("Agg")
    from bot.app import create_app
    from bot.server import make_http_server
    from bot.settings import Settings
    from storage.store import open_store

    params = json.loads(argv[0])
    if params.get("switch_interval"):
        sys.setswitchinterval(float(params["switch_interval"]))
    settings = Settings(database_url=params["url"], slack_api_url=params["api_url"],
                        slack_bot_token=params["token"], slack_signing_secret=params["secret"])
    engine = open_store(params["url"])
    app = create_app(settings, engine, workers=int(params.get("workers", 16)),
                     **({"answer_processes": int(params["answer_processes"])}
                        if "answer_processes" in params else {}))
    app.replier.answers.enabled = bool(params.get("cache", True))
    if app.replier.answers.processes is not None:  # as in a bot that has been up a while
        app.replier.answers.processes.wait_ready()
    server = make_http_server(app, "127.0.0.1", 0, engine=engine)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    print(f"PORT {server.effective_port}", flush=True)
    sys.stdin.read()
    # emptied and woken, the serving loop returns before its sockets close under it
    server._map.clear()
    server.pull_trigger()
    thread.join(timeout=5)
    server.close()
    app.replier.shutdown(wait=False)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
