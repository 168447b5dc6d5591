"""Parsing command arguments: keyword options ("top 20", "min-prob 0.7") and a place."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.router import UsageError


@dataclass
class ParsedArgs:
    """Words that were flags, keyword options with their values, and the leftover text."""

    flags: set[str] = field(default_factory=set)
    options: dict[str, str] = field(default_factory=dict)
    rest: list[str] = field(default_factory=list)

    @property
    def rest_text(self) -> str | None:
        text = " ".join(self.rest).strip()
        return text or None


def parse_args(
    args: list[str],
    *,
    flags: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
) -> ParsedArgs:
    """Split `args` into known flags, `option VALUE` pairs and the rest (e.g. a place).

    Options also accept `option=VALUE`. Matching is case-insensitive.
    """
    out = ParsedArgs()
    i = 0
    while i < len(args):
        word = args[i]
        low = word.lower()
        if "=" in low and low.split("=", 1)[0] in options:
            key, value = word.split("=", 1)
            out.options[key.lower()] = value
        elif low in options:
            if i + 1 >= len(args):
                raise UsageError(f"`{word}` needs a value after it.")
            out.options[low] = args[i + 1]
            i += 1
        elif low in flags:
            out.flags.add(low)
        else:
            out.rest.append(word)
        i += 1
    return out


def int_option(parsed: ParsedArgs, name: str, default: int, lo: int, hi: int) -> int:
    """An integer option within [lo, hi], or a UsageError that says what is accepted."""
    if name not in parsed.options:
        return default
    raw = parsed.options[name]
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"`{name}` takes a whole number from {lo} to {hi}, not “{raw}”.") from None
    if not lo <= value <= hi:
        raise UsageError(f"`{name}` takes a whole number from {lo} to {hi}; {value} is out of range.")
    return value


def float_option(parsed: ParsedArgs, name: str, default: float | None, lo: float,
                 hi: float) -> float | None:
    """A number option within [lo, hi] ("0.7" or "70%")."""
    if name not in parsed.options:
        return default
    raw = parsed.options[name].strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"`{name}` takes a number from {lo} to {hi}, not “{raw}”.") from None
    if not lo <= value <= hi or value != value:
        raise UsageError(f"`{name}` takes a number from {lo} to {hi}; {raw} is out of range.")
    return value


def one_of(parsed: ParsedArgs, choices: tuple[str, ...], default: str) -> str:
    """The first leftover word if it is one of `choices` (removed from rest), else default."""
    if parsed.rest and parsed.rest[0].lower() in choices:
        return parsed.rest.pop(0).lower()
    return default
