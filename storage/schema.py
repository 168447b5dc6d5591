"""The store's tables (SQLAlchemy Core). Alembic migrations in `storage/migrations`
create and upgrade them; a test checks that the migrations and this module agree."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# --- canonical model -------------------------------------------------------------
# `load_run` on every canonical table: the load_runs.id of the load that last wrote the
# row (NULL when written some other way). The refresh reads only the rows of loads after
# its snapshot's (analytics/snapshot.py).

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("city", String(128)),
    Column("state", String(64)),  # state code (BR) or country for non-Brazilian data
    Column("region", String(64)),  # macro-region (BR) or country
    Column("country", String(64)),
    Column("zip_prefix", String(16)),
    Column("first_seen", DateTime),
    Column("source", String(32), nullable=False),
    Column("load_run", Integer),
    Index("ix_customers_state", "state"),
    Index("ix_customers_region", "region"),
    Index("ix_customers_load_run", "load_run"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("purchased_at", DateTime, nullable=False),
    # Olist statuses as published; online-retail: "invoiced" or "canceled";
    # transactions: "completed".
    Column("status", String(32), nullable=False),
    Column("approved_at", DateTime),
    Column("delivered_at", DateTime),
    Column("estimated_delivery_at", DateTime),
    Column("items_value", Float, nullable=False, default=0.0),
    Column("freight_value", Float, nullable=False, default=0.0),
    Column("payment_value", Float),
    Column("n_items", Integer, nullable=False, default=0),
    Column("source_customer_ref", String(64)),  # Olist's per-order customer_id
    Column("source", String(32), nullable=False),
    Column("load_run", Integer),
    Index("ix_orders_customer", "customer_id", "purchased_at"),
    Index("ix_orders_purchased", "purchased_at"),
    Index("ix_orders_load_run", "load_run"),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("item_seq", Integer, primary_key=True),
    Column("product_id", String(64)),
    Column("category", String(128)),
    Column("seller_id", String(64)),
    Column("quantity", Float, nullable=False, default=1.0),
    Column("price", Float, nullable=False),  # line value (unit price x quantity)
    Column("freight_value", Float, nullable=False, default=0.0),
    Column("load_run", Integer),
    Index("ix_order_items_load_run", "load_run"),
)

payments = Table(
    "payments",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("method", String(32)),
    Column("installments", Integer),
    Column("value", Float, nullable=False),
    Column("load_run", Integer),
    Index("ix_payments_load_run", "load_run"),
)

reviews = Table(
    "reviews",
    metadata,
    Column("review_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("score", Integer, nullable=False),
    Column("created_at", DateTime),
    Column("load_run", Integer),
    Index("ix_reviews_order", "order_id"),
    Index("ix_reviews_load_run", "load_run"),
)

# --- loading ---------------------------------------------------------------------

load_runs = Table(
    "load_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("format", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("status", String(16), nullable=False),  # running | ok | failed
    Column("rows_read", Integer, nullable=False, default=0),
    Column("rows_loaded", Integer, nullable=False, default=0),
    Column("rows_quarantined", Integer, nullable=False, default=0),
    Column("summary", Text),  # JSON
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("load_run_id", Integer, ForeignKey("load_runs.id"), nullable=False),
    Column("source", Text, nullable=False),  # file (and table) the row came from
    Column("row_number", Integer),
    Column("row", Text, nullable=False),  # the raw row as JSON
    Column("reason", String(200), nullable=False),
    Index("ix_quarantine_run", "load_run_id"),
)

# --- refresh outputs ---------------------------------------------------------------

customer_features = Table(
    "customer_features",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("as_of", Date, nullable=False),
    Column("first_purchase", DateTime),
    Column("last_purchase", DateTime),
    Column("orders", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
    Column("avg_ticket", Float),
    Column("items", Float),
    Column("categories", Integer),
    Column("top_category", String(128)),
    Column("avg_installments", Float),
    Column("late_share", Float),
    Column("avg_review", Float),
    Column("state", String(64)),
    Column("region", String(64)),
    Column("tenure_days", Integer),
    Column("recency_days", Integer),
    Column("first_order_value", Float),
    Column("freight", Float),
    Index("ix_features_state", "state"),
    Index("ix_features_region", "region"),
)

customer_scores = Table(
    "customer_scores",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("as_of", Date, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("r_score", Integer),
    Column("f_score", Integer),
    Column("m_score", Integer),
    Column("segment", String(32)),
    Column("cluster", Integer),
    Column("cluster_name", String(64)),
    Column("tier", String(8)),
    Column("churn_prob", Float),
    Column("churn_source", String(16)),  # supervised | bgnbd
    Column("p_alive", Float),
    Column("expected_purchases", Float),
    Column("expected_spend", Float),
    Column("clv", Float),
    Column("value_at_risk", Float),
    Column("risk_band", String(8)),
    Index("ix_scores_segment", "segment"),
    Index("ix_scores_var", "value_at_risk"),
)
# the at-risk list of a big place or segment, read in value order: its top rows are the
# index's first (`analytics.risk.at_risk_query`), without sorting the band
Index("ix_scores_band_var", customer_scores.c.risk_band,
      customer_scores.c.value_at_risk.desc(), customer_scores.c.customer_id)

segment_snapshots = Table(
    "segment_snapshots",
    metadata,
    Column("snapshot_date", Date, primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("segment", String(32), nullable=False),
    Column("revenue", Float),
    Column("state", String(64)),
    Column("region", String(64)),
)

models = Table(
    "models",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("card", Text, nullable=False),  # JSON model card
    Column("blob", LargeBinary),  # joblib dump
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text),
)

# --- answer facts (written by the refresh, read by the reports) ------------------------
# Small aggregates of the purchases on or before the refresh's as-of date (meta "facts"
# holds that date and the parameters they were built with). A customer lives in one
# state, so counts of distinct customers or orders per (state, region) add up across
# states and regions. Place-level tables are keyed by (place_kind, place_value):
# ("all", "*"), ("region", name) or ("state", code) — figures such as medians that do
# not add up are stored per place.

agg_orders_monthly = Table(
    "agg_orders_monthly",
    metadata,
    Column("month", String(7), nullable=False),  # 'YYYY-MM'
    Column("state", String(64)),
    Column("region", String(64)),
    Column("orders", Integer, nullable=False),
    Column("revenue", Float, nullable=False),  # Σ (items_value + freight_value)
    Column("items_value", Float, nullable=False),
    Column("freight", Float, nullable=False),
    Column("with_items", Integer, nullable=False),  # orders with items_value > 0
    Column("heavy_orders", Integer, nullable=False),  # freight > heavy_ratio × items_value
    Column("heavy_revenue", Float, nullable=False),
    Column("active_customers", Integer, nullable=False),
    Column("new_customers", Integer, nullable=False),  # first purchase in this month
    Column("new_revenue", Float, nullable=False),
    Column("repeaters", Integer, nullable=False),  # second purchase in this month
    Column("reviews", Integer, nullable=False),  # reviews created by as-of, of these orders
    Column("review_score", Float, nullable=False),  # Σ score of those reviews
)

agg_weekday_hour = Table(
    "agg_weekday_hour",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("weekday", Integer, nullable=False),  # Monday = 0
    Column("hour", Integer, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
)

agg_categories = Table(
    "agg_categories",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("category", String(128), nullable=False),  # NULL stored as "(no category)"
    Column("orders", Integer, nullable=False),  # distinct orders holding the category
    Column("revenue", Float, nullable=False),  # Σ (item price + item freight)
    Column("items_value", Float, nullable=False),
    Column("freight", Float, nullable=False),
    Column("heavy_orders", Integer, nullable=False),
    Column("heavy_revenue", Float, nullable=False),
)

agg_cohorts = Table(
    "agg_cohorts",
    metadata,
    Column("period", String(8), nullable=False),  # month | week
    Column("cohort", Integer, nullable=False),  # period index of the first purchase
    Column("k", Integer, nullable=False),  # periods after the cohort's own
    Column("state", String(64)),
    Column("region", String(64)),
    Column("active", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
)

agg_delivery = Table(
    "agg_delivery",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("purchases", Integer, nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("with_estimate", Integer, nullable=False),  # delivered with an estimated date
    Column("reviews_on_time", Integer, nullable=False),
    Column("review_score_on_time", Float, nullable=False),
    Column("reviews_late", Integer, nullable=False),
    Column("review_score_late", Float, nullable=False),
    Column("first_on_time", Integer, nullable=False),  # customers, by their first purchase
    Column("first_on_time_again", Integer, nullable=False),
    Column("first_late", Integer, nullable=False),
    Column("first_late_again", Integer, nullable=False),
)

agg_delivery_stats = Table(
    "agg_delivery_stats",
    metadata,
    # level: all | region | state (one place) or group (one state/region pair)
    Column("level", String(8), nullable=False),
    Column("state", String(64)),
    Column("region", String(64)),
    Column("orders", Integer, nullable=False),
    Column("mean_days", Float),
    Column("median_days", Float),
    Column("p90_days", Float),
    Column("on_time_share", Float),
    Column("late_share", Float),
    Column("mean_days_late", Float),
)

agg_freight_bands = Table(
    "agg_freight_bands",
    metadata,
    Column("place_kind", String(8), nullable=False),
    Column("place_value", String(64), nullable=False),
    Column("band", Integer, nullable=False),
    Column("freight_min", Float, nullable=False),
    Column("freight_max", Float, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("mean_freight", Float, nullable=False),
    Column("on_time_share", Float),
    Column("mean_days", Float),
)

agg_payments = Table(
    "agg_payments",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("method", String(32), nullable=False),  # NULL stored as "(unknown)"
    Column("installments", Integer),
    Column("payments", Integer, nullable=False),
    Column("value", Float, nullable=False),
)

agg_payment_segments = Table(
    "agg_payment_segments",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("segment", String(32), nullable=False),  # NULL stored as "(none)"
    Column("customers", Integer, nullable=False),
    Column("payments", Integer, nullable=False),
    Column("value", Float, nullable=False),
    Column("installments_sum", Float, nullable=False),  # over payments with a count
    Column("installments_n", Integer, nullable=False),
    Column("multi", Float, nullable=False),  # value paid with installments > 1
)

agg_payment_orders = Table(
    "agg_payment_orders",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("paid_orders", Integer, nullable=False),
    Column("unpaid_orders", Integer, nullable=False),
    Column("mismatched_orders", Integer, nullable=False),
    Column("mismatch_value", Float, nullable=False),
)

agg_payment_mismatches = Table(
    "agg_payment_mismatches",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64)),
    Column("purchased_at", DateTime),
    Column("state", String(64)),
    Column("region", String(64)),
    Column("order_value", Float, nullable=False),
    Column("paid", Float, nullable=False),
    Column("difference", Float, nullable=False),
    Column("gap", Float, nullable=False),  # |difference|
    Index("ix_agg_mismatch_gap", "gap"),
)

agg_concentration = Table(
    "agg_concentration",
    metadata,
    Column("place_kind", String(8), primary_key=True),
    Column("place_value", String(64), primary_key=True),
    Column("customers", Integer, nullable=False),
    Column("gini", Float),
    Column("top_share_1", Float),  # share of revenue of the top 1% of customers
    Column("top_share_10", Float),
    Column("top_share_20", Float),
)

# Written from the stored features and scores (not from the dataset) after they are: one
# row per place, RFM segment, churn source and risk band with the customers' sums. The
# figures `/churn-risk`, `/ltv` and the digest show for a place add up from it
# (analytics.risk, analytics.ltv).
agg_customers = Table(
    "agg_customers",
    metadata,
    Column("state", String(64)),
    Column("region", String(64)),
    Column("segment", String(32)),
    Column("churn_source", String(16)),
    Column("risk_band", String(8)),
    Column("customers", Integer, nullable=False),
    Column("buyers", Integer, nullable=False),  # customers with a purchase (features.orders > 0)
    Column("orders", Integer, nullable=False),  # Σ features.orders
    Column("repeaters", Integer, nullable=False),  # customers with two purchases or more
    Column("revenue", Float),  # Σ historical revenue (features.revenue)
    Column("value_at_risk", Float),  # Σ, NULL when no customer of the row has one
    Column("clv", Float),  # Σ predicted CLV, NULL when no customer of the row has one
    Column("clv_customers", Integer, nullable=False),  # customers with a predicted CLV
)

# Segment migration cells between two snapshots (analytics.migration): customers and
# revenue per place, earlier and later segment. Written by the refresh for the snapshot
# it writes; rows naming a snapshot date go whenever that snapshot is rewritten.
agg_migration = Table(
    "agg_migration",
    metadata,
    Column("earlier", Date, nullable=False),
    Column("later", Date, nullable=False),
    Column("state", String(64)),
    Column("region", String(64)),
    Column("source", String(32), nullable=False),  # earlier segment, or "New customers"
    Column("target", String(32), nullable=False),  # later segment, or "Not in later snapshot"
    Column("customers", Integer, nullable=False),
    Column("revenue", Float, nullable=False),
    Index("ix_agg_migration_pair", "later", "earlier"),
)

FACT_TABLES = (
    agg_orders_monthly, agg_weekday_hour, agg_categories, agg_cohorts, agg_delivery,
    agg_delivery_stats, agg_freight_bands, agg_payments, agg_payment_segments,
    agg_payment_orders, agg_payment_mismatches, agg_concentration,
)

# --- Slack side ----------------------------------------------------------------------

digest_runs = Table(
    "digest_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("week", Date, nullable=False),  # as-of date of the digest's week
    Column("status", String(16), nullable=False),  # claimed | partial | posted | failed
    Column("parts", Text),  # JSON: part name -> Slack id once posted
    Column("message_ts", String(32)),
    Column("owner", String(64)),
    Column("error", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("channel", "week", name="uq_digest_channel_week"),
)

export_audit = Table(
    "export_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(64)),
    Column("channel_id", String(64)),
    Column("command", String(64), nullable=False),
    Column("filter", Text),
    Column("row_count", Integer, nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

CANONICAL_TABLES = (customers, orders, order_items, payments, reviews)

# --- pre-rendered answers ----------------------------------------------------------

# One row per (normalised command text, data version, settings): the serialised answer with
# its PNG charts, so every bot instance sharing the store reuses renders. `version` names
# the refresh/load the answer is of; rows of an older version are deleted by the next warm-up.
answer_cache = Table(
    "answer_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),  # sha256 of command, version, settings
    Column("command", Text, nullable=False),  # the normalised command text
    Column("version", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("render_ms", Integer),
    Column("created_at", DateTime, nullable=False),
    Index("ix_answer_cache_version", "version"),
)
