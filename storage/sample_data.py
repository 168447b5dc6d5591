"""The bundled Olist sample: a 10% customer sample of the real data with complete histories.

`sample_dir()` is where the package keeps it; `build_sample()` is how it was made:

    python -m storage.sample_data build --src ../shared/data/olist --out storage/sample

Customers (the person, `customer_unique_id`) are drawn at random with a fixed seed and
each keeps *all* their orders, and those orders keep all their items, payments and
reviews, so repeat-purchase and retention figures stay representative.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
from importlib import resources
from pathlib import Path

import pandas as pd

from storage.olist_shapes import OLIST_COLUMNS

DEFAULT_FRACTION = 0.10
DEFAULT_SEED = 20180829

LICENCE_FILE = "README.md"


def sample_dir() -> Path:
    """The folder of the bundled sample (Olist CSV layout, .csv.xz files)."""
    return Path(str(resources.files("storage") / "sample"))


def find_source_file(src_dir: Path, stem: str) -> Path:
    """The file for a Kaggle `stem` in `src_dir`: the complete one before a partial copy.

    A name that goes straight from the stem to `.csv` wins; files whose name says
    `sample` are never used (they are not complete).
    """
    found = sorted(p for p in src_dir.glob(f"{stem}*.csv*") if p.is_file())
    found = [p for p in found if "sample" not in p.name[len(stem):]]
    if not found:
        raise FileNotFoundError(f"no {stem}*.csv* in {src_dir}")
    exact = [p for p in found if p.name[len(stem):].startswith(".csv")]
    return (exact or found)[0]


def _read(path: Path) -> pd.DataFrame:
    # Everything as text, so ids, zip prefixes and numbers are written back as they were.
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _pick(ids: pd.Series, fraction: float, seed: int) -> set[str]:
    """A seeded random subset of `ids`: the ones with the smallest keyed hash.

    Keyed hashing rather than a numpy generator keeps the draw identical on any platform
    and library version.
    """
    unique = sorted(set(ids))
    k = round(len(unique) * fraction)
    salt = f"{seed}:".encode()
    ranked = sorted(unique, key=lambda u: hashlib.blake2b(salt + u.encode(), digest_size=8).digest())
    return set(ranked[:k])


def _write_xz(frame: pd.DataFrame, path: Path) -> None:
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    path.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def _repeat_rate(orders: pd.DataFrame, customers: pd.DataFrame) -> tuple[int, int, float]:
    per_person = orders.merge(customers, on="customer_id").groupby("customer_unique_id").size()
    return int(per_person.size), int(per_person.sum()), float((per_person > 1).mean())


def build_sample(
    src_dir: Path | str,
    out_dir: Path | str,
    fraction: float = DEFAULT_FRACTION,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Write a customer sample of the Olist CSVs in `src_dir` to `out_dir` (.csv.xz files).

    About `fraction` of the people (`customer_unique_id`) are drawn with `seed`; every
    order of theirs, with its items, payments and reviews, and every product, seller and
    customer row those reference, is kept, plus the whole category translation. Returns
    the figures (rows per file, bytes, customers, orders, repeat rate of sample and full).
    """
    src, out = Path(src_dir), Path(out_dir)
    if out.resolve() == src.resolve():
        raise ValueError("the sample must go to another folder than its source")
    out.mkdir(parents=True, exist_ok=True)
    sources = {stem: find_source_file(src, stem) for stem in OLIST_COLUMNS}
    tables = {stem: _read(path) for stem, path in sources.items()}

    customers, orders = tables["olist_customers_dataset"], tables["olist_orders_dataset"]
    people = _pick(customers["customer_unique_id"], fraction, seed)
    kept: dict[str, pd.DataFrame] = {}
    kept["olist_customers_dataset"] = customers[customers["customer_unique_id"].isin(people)]
    kept["olist_orders_dataset"] = orders[
        orders["customer_id"].isin(kept["olist_customers_dataset"]["customer_id"])
    ]
    order_ids = kept["olist_orders_dataset"]["order_id"]
    for stem in ("olist_order_items_dataset", "olist_order_payments_dataset",
                 "olist_order_reviews_dataset"):
        kept[stem] = tables[stem][tables[stem]["order_id"].isin(order_ids)]
    items = kept["olist_order_items_dataset"]
    products, sellers = tables["olist_products_dataset"], tables["olist_sellers_dataset"]
    kept["olist_products_dataset"] = products[products["product_id"].isin(items["product_id"])]
    kept["olist_sellers_dataset"] = sellers[sellers["seller_id"].isin(items["seller_id"])]
    kept["product_category_name_translation"] = tables["product_category_name_translation"]

    for stem in OLIST_COLUMNS:  # an earlier sample's files
        for old in out.glob(f"{stem}*.csv*"):
            old.unlink()
    rows: dict[str, int] = {}
    for stem, frame in kept.items():
        # Columns a reconstructed source lacks (the review comments) are written empty.
        frame = frame.reindex(columns=OLIST_COLUMNS[stem], fill_value="")
        _write_xz(frame, out / f"{stem}.csv.xz")
        rows[stem] = len(frame)

    n_people, n_orders, repeat = _repeat_rate(
        kept["olist_orders_dataset"], kept["olist_customers_dataset"])
    full_people, full_orders, full_repeat = _repeat_rate(orders, customers)
    figures = {
        "fraction": fraction,
        "seed": seed,
        "sources": {stem: p.name for stem, p in sources.items()},
        "rows": rows,
        "customers": n_people,
        "orders": n_orders,
        "repeat_rate": repeat,
        "full_customers": full_people,
        "full_orders": full_orders,
        "full_repeat_rate": full_repeat,
    }
    (out / LICENCE_FILE).write_text(_readme(figures), encoding="utf-8")
    figures["bytes"] = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return figures


