"""The `pulse` command line: load data, refresh, ask questions, run the bot."""

from __future__ import annotations

import sys
import time

import click
from sqlalchemy import Engine, func, inspect, select

from bot.settings import Settings, SettingsError, load_settings


class Context:
    """Settings and store, opened lazily so `--help` works without either."""

    def __init__(self, config: str | None, database_url: str | None):
        self._config = config
        self._database_url = database_url
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                s = load_settings(self._config)
            except SettingsError as exc:
                raise click.ClickException(f"settings: {exc}") from None
            if self._database_url:
                from dataclasses import replace

                s = replace(s, database_url=self._database_url)
            self._settings = s
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from storage.store import open_store

            try:
                self._engine = open_store(self.settings.database_url)
            except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear line
                raise click.ClickException(
                    f"cannot open the store at {_safe_url(self.settings.database_url)}: {exc}"
                ) from None
        return self._engine


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False), envvar="PULSE_CONFIG",
              help="Settings file (default: config/pulse.toml if present).")
@click.option("--db", "database_url", metavar="URL",
              help="Store URL; overrides PULSE_DATABASE_URL and the settings file.")
@click.version_option(package_name="retail-pulse", prog_name="pulse")
@click.pass_context
def cli(ctx: click.Context, config: str | None, database_url: str | None) -> None:
    """Retail Pulse: customer analytics for online retailers, answered in Slack.

    \b
    Quick start:
      pulse run                          the bot (or the console when Slack is not set up)
      pulse load PATH --format olist     load your data
      pulse refresh                      recompute features and scores
      pulse ask "/segments"              ask one question in the terminal
    """
    ctx.obj = Context(config, database_url)


# --- data -----------------------------------------------------------------------------


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["olist", "online-retail", "transactions"]),
              required=True, help="Layout of the data at PATH.")
@click.option("--map", "mapping", metavar="FIELD=COLUMN,…",
              help="transactions: which column holds customer, order, timestamp, amount "
                   "(optional: region, state, category, product, quantity, status).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="transactions: reader options, e.g. sep=whitespace, date_format=%Y%m%d, "
                   "header=none, columns=a;b;c, encoding=latin-1.")
@click.option("--no-refresh", is_flag=True, help="Do not recompute features and scores after loading.")
@click.option("--warm", type=click.Choice(["all", "defaults", "none"]), default="defaults",
              show_default=True,
              help="Pre-render answers after the refresh: every command's default and example "
                   "forms, those plus every region and state (all), or none.")
