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
@pass_ctx
def load(ctx: Context, path: str, fmt: str, mapping: str | None, options: tuple[str, ...],
         no_refresh: bool) -> None:
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
        _run_refresh(ctx)


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
@pass_ctx
def refresh(ctx: Context) -> None:
    """Recompute customer features, RFM segments, clusters and scores, and today's snapshot."""
    _run_refresh(ctx)


def _run_refresh(ctx: Context) -> None:
    try:
        from analytics.refresh import refresh as run_refresh
    except ImportError:
        click.echo("refresh: the analytics package is not installed in this build.")
        return
    report = run_refresh(ctx.engine, as_of=ctx.settings.as_of_date(), seed=ctx.settings.seed)
    for line in report.summary_lines():
        click.echo(line)


@cli.group()
def db() -> None:
    """Inspect the store."""


@db.command("info")
@pass_ctx
def db_info(ctx: Context) -> None:
    """Tables with row counts, the data range and the as-of date."""
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
        lo, hi = conn.execute(
            select(func.min(schema.orders.c.purchased_at), func.max(schema.orders.c.purchased_at))
        ).one()
    if lo is None:
        click.echo("data: empty — load some with `pulse load PATH --format olist`.")
        return
    click.echo(f"data: orders from {lo:%Y-%m-%d} to {hi:%Y-%m-%d}")
    try:
        from analytics.asof import resolve_as_of
    except ImportError:
        return
    asof = resolve_as_of(engine, fixed=ctx.settings.as_of_date())
    click.echo(f"as of: {asof.date} ({asof.reason})")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="pulse")


if __name__ == "__main__":  # pragma: no cover
    main()

