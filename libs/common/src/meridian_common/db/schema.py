"""Tables. Time-series tables carry their time column in the primary key so they can become
TimescaleDB hypertables; natural unique keys make every write an idempotent upsert."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

# Time-series tables that become hypertables when TimescaleDB is present (name, time column).
HYPERTABLES = (("candles", "open_time"), ("fills", "ts"), ("equity", "ts"),
               ("funding", "funding_time"), ("risk_decisions", "ts"))


def _ts(name: str, **kw: object) -> Column:
    return Column(name, DateTime(timezone=True), nullable=False, **kw)


candles = Table(
    "candles", metadata,
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("timeframe", String(8), primary_key=True),
    _ts("open_time", primary_key=True),
    Column("open", Numeric, nullable=False),
    Column("high", Numeric, nullable=False),
    Column("low", Numeric, nullable=False),
    Column("close", Numeric, nullable=False),
    Column("volume", Numeric, nullable=False),
    Column("revision", Integer, nullable=False, server_default=text("0")),
)

funding = Table(
    "funding", metadata,
    # Funding-rate settlements of perpetuals; rate per interval as a fraction (0.0001 = 0.01 %).
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    _ts("funding_time", primary_key=True),
    Column("rate", Numeric, nullable=False),
    Column("revision", Integer, nullable=False, server_default=text("0")),
)

fills = Table(
    "fills", metadata,
    # The fill id is deterministic and includes the order, so (ts, fill_id) is unique per fill.
    _ts("ts", primary_key=True),
    Column("fill_id", String(80), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", SmallInteger, nullable=False),  # Side enum value
    Column("quantity", Numeric, nullable=False),
    Column("price", Numeric, nullable=False),
    Column("fee", Numeric, nullable=False),
    Column("fee_currency", String(16), nullable=False),
)

risk_decisions = Table(
    "risk_decisions", metadata,
    # The audit trail of the risk gate: one row per decision, approved or rejected, with every
    # rule's verdict and the numbers it compared. The decision id is "dec:<signal id>", so
    # (ts, decision_id) is unique per decision and a redelivered decision is dropped.
    _ts("ts", primary_key=True),
    Column("decision_id", Text, primary_key=True),
    Column("cause_id", Text, nullable=False),  # the signal id
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("client_order_id", String(64), nullable=False),  # '' when rejected
    Column("side", String(4), nullable=False),  # 'buy', 'sell' or '' (nothing to trade)
    Column("quantity", Numeric, nullable=False),
    Column("reference_price", Numeric, nullable=False),
    Column("reduce_only", Boolean, nullable=False),
    # Names of the rules that did not pass, in evaluation order (empty when approved), so
    # "why was this refused" is a column, not a JSON query.
    Column("failed_rules", ARRAY(Text), nullable=False),
    Column("rules", JSONB, nullable=False),  # [{"rule", "passed", "detail"}, ...] in order
)

positions = Table(
    "positions", metadata,
    Column("account", String(64), primary_key=True),
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("quantity", Numeric, nullable=False),
    Column("average_price", Numeric, nullable=False),
    Column("realized_pnl", Numeric, nullable=False),
    Column("fees_paid", Numeric, nullable=False),
    Column("trades_closed", Integer, nullable=False),
    _ts("as_of"),
    # funding paid on perpetuals (negative: received), added by revision 0006
    Column("funding_paid", Numeric, nullable=False, server_default=text("0")),
)

equity = Table(
    "equity", metadata,
    # Per-symbol PnL curve, one row per marked candle; the account curve is their sum.
    Column("account", String(64), primary_key=True),
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    _ts("ts", primary_key=True),
    Column("quantity", Numeric, nullable=False),
    Column("mark_price", Numeric, nullable=False),
    Column("realized_pnl", Numeric, nullable=False),
    Column("unrealized_pnl", Numeric, nullable=False),
    Column("fees_paid", Numeric, nullable=False),
    Column("net_pnl", Numeric, nullable=False),
    Column("funding_paid", Numeric, nullable=False, server_default=text("0")),  # 0006
)

trades = Table(
    "trades", metadata,
    Column("account", String(64), primary_key=True),
    Column("exchange", String(32), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    _ts("entry_time", primary_key=True),
    _ts("exit_time"),
    Column("direction", SmallInteger, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("entry_price", Numeric, nullable=False),
    Column("exit_price", Numeric, nullable=False),
    Column("gross_pnl", Numeric, nullable=False),
    Column("fees", Numeric, nullable=False),
    Column("net_pnl", Numeric, nullable=False),
    Column("funding", Numeric, nullable=False, server_default=text("0")),  # 0006
)

models = Table(
    "models", metadata,
    # The model registry's index; the artefacts (ONNX, xgboost JSON, manifest, card) live on disk
    # or in an object store under artifact_path. At most one promoted version per model name.
    Column("version", String(128), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("feature_set", String(64), nullable=False),
    Column("feature_fingerprint", String(64), nullable=False),
    _ts("train_start"),
    _ts("train_end"),
    Column("hyperparameters", JSONB, nullable=False),
    Column("metrics", JSONB, nullable=False),
    Column("threshold", Double, nullable=False),
    Column("strategy", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("content_hash", String(64), nullable=False),
    Column("artifact_path", Text, nullable=False),
    _ts("created_at"),
    Column("promoted_at", DateTime(timezone=True), nullable=True),
    Index("models_name", "name"),
    Index("models_one_promoted", "name", unique=True,
          postgresql_where=text("promoted_at is not null")),
)

active_configs = Table(
    "active_configs", metadata,
    # A strategy's optimized configuration (research writes it, `meridian promote`; the risk
    # gate applies its limits per strategy). At most one promoted version per strategy.
    Column("strategy", String(64), primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("parameters", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("leverage", Numeric, nullable=False),
    Column("margin_mode", String(16), nullable=False),
    Column("max_position_notional", Numeric, nullable=False),
    Column("study", String(128), nullable=False, server_default=""),
    Column("trial", Integer, nullable=True),
    Column("data_start", DateTime(timezone=True), nullable=True),
    Column("data_end", DateTime(timezone=True), nullable=True),
    _ts("created_at"),
    Column("promoted_at", DateTime(timezone=True), nullable=True),
    Index("active_configs_one_promoted", "strategy", unique=True,
          postgresql_where=text("promoted_at is not null")),
)

__all__ = ["HYPERTABLES", "BigInteger", "active_configs", "candles", "equity", "fills",
           "funding", "metadata", "models", "positions", "risk_decisions", "trades"]
