"""Geography: Brazilian states and macro-regions, and matching what people type.

Loaders use it to fill `customers.region`; the command router uses `resolve_place`
to turn "são paulo", "sao paulo", "SP", "southeast" or a country into a filter.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# code -> (name, macro-region)
BR_STATES: dict[str, tuple[str, str]] = {
    "AC": ("Acre", "Norte"),
    "AL": ("Alagoas", "Nordeste"),
    "AP": ("Amapá", "Norte"),
    "AM": ("Amazonas", "Norte"),
    "BA": ("Bahia", "Nordeste"),
    "CE": ("Ceará", "Nordeste"),
    "DF": ("Distrito Federal", "Centro-Oeste"),
    "ES": ("Espírito Santo", "Sudeste"),
    "GO": ("Goiás", "Centro-Oeste"),
    "MA": ("Maranhão", "Nordeste"),
    "MT": ("Mato Grosso", "Centro-Oeste"),
    "MS": ("Mato Grosso do Sul", "Centro-Oeste"),
    "MG": ("Minas Gerais", "Sudeste"),
    "PA": ("Pará", "Norte"),
    "PB": ("Paraíba", "Nordeste"),
    "PR": ("Paraná", "Sul"),
    "PE": ("Pernambuco", "Nordeste"),
    "PI": ("Piauí", "Nordeste"),
    "RJ": ("Rio de Janeiro", "Sudeste"),
    "RN": ("Rio Grande do Norte", "Nordeste"),
    "RS": ("Rio Grande do Sul", "Sul"),
    "RO": ("Rondônia", "Norte"),
    "RR": ("Roraima", "Norte"),
    "SC": ("Santa Catarina", "Sul"),
    "SP": ("São Paulo", "Sudeste"),
    "SE": ("Sergipe", "Nordeste"),
    "TO": ("Tocantins", "Norte"),
}

BR_REGIONS = ("Norte", "Nordeste", "Centro-Oeste", "Sudeste", "Sul")

# English and unaccented spellings people use for the macro-regions.
REGION_ALIASES: dict[str, str] = {
    "norte": "Norte", "north": "Norte",
    "nordeste": "Nordeste", "northeast": "Nordeste", "north east": "Nordeste",
    "centro oeste": "Centro-Oeste", "centro-oeste": "Centro-Oeste", "centrooeste": "Centro-Oeste",
    "center west": "Centro-Oeste", "centre west": "Centro-Oeste", "midwest": "Centro-Oeste",
    "central west": "Centro-Oeste", "center-west": "Centro-Oeste", "mid west": "Centro-Oeste",
    "sudeste": "Sudeste", "southeast": "Sudeste", "south east": "Sudeste",
    "sul": "Sul", "south": "Sul",
}


def fold(text: str) -> str:
    """Lower-case, accent-free, single-spaced text ("São  Paulo" → "sao paulo")."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.replace("_", " ").lower().split())


def region_of_state(state: str | None) -> str | None:
    """The Brazilian macro-region of a state code, or None for anything else."""
    if state is None:
        return None
    entry = BR_STATES.get(state.strip().upper())
    return entry[1] if entry else None


@dataclass(frozen=True)
class Place:
    """A geographic filter: `kind` is "state", "region" or "all"."""

    kind: str
    value: str | None
    label: str

    @property
    def is_all(self) -> bool:
        return self.kind == "all"


ALL = Place("all", None, "all customers")


class UnknownPlace(ValueError):
    """Raised for a place name that matches nothing; carries the closest matches."""

    def __init__(self, text: str, suggestions: list[str]):
        self.text = text
        self.suggestions = suggestions
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"I don't know the place “{text}”.{hint}")


def resolve_place(
    text: str | None,
    known_states: Iterable[str] = (),
    known_regions: Iterable[str] = (),
) -> Place:
    """A Place for what the user typed.

    Accepts Brazilian state codes and names (with or without accents), macro-regions
    in Portuguese or English, and any state/region value present in the data
    (`known_states`, `known_regions`: countries for non-Brazilian data).
    """
    if text is None or not text.strip() or fold(text) in {"all", "everything", "todos", "brasil", "brazil"}:
        return ALL
    key = fold(text)
    code = text.strip().upper()
    if code in BR_STATES:
        return Place("state", code, f"{BR_STATES[code][0]} ({code})")
    by_name = {fold(name): c for c, (name, _) in BR_STATES.items()}
    if key in by_name:
        c = by_name[key]
        return Place("state", c, f"{BR_STATES[c][0]} ({c})")
    if key in REGION_ALIASES:
        r = REGION_ALIASES[key]
        return Place("region", r, f"region {r}")
    states = {fold(s): s for s in known_states if s}
    regions = {fold(r): r for r in known_regions if r}
    if key in states:
        return Place("state", states[key], states[key])
    if key in regions:
        return Place("region", regions[key], f"region {regions[key]}")
    candidates = (
        {fold(n): n for n, _ in BR_STATES.values()}
        | {a: REGION_ALIASES[a] for a in REGION_ALIASES}
        | states
        | regions
    )
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(candidates[c] for c in close))
    raise UnknownPlace(text.strip(), suggestions)
