"""Plain language to command text: "@Retail Pulse churn risk in Rio de Janeiro" → "/churn-risk rio de janeiro".

A pure function of the text (no store, no Slack), so mentions, DMs and tests share it.
"""

from __future__ import annotations

import re

from storage.geography import BR_STATES, REGION_ALIASES, fold

# Ordered: the first keyword that matches decides the command ("churn model" is /model,
# "segment migration" is /migration, "export the at-risk list" is /export-at-risk).
KEYWORDS: tuple[tuple[str, str], ...] = (
    ("export-at-risk", r"\bexport"),
    ("model", r"\bmodel\b|\baccuracy\b|\bauc\b|\bcalibration\b"),
    ("migration", r"\bmigrat|\btransitions?\b|\bmoved\b|\bmovements?\b"),
    ("churn-risk", r"\bchurn|\bat[- ]?risk\b|\brisk"),
    ("segments", r"\bsegment|\brfm\b|\bclusters?\b|\bclustering\b"),
    ("cohorts", r"\bcohorts?\b|\bretention\b|\bretain|\brepeat\b"),
    ("ltv", r"\bltv\b|\bclv\b|\blifetime\b|\bcustomer value\b"),
    ("delivery", r"\bdeliver|\blate\b|\bshipping\b|\bdelays?\b|\bfreight\b"),
    ("payments", r"\bpayments?\b|\binstal+ments?\b|\bboleto\b|\bcredit cards?\b|\bvouchers?\b"),
    ("finance", r"\bfinances?\b|\bfinancial\b|\brevenue\b|\bsales\b|\bgmv\b|\bturnover\b"),
    ("kpis", r"\bkpis?\b|\boverview\b|\bsummary\b|\bdashboard\b|\bhow are we doing\b|\bheadline"),
    ("pulse-help", r"\bhelp\b|\bcommands\b|\bwhat can you do\b|\bhow do i\b|\busage\b"),
)
_KEYWORDS = tuple((name, re.compile(pattern)) for name, pattern in KEYWORDS)

# Sub-choices a command takes as its first word ("/segments clusters").
SUBCHOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "segments": (("clusters", r"\bclusters?\b|\bclustering\b"), ("rfm", r"\brfm\b")),
}

# How commands take a count, for those the router does not have (yet): else the usage
# line ("[top N]", "[limit N]") says.
COUNT_OPTIONS = {"churn-risk": "top", "export-at-risk": "limit"}

EXAMPLES = (
    "@Retail Pulse churn risk in Rio de Janeiro",
    "@Retail Pulse segments in the south",
    "@Retail Pulse top 20 at-risk customers in SP",
    "@Retail Pulse late deliveries in the northeast",
    "@Retail Pulse kpis",
)

# fold(name) -> what to pass on; longest first so "mato grosso do sul" beats "sul".
_PLACES: list[tuple[str, str]] = sorted(
    [(fold(name), fold(name)) for name, _ in BR_STATES.values()]
    + [(alias, fold(region)) for alias, region in REGION_ALIASES.items()],
    key=lambda p: -len(p[0]),
)
_PLACE_RES = [(re.compile(r"(?<![\w-])" + re.escape(k) + r"(?![\w-])"), v) for k, v in _PLACES]
_CODE_RE = re.compile(r"(?<![\w-])([A-Z]{2})(?![\w-])")
# "in United Kingdom", "for EIRE": capitalised words after in/for/from (non-Brazilian data).
_NAMED_RE = re.compile(
    r"\b(?:in|for|from)\s+(?:the\s+)?"
    r"((?:[A-Z][\w'’-]*)(?:\s+(?:[A-Z][\w'’-]*|of|and|de|do|da|dos|das))*)"
)
# Capitalised words after "in" that are not places ("export in CSV", "revenue in March").
_NOT_PLACES = frozenset({
    "csv", "excel", "pdf", "png", "slack", "json", "brl", "usd", "reais", "real", "dollars",
    "english", "portuguese", "i", "q1", "q2", "q3", "q4",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
})
_TOP_RE = re.compile(r"\b(?:top|first|best|worst)\s+(\d{1,6})\b|\b(\d{1,6})\s+(?:customers|clients|people|rows)\b")
_WEEKS_RE = re.compile(r"\b(\d{1,3})\s+weeks?\b")
_SLACK_MARKUP = re.compile(r"<(?:[@#!][^>|]*)(?:\|[^>]*)?>")
_LINK = re.compile(r"<([^>|]*)(?:\|([^>]*))?>")


def clean(text: str) -> str:
    """The message without mentions and Slack markup, entities decoded, spaces squeezed."""
    text = _SLACK_MARKUP.sub(" ", text or "")
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def mention_to_command(text: str) -> str | None:
    """The command text a mention or DM asks for, or None when it asks nothing we know.

    "/kpis SP" typed after the mention is passed on as it is.
    """
    plain = clean(text)
    if plain.startswith("/"):
        return plain
    folded = fold(plain)
    name = next((n for n, rx in _KEYWORDS if rx.search(folded)), None)
    if name is None:
        return None
    args: list[str] = []
    for choice, pattern in SUBCHOICES.get(name, ()):
        if re.search(pattern, folded):
            args.append(choice)
            break
    if name != "pulse-help":
        place = find_place(plain)
        if place:
            args.append(place)
        top = _TOP_RE.search(folded)
        option = _count_option(name) if top else None
        if top and option:
            args += [option, top.group(1) or top.group(2)]
        weeks = _WEEKS_RE.search(folded)
        if weeks and _usage_has(name, "weeks N"):
            args += ["weeks", weeks.group(1)]
    return " ".join([f"/{name}", *args])


def find_place(text: str) -> str | None:
    """The first state, region or country named in `text`, as the router accepts it."""
    folded = fold(text)
    for rx, value in _PLACE_RES:
        if rx.search(folded):
            return value
    for m in _CODE_RE.finditer(text):
        if m.group(1) in BR_STATES:
            return m.group(1)
    named = _NAMED_RE.search(text)
    if named:
        words = named.group(1).split()
        while words and words[-1].lower() in {"of", "and", "de", "do", "da", "dos", "das"}:
            words.pop()
        phrase = " ".join(words)
        if (words and fold(words[0]) not in _NOT_PLACES
                and not any(rx.search(fold(phrase)) for _, rx in _KEYWORDS)):
            return phrase
    return None


def _count_option(name: str) -> str | None:
    """How the command takes "top 20": its `top N` option, else `limit N`, else not at all."""
    from bot.commands import COMMANDS

    for cmd in COMMANDS:
        if cmd.name == name:
            for option in ("top", "limit"):
                if re.search(rf"\b{option} N\b", cmd.usage):
                    return option
            return None
    return COUNT_OPTIONS.get(name)


def _usage_has(name: str, words: str) -> bool:
    from bot.commands import COMMANDS

    return any(cmd.name == name and words in cmd.usage for cmd in COMMANDS)
