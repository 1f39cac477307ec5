"""The embedded offline demo task: a fictional knowledge base with 1-hop and 2-hop questions.

Entities (cities, people, companies, inventions) get names built from syllables,
so no model can know them; each is one short paragraph stating every fact
verbatim. Questions are answered by searching that corpus. Held-out questions
ask about entities no train question asks about. Deterministic from the seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.rl.types import Passage, Task

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "th", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "x", "m")
_CITY_ENDS = ("wick", "ford", "mere", "holm", "dale", "port", "gard", "stead")
_COMPANY_KINDS = ("Labs", "Works", "Industries", "Systems", "Foundry", "Company")
_INVENTION_KINDS = ("Engine", "Loom", "Lamp", "Compass", "Press", "Valve", "Telescope", "Clock")
_PROFESSIONS = ("painter", "chemist", "sailor", "architect", "baker", "astronomer", "poet", "engineer", "surgeon")
_RIVERS = 6


@dataclass(frozen=True, slots=True)
class _Entity:
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DemoDataset:
    """The generated corpus and its two question splits."""

    passages: list[Passage]
    """One encyclopedia paragraph per entity (title = entity name)."""
    train: list[Task]
    """Training questions."""
    heldout: list[Task]
    """Evaluation questions about entities no train question is about."""


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(syllables)).capitalize()


def _unique_name(rng: random.Random, used: set[str], make: Callable[[], str]) -> str:
    while True:
        name = make()
        if name.lower() not in used:
            used.add(name.lower())
            used.update(part.lower() for part in name.split())
            return name


def _make_entities(rng: random.Random, num_entities: int) -> list[_Entity]:
    """Cities first (others refer to them), then people, companies and inventions."""
    used: set[str] = set()
    n_city = max(3, num_entities * 15 // 100)
    n_company = max(1, num_entities * 25 // 100)
    n_invention = max(1, num_entities * 20 // 100)
    n_person = max(2, num_entities - n_city - n_company - n_invention)
    countries = [_unique_name(rng, used, lambda: _word(rng, 2) + "ia") for _ in range(5)]
    rivers = [_unique_name(rng, used, lambda: _word(rng, 2)) for _ in range(_RIVERS)]
    cities = [
        _Entity(
            "city",
            _unique_name(rng, used, lambda: _word(rng, 1) + rng.choice(_CITY_ENDS)),
            {"country": rng.choice(countries), "river": rng.choice(rivers)},
        )
        for _ in range(n_city)
    ]
    people = [
        _Entity(
            "person",
            _unique_name(rng, used, lambda: f"{_word(rng, 2)} {_word(rng, rng.choice((1, 2)))}"),
            {
                "birthplace": rng.choice(cities).name,
                "profession": rng.choice(_PROFESSIONS),
                "birth_year": str(rng.randint(1790, 1960)),
            },
        )
        for _ in range(n_person)
    ]
    companies = [
        _Entity(
            "company",
            _unique_name(rng, used, lambda: f"{_word(rng, 2)} {rng.choice(_COMPANY_KINDS)}"),
            {
                "founder": rng.choice(people).name,
                "city": rng.choice(cities).name,
                "founding_year": str(rng.randint(1820, 1990)),
            },
        )
        for _ in range(n_company)
    ]
    inventions = [
        _Entity(
            "invention",
            _unique_name(rng, used, lambda: f"{_word(rng, 2)} {rng.choice(_INVENTION_KINDS)}"),
            {"inventor": rng.choice(people).name, "year": str(rng.randint(1800, 1995))},
        )
        for _ in range(n_invention)
    ]
    return [*cities, *people, *companies, *inventions]


def _paragraph(e: _Entity) -> str:
    f = e.facts
    if e.kind == "city":
        return f"{e.name} is a city in the country of {f['country']}. {e.name} lies on the river {f['river']}."
    if e.kind == "person":
        article = "an" if f["profession"][0] in "aeiou" else "a"
        return (
            f"{e.name} was {article} {f['profession']}. {e.name} was born in the city of {f['birthplace']} "
            f"in the year {f['birth_year']}."
        )
    if e.kind == "company":
        return (
            f"{e.name} is a company founded by {f['founder']} in the year {f['founding_year']}. "
            f"{e.name} is located in the city of {f['city']}."
        )
    return f"The {e.name} is an invention made by {f['inventor']} in the year {f['year']}."


# (entity kind, relation, question template, fact key): answered by the subject's own paragraph.
_ONE_HOP = (
    ("city", "country", "In which country is the city of {s}?", "country"),
    ("person", "birthplace", "In which city was {s} born?", "birthplace"),
    ("person", "profession", "What was the profession of {s}?", "profession"),
    ("person", "birth_year", "In which year was {s} born?", "birth_year"),
    ("company", "founder", "Who founded {s}?", "founder"),
    ("company", "city", "In which city is {s} located?", "city"),
    ("company", "founding_year", "In which year was {s} founded?", "founding_year"),
    ("invention", "inventor", "Who invented the {s}?", "inventor"),
    ("invention", "year", "In which year was the {s} invented?", "year"),
)
# (entity kind, relation, template, bridge key, fact key on the bridge entity)
_TWO_HOP = (
    ("company", "founder.birthplace", "In which city was the founder of {s} born?", "founder", "birthplace"),
    ("company", "founder.profession", "What was the profession of the founder of {s}?", "founder", "profession"),
    ("company", "city.country", "In which country is the city where {s} is located?", "city", "country"),
    ("invention", "inventor.birthplace", "In which city was the inventor of the {s} born?", "inventor", "birthplace"),
    ("invention", "inventor.birth_year", "In which year was the inventor of the {s} born?", "inventor", "birth_year"),
)


def _questions(entities: list[_Entity]) -> tuple[list[Task], list[Task]]:
    by_name = {e.name: e for e in entities}
    one_hop, two_hop = [], []
    for e in entities:
        for kind, relation, template, key in _ONE_HOP:
            if e.kind == kind:
                meta = {
                    "dataset": "demo",
                    "type": "one_hop",
                    "relation": relation,
                    "num_hops": 1,
                    "subject": e.name,
                    "search_queries": [e.name],
                }
                one_hop.append(
                    Task(
                        id=f"demo-{relation}-{e.name}".replace(" ", "_"),
                        question=template.format(s=e.name),
                        answers=(e.facts[key],),
                        supporting_titles=(e.name,),
                        metadata=meta,
                    )
                )
        for kind, relation, template, bridge_key, key in _TWO_HOP:
            if e.kind == kind:
                bridge = by_name[e.facts[bridge_key]]
                meta = {
                    "dataset": "demo",
                    "type": "two_hop",
                    "relation": relation,
                    "num_hops": 2,
                    "subject": e.name,
                    "bridge": bridge.name,
                    "search_queries": [e.name, bridge.name],
                }
                two_hop.append(
                    Task(
                        id=f"demo-{relation}-{e.name}".replace(" ", "_"),
                        question=template.format(s=e.name),
                        answers=(bridge.facts[key],),
                        supporting_titles=(e.name, bridge.name),
                        metadata=meta,
                    )
                )
    return one_hop, two_hop


def _split_by_subject(tasks: list[Task], heldout_size: int, rng: random.Random) -> tuple[list[Task], list[Task]]:
    subjects = sorted({str(t.metadata["subject"]) for t in tasks})
    rng.shuffle(subjects)
    held_subjects: set[str] = set()
    count = 0
    for s in subjects:
        if count >= heldout_size:
            break
        held_subjects.add(s)
        count += sum(1 for t in tasks if t.metadata["subject"] == s)
    pool = [t for t in tasks if t.metadata["subject"] in held_subjects]
    heldout = rng.sample(pool, min(heldout_size, len(pool)))
    train = [t for t in tasks if t.metadata["subject"] not in held_subjects]
    return train, sorted(heldout, key=lambda t: t.id)


def build_demo_dataset(
    seed: int = 0, *, num_entities: int = 200, two_hop_fraction: float = 0.3, heldout_size: int = 100
) -> DemoDataset:
    """Generate the fictional KB and its questions; the same seed gives the same dataset."""
    if num_entities < 10:
        raise ValueError(f"num_entities must be >= 10 to form questions, got {num_entities}")
    if not 0.0 <= two_hop_fraction < 1.0:
        raise ValueError(f"two_hop_fraction must be in [0, 1), got {two_hop_fraction}")
    if heldout_size < 0:
        raise ValueError(f"heldout_size must be >= 0, got {heldout_size}")
    rng = random.Random(seed)
    entities = _make_entities(rng, num_entities)
    one_hop, two_hop = _questions(entities)
    want_two = round(len(one_hop) * two_hop_fraction / (1.0 - two_hop_fraction))
    two_hop = rng.sample(two_hop, min(want_two, len(two_hop)))
    tasks = one_hop + two_hop
    if heldout_size > len(tasks) // 2:
        raise ValueError(
            f"heldout_size={heldout_size} leaves too few train questions ({len(tasks)} in all); "
            "lower heldout_size or raise num_entities"
        )
    train, heldout = _split_by_subject(tasks, heldout_size, rng)
    rng.shuffle(train)
    passages = [Passage(title=e.name, text=_paragraph(e), id=f"demo-{i}") for i, e in enumerate(entities)]
    return DemoDataset(passages=passages, train=train, heldout=heldout)


def _tool_call(query: str) -> str:
    payload = json.dumps({"name": "search", "arguments": {"query": query}})
    return f"<tool_call>\n{payload}\n</tool_call>"


def demo_solution(task: Task, dataset: DemoDataset) -> list[str]:
    """The scripted gold assistant turns (one search per hop, then `<answer>`) for warm starts."""
    queries = task.metadata.get("search_queries")
    if not isinstance(queries, list) or not queries:
        raise ValueError(f"task {task.id!r} is not a demo KB task (metadata has no 'search_queries')")
    titles = {p.title for p in dataset.passages}
    missing = [q for q in queries if q not in titles]
    if missing:
        raise ValueError(f"task {task.id!r} refers to entities {missing} absent from this dataset's passages")
    return [*(_tool_call(str(q)) for q in queries), f"<answer>{task.answers[0]}</answer>"]
