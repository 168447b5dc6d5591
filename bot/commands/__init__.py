"""Every command the router knows, in the order `/pulse-help` lists them."""

from bot.commands import help as help_command

COMMANDS = [
    help_command.COMMAND,
]
