"""`pulse export-at-risk` and `pulse model evaluate`: the churn commands of the CLI.

They take the `pulse` group's context object (`ctx.obj`, with `.settings` and `.engine`)
through `click.pass_obj`, so this module does not import `bot.cli` (which attaches them).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import click

from bot.cli_common import parse_date as _date

# --- pulse export-at-risk ----------------------------------------------------------------------


@click.command("export-at-risk")
@click.argument("place", nargs=-1)
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), required=True,
              help="CSV file to write (use - for standard output).")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None,
              help="Customers with churn probability ≥ P (default: risk band high).")
@click.option("--segment", default=None, help="Only this RFM segment (e.g. at-risk, champions).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most N rows (also capped by the export.max_rows setting).")
@click.pass_obj
def export_at_risk(obj: Any, place: tuple[str, ...], out: str, min_prob: float | None,
                   segment: str | None, limit: int | None) -> None:
    """Write the at-risk customers as CSV, ranked by expected value at risk.

    PLACE is a state (SP), a region (sudeste) or all. The file has the same columns and
    rows as `/export-at-risk` in Slack; it is written as it is read, so long lists do not
    need memory. The export is recorded in the export_audit table.
    """
    from analytics.errors import AnalyticsError
    from analytics.risk import count_at_risk, iter_at_risk_csv
    from bot.commands.churn_risk import RiskArgs, match_segment
    from bot.commands.export_at_risk import record_export
    from bot.router import CommandContext, Requester, UsageError
    from storage.geography import UnknownPlace

    requester = Requester(user_id=_user(), channel_id=None, source="cli")
    ctx = CommandContext(obj.engine, obj.settings, requester, command="export-at-risk")
    try:
        from analytics.risk import RiskFilter, scores_available

        seg = match_segment(segment) if segment else None
        risk_filter = RiskFilter(ctx.place(" ".join(place) or None), seg, min_prob)
        if not scores_available(obj.engine):
            raise click.ClickException("there are no churn scores yet: run `pulse refresh` first.")
    except (UsageError, UnknownPlace, AnalyticsError) as exc:
        raise click.ClickException(str(exc)) from None
    ra = RiskArgs(risk_filter, limit=limit)
    cap = min(limit or obj.settings.export_max_rows, obj.settings.export_max_rows)
    matching = count_at_risk(obj.engine, risk_filter)
    rows = min(matching, cap)
    with contextlib.ExitStack() as stack:
        stream = sys.stdout.buffer if out == "-" else stack.enter_context(Path(out).open("wb"))
        for chunk in iter_at_risk_csv(obj.engine, risk_filter, cap):
            stream.write(chunk)
    record_export(obj.engine, requester, ra.filter_text(), rows, allowed=True)
    where = "standard output" if out == "-" else out
    capped = f" (of {matching:,} matching; capped)" if rows < matching else ""
    click.echo(f"wrote {rows:,} rows{capped} to {where}", err=out == "-")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is not a reason to refuse a local export
        return None


# --- pulse model --------------------------------------------------------------------------------


@click.group("model")
def model() -> None:
    """The churn model: evaluate it out of time."""


@model.command("evaluate")
@click.option("--horizon", type=click.IntRange(7, 730), default=None,
              help="Churn horizon H in days (default: analytics.churn_horizon_days).")
@click.option("--as-of", "as_of", default=None, help="As-of date (default: the settings' as-of).")
@click.option("--seed", type=int, default=None, help="Random seed (default: analytics.seed).")
@click.option("--learner", type=click.Choice(["auto", "hgb", "logistic"]), default="auto",
              show_default=True, help="auto = chosen by cross-validation on the training window.")
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
@click.pass_obj
def model_evaluate(obj: Any, horizon: int | None, as_of: str | None, seed: int | None,
                   learner: str, as_json: bool) -> None:
    """Train on an earlier cutoff, test on the next window, print the metrics.

    \b
    c1 = as-of − H, c0 = c1 − H: features at c0 with labels in (c0, c1] train the model;
    customers at c1 with labels in (c1, as-of] test it. Prints ROC-AUC, PR-AUC, Brier
    score, lift in the top decile, the learners' cross-validated AUC and the permutation
    importance. Nothing is stored (`pulse refresh` trains and stores the scoring model).
    """
    import time

    from analytics.asof import resolve_as_of
    from analytics.churn import KINDS, NotTrainable, evaluate_churn_model, model_card, read_history

    settings = obj.settings
    horizon = horizon or settings.churn_horizon_days
    seed = settings.seed if seed is None else seed
    day = _date(as_of) or resolve_as_of(obj.engine, fixed=settings.as_of_date()).date
    started = time.perf_counter()
    history = read_history(obj.engine)
    read_seconds = time.perf_counter() - started
    kinds = KINDS if learner == "auto" else (learner,)
    try:
        evaluation, _ = evaluate_churn_model(history, day, horizon, seed, kinds)
    except NotTrainable as exc:
        raise click.ClickException(f"cannot evaluate: {exc}") from None
    card = model_card(evaluation, history, final_customers=0, final_churn_rate=float("nan"),
                      seconds=evaluation.seconds)
    card.pop("final_training", None)
    card["read_seconds"] = round(read_seconds, 2)
    if as_json:
        click.echo(json.dumps(card, indent=2, default=str))
        return
    click.echo(_metrics_text(card))


def _metrics_text(card: dict[str, Any]) -> str:
    m, cut = card["metrics"], card["cutoffs"]
    rows = [
        ("learner", f"{card['learner']} ({card['calibration']})"),
        ("label", card["label"]),
        ("train", f"features at {cut['train']}, labels to {cut['test']} — "
                  f"{m['train_customers']:,} customers, churn rate {m['train_churn_rate']:.1%}"),
        ("test", f"features at {cut['test']}, labels to {card['as_of']} — "
                 f"{m['customers']:,} customers, churn rate {m['churn_rate']:.1%}"),
        ("ROC-AUC", f"{m['roc_auc']:.4f}"),
        ("PR-AUC", f"{m['pr_auc']:.4f}  (churn class)"),
        ("Brier", f"{m['brier']:.4f}"),
        ("lift@10%", f"{m['lift_top_decile']:.3f}"),
    ]
    for kind, auc in card["selection"]["cv_roc_auc"].items():
        rows.append((f"CV AUC {kind}", f"{auc:.4f}" + ("  ← chosen" if kind == card["kind"] else "")))
    sampled = card["selection"].get("rows")
    if sampled and sampled < m["train_customers"]:
        rows.append(("CV rows", f"a stratified sample of {sampled:,} training customers"))
    rows.append(("seconds", f"{card['training_seconds']} training, {card['read_seconds']} reading"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", "permutation importance (ROC-AUC drop on the test window):"]
    for item in card["importance"][:12]:
        lines.append(f"  {item['feature']:<22} {item['importance']:+.4f} ± {item['std']:.4f}")
    return "\n".join(lines)