@pass_ctx
def load(ctx: Context, path: str, fmt: str, mapping: str | None, options: tuple[str, ...],
         no_refresh: bool, warm: str) -> None:
    """Load a dataset (CSV, .gz, .xz, .zip, or a folder) into the store.

    Bad rows go to the quarantine table with the reason; loading the same file
    twice changes nothing; a refused load leaves the store as it was.
    """
    from storage.loaders import LoadError, load_path, parse_mapping

    try:
        parsed_map = parse_mapping(mapping) if mapping else None
        parsed_opts = dict(_key_value(o) for o in options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    progress = _progress_printer() if sys.stderr.isatty() else None
    try:
        report = load_path(ctx.engine, path, fmt, mapping=parsed_map, options=parsed_opts,
                           progress=progress)
    except LoadError as exc:
        raise click.ClickException(f"load refused: {exc}") from None
    finally:
        if progress is not None:
            click.echo("", err=True)
    for line in report.summary_lines():
        click.echo(line)
    if not no_refresh:
        _run_refresh(ctx, warm)


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _progress_printer():
    started = time.perf_counter()

    def show(done: int, total: int | None) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        if total:
            width = 30
            filled = int(width * min(done / total, 1.0))
            bar = "█" * filled + "·" * (width - filled)
            click.echo(f"\r  {bar} {done:,}/{total:,} rows  {rate:,.0f} rows/s", err=True, nl=False)
        else:
            click.echo(f"\r  {done:,} rows  {rate:,.0f} rows/s", err=True, nl=False)

    return show


@cli.command()
@click.option("--customers", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Number of customers.")
@click.option("--orders", type=click.IntRange(min=1), default=None,
              help="Number of orders (default: about 1.03 per customer, like Olist).")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option("--out", type=click.Path(file_okay=False), default="generated-olist", show_default=True,
              help="Folder to write Olist-layout CSV files into.")
@click.option("--load", "then_load", is_flag=True, help="Load the generated folder into the store.")
@pass_ctx
def generate(ctx: Context, customers: int, orders: int | None, seed: int, out: str,
             then_load: bool) -> None:
    """Generate synthetic Olist-shaped data of any size (for benchmarks and demos)."""
    from storage.generate import generate_olist

    started = time.perf_counter()
    info = generate_olist(out, customers=customers, orders=orders, seed=seed)
    click.echo(f"wrote {out}: {info} in {time.perf_counter() - started:.1f} s")
    if then_load:
        ctx_invoke_load(ctx, out, "olist")


def ctx_invoke_load(ctx: Context, path: str, fmt: str) -> None:
    from storage.loaders import load_path

    report = load_path(ctx.engine, path, fmt)
    for line in report.summary_lines():
        click.echo(line)
    _run_refresh(ctx)


@cli.command()
@click.option("--warm", type=click.Choice(["all", "defaults", "none"]), default="defaults",
              show_default=True,
              help="Pre-render answers after the refresh: every command's default and example "
                   "forms, those plus every region and state (all), or none.")
@click.option("--full", is_flag=True,
              help="Read the whole store instead of only what loads changed since the last refresh.")
@pass_ctx
def refresh(ctx: Context, warm: str, full: bool) -> None:
    """Recompute customer features, RFM segments, clusters and scores, and today's snapshot;
    then pre-render the commands' answers (charts included) for the bot to serve."""
    _run_refresh(ctx, warm, full=full)


def _run_refresh(ctx: Context, warm: str = "defaults", *, full: bool = False) -> None:
    from analytics.refresh import refresh as run_refresh
    from bot.memory import refresh_malloc
    from bot.scheduler import default_scorers

    with refresh_malloc():
        report = run_refresh(ctx.engine, as_of=ctx.settings.as_of_date(), seed=ctx.settings.seed,
                             scorers=default_scorers(ctx.settings), full_read=full)
    click.echo(report.message)
    click.echo(f"  as of {report.as_of.date}: {report.as_of.reason}")
    if report.read:
        click.echo(f"  read: {report.read['mode']} ({report.read['reason']})")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
    click.echo(f"  stages: {stages}")
    for name, err in report.scorer_errors.items():
        click.echo(f"  {name}: {err}")
    if warm != "none":
        from bot.answer_cache import warm_answers

        click.echo("  " + warm_answers(ctx.engine, ctx.settings, warm).line())


# --- running -----------------------------------------------------------------------------


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Console mode: folder for chart PNGs (default: output.dir setting).")
@pass_ctx
def run(ctx: Context, out: str | None) -> None:
    """Run Retail Pulse: the Slack bot, or the terminal console when Slack is not set up.

    \b
    SLACK_APP_TOKEN set                          → Socket Mode
    SLACK_BOT_TOKEN + SLACK_SIGNING_SECRET set   → HTTP on slack.host:slack.port (/slack/events)
    neither                                      → the console
    On first run with an empty store, the bundled Olist sample is loaded.
    """
    _ensure_data(ctx)
    from bot.server import run as run_slack

    if run_slack(ctx.settings, ctx.engine):
        return
    click.echo("Slack is not connected (set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET, or "
               "SLACK_APP_TOKEN for Socket Mode — see README, “Connect to Slack”). "
               "Opening the terminal console.")
    _console_loop(ctx, out)


def _ensure_data(ctx: Context) -> None:
    """Load the bundled sample into an empty store, so a fresh install has answers."""
    from storage.schema import orders

    with ctx.engine.connect() as conn:
        has_orders = conn.execute(select(orders.c.order_id).limit(1)).first() is not None
    if has_orders:
        return
    from storage.sample_data import sample_dir

    click.echo(f"First run: loading the bundled Olist sample from {sample_dir()} …")
    ctx_invoke_load(ctx, str(sample_dir()), "olist")


# --- asking -----------------------------------------------------------------------------


def _router(ctx: Context):
    """The router behind the store's pre-rendered answers (same answers, served when there)."""
    from bot.answer_cache import AnswerCache
    from bot.router import Router

    return AnswerCache(Router(ctx.engine, ctx.settings))


@cli.command()
@click.argument("text", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for scripts (figures, tables as records, chart paths).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for chart PNGs and CSV exports (default: output.dir setting).")
@pass_ctx
def ask(ctx: Context, text: tuple[str, ...], fmt: str, out: str | None) -> None:
    """Answer one command, exactly as Slack would: pulse ask "/churn-risk SP top 10"."""
    from bot.console import render_json, render_text, save_charts

    answer = _router(ctx).handle(" ".join(text))
    paths = save_charts(answer, out or ctx.settings.output_dir)
    click.echo(render_json(answer, paths) if fmt == "json" else render_text(answer, paths, currency=ctx.settings.currency))
    if answer.is_error:
        sys.exit(1)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for chart PNGs and CSV exports (default: output.dir setting).")
@pass_ctx
def console(ctx: Context, out: str | None) -> None:
    """An interactive console that takes the Slack command texts (/help, /segments, …)."""
    _console_loop(ctx, out)


def _console_loop(ctx: Context, out: str | None) -> None:
    from bot.console import render_text, save_charts

    router = _router(ctx)
    click.echo("Retail Pulse console — type a command such as /kpis or /segments SP; "
               "/help lists them; quit with Ctrl-D or `exit`.")
    while True:
        try:
            line = input("pulse> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo("")
            return
        if line.lower() in {"exit", "quit", ":q"}:
            return
        if not line:
            continue
        answer = router.handle(line)
        paths = save_charts(answer, out or ctx.settings.output_dir)
        click.echo(render_text(answer, paths, currency=ctx.settings.currency) + "\n")


@cli.command("export-segments")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for cluster_profiles.csv and cluster_summary.csv.")
@pass_ctx
def export_segments(ctx: Context, out: str) -> None:
    """Write cluster_profiles.csv (customer → RFM segment, cluster, tier) and cluster_summary.csv."""
    import pandas as pd

    from analytics.clusters import cluster_customers
    from analytics.rfm import rfm_scores
    from analytics.segments_export import write_segment_exports
    from storage.schema import customer_features
    from storage.store import get_meta

    features = pd.read_sql_table(customer_features.name, ctx.engine)
    if features.empty:
        raise click.ClickException("no customer features yet: run `pulse refresh` first.")
    features = features.sort_values("customer_id").reset_index(drop=True)
    stored = get_meta(ctx.engine, "clusters") or {}
    # Same seed and k as the last refresh, so the files agree with /segments clusters.
    clusters = cluster_customers(features, seed=int(stored.get("seed", ctx.settings.seed)),
                                 k=stored.get("k"))
    for path in write_segment_exports(out, rfm_scores(features), clusters, features):
        click.echo(f"wrote {path}")


@cli.group()
def db() -> None:
    """Inspect the store."""


@db.command("info")
@pass_ctx
def db_info(ctx: Context) -> None:
    """Tables with row counts, the data range and the as-of date."""
    from analytics.asof import purchase_time_range, resolve_as_of
    from storage import schema
    from storage.migrate import current_revision

    engine = ctx.engine
    click.echo(f"store: {_safe_url(ctx.settings.database_url)}  (schema {current_revision(engine)})")
    present = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name in present:
                n = conn.execute(select(func.count()).select_from(table)).scalar_one()
                click.echo(f"  {table.name:<20} {n:>12,}")
        lo, hi = purchase_time_range(conn)
    if lo is None:
        click.echo("data: empty — load some with `pulse load PATH --format olist`.")
        return
    click.echo(f"data: orders from {lo:%Y-%m-%d} to {hi:%Y-%m-%d}")
    asof = resolve_as_of(engine, fixed=ctx.settings.as_of_date())
    click.echo(f"as of: {asof.date} ({asof.reason})")


# --- weekly digests: `pulse schedule list`, `pulse backfill`, `pulse digest` (bot/cli_digest.py)

from bot.cli_digest import backfill, digest, schedule  # noqa: E402

cli.add_command(schedule)
cli.add_command(backfill)
cli.add_command(digest)


# --- churn: `pulse export-at-risk`, `pulse model evaluate` (bot/cli_churn.py) ----------------

from bot.cli_churn import export_at_risk as _export_at_risk  # noqa: E402
from bot.cli_churn import model as _model  # noqa: E402

cli.add_command(_export_at_risk)
cli.add_command(_model)

# ----------------------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    from bot.memory import one_arena

    one_arena()  # before any thread starts (the refresh's threads then keep their memory for reuse)
    cli(prog_name="pulse")


if __name__ == "__main__":  # pragma: no cover
    main()

