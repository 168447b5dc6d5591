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
    Index("ix_customers_state", "state"),
    Index("ix_customers_region", "region"),
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
    Index("ix_orders_customer", "customer_id", "purchased_at"),
    Index("ix_orders_purchased", "purchased_at"),
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
)

payments = Table(
    "payments",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("method", String(32)),
    Column("installments", Integer),
    Column("value", Float, nullable=False),
)

reviews = Table(
    "reviews",
    metadata,
    Column("review_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("score", Integer, nullable=False),
    Column("created_at", DateTime),
    Index("ix_reviews_order", "order_id"),
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