def _readme(f: dict) -> str:
    rows = "\n".join(f"| {stem}.csv.xz | {n:,} |" for stem, n in f["rows"].items())
    sources = "\n".join(f"- {stem}: `{name}`" for stem, name in f["sources"].items())
    return f"""\
# Olist sample bundled with Retail Pulse

**Data:** Olist, "Brazilian E-Commerce Public Dataset by Olist", published on Kaggle as
`olistbr/brazilian-ecommerce` (https://www.kaggle.com/datasets/olistbr/brazilian-ecommerce).

**Licence:** Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International
(CC BY-NC-SA 4.0, https://creativecommons.org/licenses/by-nc-sa/4.0/). You may share and
adapt this data for non-commercial purposes only, you must credit Olist, and anything you
make from it must be shared under the same licence. This folder is a subset of the
original and is distributed under that same licence; it is not covered by the MIT licence
of the Retail Pulse code. Values are unchanged except as noted below; the files were
re-written as UTF-8 CSV (no BOM, LF line ends, quotes only where needed) and xz-compressed.

## What this is

A **{f['fraction']:.0%} customer sample**: {f['customers']:,} of the {f['full_customers']:,}
people (`customer_unique_id`) with their complete order history, {f['orders']:,} of
{f['full_orders']:,} orders. Repeat-customer rate (people with two or more orders):
{f['repeat_rate']:.2%} here, {f['full_repeat_rate']:.2%} in the full data.

How it was drawn: each `customer_unique_id` was ranked by BLAKE2b (8-byte digest) of
`"{f['seed']}:<customer_unique_id>"` and the lowest {f['fraction']:.0%} were kept (seed {f['seed']}).
Then: every order of those people; every item, payment and review of those orders; the
customer rows of those orders (one per order, as in Olist); the products and sellers the
items reference (all original columns); and the whole category translation. Rebuild it with

    python -m storage.sample_data build --src ../shared/data/olist --out storage/sample

| file | rows |
|---|---|
{rows}

Made from these files (their provenance is in the SOURCES.md of the project's Olist data
folder, `../shared/data/olist`):

{sources}

## Lossy columns

The raw files were put back together from public copies of the Kaggle data, and some
columns did not survive intact:

- `olist_order_items_dataset`: `shipping_limit_date` has the date only (time of day lost);
  `price` and `freight_value` went through float32 and were rounded back to 2 decimals.
- `olist_order_reviews_dataset`: `review_comment_title` and `review_comment_message` were
  not in the source and are empty here; `review_creation_date` and
  `review_answer_timestamp` have the date only. The source lacks one 5-star review of the
  99,224.
- `olist_customers_dataset`: rows are sorted by `customer_id`, not in Kaggle's order.
- `olist_orders_dataset`: rows are grouped by purchase date, not in Kaggle's order.
- `olist_geolocation_dataset` is not included.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m storage.sample_data")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="draw the customer sample from the full Olist CSVs")
    build.add_argument("--src", required=True, type=Path, help="folder of the full Olist CSVs")
    build.add_argument("--out", required=True, type=Path, help="folder to write the sample to")
    build.add_argument("--fraction", type=float, default=DEFAULT_FRACTION)
    build.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    figures = build_sample(args.src, args.out, fraction=args.fraction, seed=args.seed)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
