"""Daily PnL per account: a view over the per-symbol equity curve.

A day's close per symbol is its last equity row up to the end of the day (the candle closing at
midnight belongs to the day it opened in), carried forward over days a symbol has no row (an
outage, or after it stopped trading), summed over the account's symbols; `pnl` is the change
from the previous day's close. Computed when read, so it can never disagree with the curve; with
TimescaleDB a continuous aggregate could replace it when the curve grows large.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"

VIEW = """
create or replace view daily_pnl as
with days as (
    select account, generate_series(date_trunc('day', min(ts) - interval '1 microsecond'),
                                    date_trunc('day', max(ts) - interval '1 microsecond'),
                                    interval '1 day') as day
    from equity group by account
),
markets as (
    select distinct account, exchange, symbol from equity
),
closes as (
    select d.account, d.day, e.net_pnl, e.realized_pnl, e.fees_paid, e.funding_paid
    from days d
    join markets m on m.account = d.account
    join lateral (
        select net_pnl, realized_pnl, fees_paid, funding_paid from equity e
        where e.account = m.account and e.exchange = m.exchange and e.symbol = m.symbol
          and e.ts <= d.day + interval '1 day'
        order by e.ts desc limit 1
    ) e on true
),
per_day as (
    select account, day, sum(net_pnl) as net_pnl, sum(realized_pnl) as realized_pnl,
           sum(fees_paid) as fees_paid, sum(funding_paid) as funding_paid
    from closes group by account, day
)
select account, day, net_pnl,
       net_pnl - coalesce(lag(net_pnl) over (partition by account order by day), 0) as pnl,
       realized_pnl, fees_paid, funding_paid
from per_day
"""


def upgrade() -> None:
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("drop view if exists daily_pnl")
