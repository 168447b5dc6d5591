"""Every command the router knows, in the order `/pulse-help` lists them."""

from bot.commands import (
    churn_risk,
    cohorts,
    delivery,
    digest,
    export_at_risk,
    finance,
    kpis,
    ltv,
    migration,
    model,
    payments,
    segments,
)
from bot.commands import help as help_command

COMMANDS = [
    kpis.COMMAND,
    segments.COMMAND,
    cohorts.COMMAND,
    ltv.COMMAND,
    delivery.COMMAND,
    payments.COMMAND,
    finance.COMMAND,
    churn_risk.COMMAND,
    export_at_risk.COMMAND,
    model.COMMAND,
    migration.COMMAND,
    digest.COMMAND,
    help_command.COMMAND,
]
