"""Exactly-once bookkeeping of digest posts: one `digest_runs` row per (channel, week).

The protocol (the store is the only coordinator, so it holds across bot instances,
restarts and retried jobs):

1. **Claim** — INSERT the (channel, week) row with status "claimed" and our owner id.
   The unique constraint decides: if the INSERT fails, someone else created the row.
   Then the row says what to do: "posted" → nothing (already out); "failed" → nothing,
   unless the caller retries failures (a person asking again); "claimed"/"partial" →
   take it over only if its owner is gone, with a compare-and-set UPDATE so two takers
   cannot both win.
2. **Parts** — each part (the header message's ts, each chart's file id) is recorded in
   `parts` right after Slack accepted it, with an UPDATE that only succeeds while we still
   own the row. A run that resumes skips the parts already recorded.
3. **Finish** — status "posted"; or "failed" with the reason (a permanent Slack error);
   or *released* (owner cleared, status "partial") after a transient error, so the next
   attempt resumes at once.

An owner is "host:pid:nonce". It is gone when it released the row, when it ran on this
host and its process no longer exists (killed), or when the row has not been touched for
`stale_after` seconds (an owner on another host that died). The one window that cannot
be closed is between Slack accepting a part and the UPDATE recording it: a process
killed exactly there posts that part again on resume.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.exc import IntegrityError

from storage.schema import digest_runs as T

CLAIMED, PARTIAL, POSTED, FAILED = "claimed", "partial", "posted", "failed"
DEFAULT_STALE_AFTER = 15 * 60  # seconds without progress before another host may take over


class LostClaim(RuntimeError):
    """The run is no longer ours (another instance took it over)."""


@dataclass
class Run:
    """A claimed run: ours until finished, failed or released."""

    id: int
    channel: str
    week: dt.date
    owner: str
    status: str
    parts: dict[str, Any] = field(default_factory=dict)
    message_ts: str | None = None
    resumed: bool = False  # taken over from an earlier attempt

    def has(self, part: str) -> bool:
        return part in self.parts


@dataclass(frozen=True)
class Claim:
    """The outcome of `claim`: a `run` to post, or why there is nothing to do."""

    run: Run | None
    reason: str = ""  # "posted", "failed", "busy" when run is None
    row: dict[str, Any] | None = None  # the existing row, when there was one


def new_owner() -> str:
    """An owner id for one attempt: host, process id and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _now() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def claim(engine: Engine, channel: str, week: dt.date, *, owner: str | None = None,
          retry_failed: bool = False, stale_after: float = DEFAULT_STALE_AFTER) -> Claim:
    """Claim the (channel, week) digest for this attempt (see the module docstring)."""
    owner = owner or new_owner()
    now = _now()
    try:
        with engine.begin() as conn:
            run_id = conn.execute(T.insert().values(
                channel=channel, week=week, status=CLAIMED, parts="{}", owner=owner,
                created_at=now, updated_at=now,
            )).inserted_primary_key[0]
        return Claim(Run(int(run_id), channel, week, owner, CLAIMED))
    except IntegrityError:
        pass  # the row exists: somebody claimed this (channel, week) before
    row = get_run(engine, channel, week)
    if row is None:  # deleted in between; try once more from the start
        return claim(engine, channel, week, owner=owner, retry_failed=retry_failed,
                     stale_after=stale_after)
    if row["status"] == POSTED:
        return Claim(None, POSTED, row)
    if row["status"] == FAILED and not retry_failed:
        return Claim(None, FAILED, row)
    if row["status"] != FAILED and not owner_gone(row["owner"], row["updated_at"], stale_after):
        return Claim(None, "busy", row)
    status = PARTIAL if row["parts"] else CLAIMED
    with engine.begin() as conn:
        won = conn.execute(T.update().where(and_(
            T.c.id == row["id"], T.c.status == row["status"],
            T.c.updated_at == row["updated_at"],
            T.c.owner.is_(None) if row["owner"] is None else T.c.owner == row["owner"],
        )).values(owner=owner, status=status, error=None, updated_at=now))
    if won.rowcount != 1:
        return Claim(None, "busy", get_run(engine, channel, week))
    return Claim(Run(row["id"], channel, week, owner, status, dict(row["parts"]),
                     row["message_ts"], resumed=True))


def owner_gone(owner: str | None, updated_at: dt.datetime | None, stale_after: float) -> bool:
    """True when the owner released the row, was killed (same host), or went quiet."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
        return True
    if updated_at is None:
        return True
    return (_now() - updated_at).total_seconds() > stale_after


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead too
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _owned(run: Run):  # noqa: ANN202 - SQL condition
    return and_(T.c.id == run.id, T.c.owner == run.owner)


def record_part(engine: Engine, run: Run, name: str, value: Any, *,
                message_ts: str | None = None) -> None:
    """Record that `name` was posted (value: its Slack id), while the run is still ours."""
    parts = {**run.parts, name: value}
    values: dict[str, Any] = {"parts": json.dumps(parts, sort_keys=True), "status": PARTIAL,
                              "updated_at": _now()}
    if message_ts is not None:
        values["message_ts"] = message_ts
    with engine.begin() as conn:
        if conn.execute(T.update().where(_owned(run)).values(**values)).rowcount != 1:
            raise LostClaim(f"digest run {run.id} ({run.channel}, {run.week}) is no longer ours")
    run.parts = parts
    run.status = PARTIAL
    if message_ts is not None:
        run.message_ts = message_ts


def touch(engine: Engine, run: Run) -> None:
    """Show progress (keeps other hosts from taking a slow run over)."""
    with engine.begin() as conn:
        if conn.execute(T.update().where(_owned(run)).values(updated_at=_now())).rowcount != 1:
            raise LostClaim(f"digest run {run.id} is no longer ours")


def finish(engine: Engine, run: Run) -> None:
    """Mark the run posted (every part is out)."""
    _close(engine, run, POSTED, None, keep_owner=True)


def fail(engine: Engine, run: Run, error: str) -> None:
    """Mark the run failed with the reason (a permanent error)."""
    _close(engine, run, FAILED, error, keep_owner=False)


def release(engine: Engine, run: Run, error: str | None = None) -> None:
    """Give the run up after a transient error; the next attempt resumes it at once."""
    _close(engine, run, PARTIAL if run.parts else CLAIMED, error, keep_owner=False)


def _close(engine: Engine, run: Run, status: str, error: str | None, *, keep_owner: bool) -> None:
    values: dict[str, Any] = {"status": status, "error": error, "updated_at": _now()}
    if not keep_owner:
        values["owner"] = None
    with engine.begin() as conn:
        conn.execute(T.update().where(_owned(run)).values(**values))
    run.status = status


def get_run(engine: Engine, channel: str, week: dt.date) -> dict[str, Any] | None:
    """The (channel, week) row as a dict (parts decoded), or None."""
    with engine.connect() as conn:
        row = conn.execute(select(T).where(T.c.channel == channel, T.c.week == week)).mappings().first()
    return _decode(row) if row else None


def list_runs(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The latest runs, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(T).order_by(T.c.week.desc(), T.c.id.desc()).limit(limit)).mappings()
        return [_decode(r) for r in rows]


def _decode(row) -> dict[str, Any]:  # noqa: ANN001
    out = dict(row)
    out["parts"] = json.loads(out["parts"] or "{}")
    return out
