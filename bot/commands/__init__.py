"""Every command the router knows, in the order `/pulse-help` lists them."""

from bot.commands import cohorts, delivery, digest, finance, kpis, ltv, migration, payments
from bot.commands import help as help_command

COMMANDS = [
    kpis.COMMAND,
    cohorts.COMMAND,
    ltv.COMMAND,
    delivery.COMMAND,
    payments.COMMAND,
    finance.COMMAND,
    migration.COMMAND,
    digest.COMMAND,
    help_command.COMMAND,
]
