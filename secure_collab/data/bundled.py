"""A CounterFact-format edit set generated deterministically from the MIT-licensed ``countryinfo`` data.

Facts are (country, relation, object) for four relations: capital (P36), continent (P30), official language
(P37, countries with exactly one listed language) and currency (P38, countries with exactly one listed
currency). ISO language / currency codes are named through the small tables below; a country whose code is not
in them is left out of that relation. A request rewrites one fact to another country's object of the same
relation; its neighbourhood prompts are other countries with the same relation, those sharing the true object
first (CounterFact's choice), then others, each with its own true object in ``neighborhood_targets``.

The draw uses ``random.Random(seed)``: this is a public benchmark, not a secret.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_collab.data.formats import parse_records
from secure_collab.data.requests import Request

N_NEIGHBOURS = 10
# Small territories (Norfolk Island, Mayotte) are facts a small model rarely knows, so a rewrite of them
# measures little; by default only countries of at least a million people are used.
MIN_POPULATION = 1_000_000

# relation id -> templates; the first is the edit prompt, the others are paraphrases
TEMPLATES: dict[str, tuple[str, ...]] = {
    "P36": ("The capital of {} is", "The capital city of {} is", "{}'s capital city is",
            "The seat of government of {} is in"),
    "P30": ("{} is located in the continent of", "{} is a country in", "{} is part of the continent of",
            "Geographically, {} belongs to"),
    "P37": ("The official language of {} is", "In {}, the official language is", "The people of {} speak",
            "The main language spoken in {} is"),
    "P38": ("The currency of {} is the", "The official currency of {} is the", "In {}, people pay with the",
            "The money used in {} is the"),
}

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian", "km": "Khmer",
    "ko": "Korean", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "mn": "Mongolian",
    "ms": "Malay", "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovene", "sq": "Albanian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "uz": "Uzbek", "vi": "Vietnamese", "zh": "Chinese",
}

CURRENCIES = {
    "AED": "UAE dirham", "ARS": "Argentine peso", "AUD": "Australian dollar", "BDT": "Bangladeshi taka",
    "BGN": "Bulgarian lev", "BRL": "Brazilian real", "CAD": "Canadian dollar", "CHF": "Swiss franc",
    "CLP": "Chilean peso", "CNY": "Chinese yuan", "COP": "Colombian peso", "CZK": "Czech koruna",
    "DKK": "Danish krone", "DZD": "Algerian dinar", "EGP": "Egyptian pound", "EUR": "euro",
    "GBP": "pound sterling", "HUF": "Hungarian forint", "IDR": "Indonesian rupiah", "ILS": "Israeli shekel",
    "INR": "Indian rupee", "ISK": "Icelandic krona", "JPY": "Japanese yen", "KES": "Kenyan shilling",
    "KRW": "South Korean won", "MAD": "Moroccan dirham", "MXN": "Mexican peso", "MYR": "Malaysian ringgit",
    "NGN": "Nigerian naira", "NOK": "Norwegian krone", "NZD": "New Zealand dollar", "PEN": "Peruvian sol",
    "PHP": "Philippine peso", "PKR": "Pakistani rupee", "PLN": "Polish zloty", "RON": "Romanian leu",
    "RUB": "Russian ruble", "SAR": "Saudi riyal", "SEK": "Swedish krona", "SGD": "Singapore dollar",
    "THB": "Thai baht", "TND": "Tunisian dinar", "TRY": "Turkish lira", "UAH": "Ukrainian hryvnia",
    "USD": "US dollar", "VND": "Vietnamese dong", "XAF": "Central African CFA franc",
    "XCD": "East Caribbean dollar", "XOF": "West African CFA franc", "XPF": "CFP franc",
    "ZAR": "South African rand",
}


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    obj: str


def _continent(info: dict[str, Any]) -> str | None:
    region = info.get("region") or None
    if region != "Americas":
        return region if region in ("Africa", "Asia", "Europe", "Oceania") else None
    # countryinfo groups both Americas; CounterFact-style continents split them
    return "South America" if info.get("intermediateregion") == "South America" else "North America"


def _clean(text: Any) -> str | None:
    if not isinstance(text, str) or not text.strip() or any(c in text for c in "/,{}()"):
        return None
    return text.strip()


def country_facts(min_population: int = MIN_POPULATION) -> list[Fact]:
    """All usable facts about countries of at least ``min_population`` people, sorted (the draw's input)."""
    from countryinfo import CountryInfo

    facts: set[Fact] = set()
    info: dict[str, Any]
    for info in CountryInfo.all().values():  # type: ignore[assignment]  # a TypedDict, read as a dict
        name = _clean(info.get("name"))
        if name is None or (info.get("population") or 0) < max(min_population, 1):
            continue
        objects = {
            "P36": _clean(info.get("capital")),
            "P30": _continent(info),
            "P37": LANGUAGES.get(info["languages"][0]) if len(info.get("languages") or []) == 1 else None,
            "P38": CURRENCIES.get(info["currencies"][0]) if len(info.get("currencies") or []) == 1 else None,
        }
        facts.update(Fact(name, rel, obj) for rel, obj in objects.items() if obj is not None)
    return sorted(facts, key=lambda f: (f.relation, f.subject, f.obj))


def bundled_records(n: int, seed: int = 0, min_population: int = MIN_POPULATION) -> list[dict[str, Any]]:
    """``n`` CounterFact-format records, fixed by (n, seed, min_population, countryinfo data)."""
    facts = country_facts(min_population)
    if not 0 < n <= len(facts):
        raise ValueError(f"n must be in 1..{len(facts)} (facts available from countryinfo), got {n}")
    by_rel: dict[str, list[Fact]] = {}
    for f in facts:
        by_rel.setdefault(f.relation, []).append(f)
    rng = random.Random(seed)
    chosen = rng.sample(facts, n)
    records = []
    for case_id, fact in enumerate(chosen):
        same_rel = by_rel[fact.relation]
        objects = sorted({f.obj for f in same_rel} - {fact.obj})
        target_new = rng.choice(objects)
        templates = TEMPLATES[fact.relation]
        paraphrases = rng.sample(templates[1:], 2)
        others = [f for f in same_rel if f.subject != fact.subject]
        sharing = [f for f in others if f.obj == fact.obj]
        rest = [f for f in others if f.obj != fact.obj and f.obj != target_new]
        neighbours = rng.sample(sharing, min(N_NEIGHBOURS, len(sharing)))
        neighbours += rng.sample(rest, min(N_NEIGHBOURS - len(neighbours), len(rest)))
        records.append({
            "case_id": case_id,
            "requested_rewrite": {
                "prompt": templates[0], "relation_id": fact.relation, "subject": fact.subject,
                "target_new": {"str": target_new}, "target_true": {"str": fact.obj},
            },
            "paraphrase_prompts": [t.format(fact.subject) for t in paraphrases],
            "neighborhood_prompts": [templates[0].format(f.subject) for f in neighbours],
            "neighborhood_targets": [f.obj for f in neighbours],  # not in upstream CounterFact
        })
    return records


def bundled_requests(n: int = 100, seed: int = 0, min_population: int = MIN_POPULATION) -> list[Request]:
    """The bundled set as requests (see ``bundled_records``)."""
    return parse_records(bundled_records(n, seed, min_population), "counterfact",
                         source=f"bundled(n={n}, seed={seed})")


def write_bundled(path: str | os.PathLike[str], n: int = 100, seed: int = 0,
                  min_population: int = MIN_POPULATION) -> Path:
    """Write the bundled set as a CounterFact-format JSON list (one record per line, as upstream)."""
    path = Path(path)
    records = bundled_records(n, seed, min_population)
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m secure_collab.data.bundled OUT.json [--n N] [--seed S]``: write the set as CounterFact JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m secure_collab.data.bundled", description=main.__doc__)
    p.add_argument("out")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-population", type=int, default=MIN_POPULATION)
    args = p.parse_args(argv)
    path = write_bundled(args.out, args.n, args.seed, args.min_population)
    print(f"wrote {args.n} CounterFact-format records to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
