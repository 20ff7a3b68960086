"""Programs of memory operations: their text (what guest/kprograms/fuzz_exec.c reads), generation from a
seed, mutation, and configs/fuzz.yaml, which weighs the operations and says what each must invalidate.

Generation follows the grammar: an operation on an area comes after the area's `map`, a `bg_stop` after a
`bg`, a `reap` after a `fork`; sizes, ranges and words are drawn from what the area is believed to be
(the executor clips a range to the area as it is, so a program stays valid after any mutation).
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import paths, schema
from harness.errors import UserError

CONFIG = paths.CONFIGS / "fuzz.yaml"
NSLOTS = 8  # fuzz_exec.c's NSLOTS
MAX_PAGES = 512  # and MAX_PAGES
THP_PAGES = 512
WINDOWS = (0x200000000000, 0x200000000000 + NSLOTS * (1 << 30))  # fuzz_exec.c's slot windows: [start, end)
LOCALITY = 0.8  # how often an operation on a range takes the range of the operation before it

# operation -> its words after the name: "s" a slot, "i" an integer, and a fixed vocabulary by name
SIGNATURES: dict[str, tuple[str, ...]] = {
    "map": ("s", "kind", "i"), "unmap": ("s", "i", "i"), "protect": ("s", "i", "i", "prot"),
    "remap": ("s", "how", "i"), "write": ("s", "i", "i"), "read": ("s", "i", "i"),
    "advise": ("s", "i", "i", "advice"), "fork": ("s", "i", "i"), "reap": (), "softdirty": (), "compact": (),
    "msync": ("s",), "migrate": ("s", "i", "i"), "ksm_wait": (), "mirror": ("s",),
    "dev_read": ("s", "i", "i"), "dev_write": ("s", "i", "i"), "dev_migrate": ("s", "i", "i"),
    "dev_back": ("s", "i", "i"), "dev_excl": ("s", "i", "i"), "bg": ("s", "i", "i", "bgkind"), "bg_stop": (),
}
WORDS = {
    "kind": ("anon", "shared", "memfd", "file", "thp"),
    "prot": ("none", "r", "rw"),
    "how": ("grow", "shrink", "move", "dontunmap"),
    "advice": ("dontneed", "free", "cold", "pageout", "mergeable", "unmergeable", "guard", "unguard", "hugepage"),
    "bgkind": ("write", "devread"),
}
DEVICE_OPS = ("dev_read", "dev_write", "dev_migrate", "dev_back", "dev_excl")
NEEDS_SLOT_MAPPED = tuple(op for op, sig in SIGNATURES.items() if sig[:1] == ("s",) and op != "map")


class ProgramError(UserError):
    """A program text that is not one (a replayed or corpus file)."""


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[int | str, ...] = ()

    @property
    def slot(self) -> int | None:
        return self.args[0] if self.args and SIGNATURES[self.name][0] == "s" else None  # type: ignore[return-value]

    def text(self) -> str:
        return " ".join((self.name, *map(str, self.args)))

    def kind(self) -> str:
        """The operation as the oracle's events table names it: `advise dontneed`, `unmap`."""
        return f"advise {self.args[3]}" if self.name == "advise" else self.name


Program = tuple[Op, ...]


def render(program: Program) -> str:
    return "".join(op.text() + "\n" for op in program)


def parse(text: str, where: str = "program") -> Program:
    """A program's text, checked word by word against SIGNATURES (what the executor would refuse)."""
    ops = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        name, rest = words[0], words[1:]
        sig = SIGNATURES.get(name)
        if sig is None:
            raise ProgramError(f"{where}:{lineno}: unknown operation {name!r}; known: {', '.join(SIGNATURES)}")
        if len(rest) != len(sig):
            raise ProgramError(f"{where}:{lineno}: {name} takes {len(sig)} word(s) ({' '.join(sig) or 'none'}), "
                               f"found {len(rest)}")
        args: list[int | str] = []
        for word, what in zip(rest, sig, strict=True):
            if what in ("s", "i"):
                if not re.fullmatch(r"\d{1,6}", word):
                    raise ProgramError(f"{where}:{lineno}: {name}: {word!r} is not a small non-negative integer")
                value = int(word)
                if what == "s" and value >= NSLOTS:
                    raise ProgramError(f"{where}:{lineno}: {name}: slot {value} is not 0..{NSLOTS - 1}")
                args.append(value)
            elif word in WORDS[what]:
                args.append(word)
            else:
                raise ProgramError(f"{where}:{lineno}: {name}: {word!r} is not one of {', '.join(WORDS[what])}")
        if name == "map" and not 1 <= int(args[2]) <= MAX_PAGES:
            raise ProgramError(f"{where}:{lineno}: map: {args[2]} pages is not 1..{MAX_PAGES}")
        ops.append(Op(name, tuple(args)))
    return tuple(ops)


# --- configs/fuzz.yaml ---------------------------------------------------------------------------------

_WEIGHTS = schema.MapOf(schema.Str(), schema.Int(min=0))
_EVENT = schema.Record({
    "event": schema.required(schema.Str(r"[A-Z_]+", "an mmu_notifier_event name sans MMU_NOTIFY_"),
                             "the event that must cover the pages"),
    "case": schema.required(schema.Str(), "the case of configs/expectations/events.yaml that says the same"),
    "site": schema.required(schema.Str(), "where the kernel sends it"),
}, "an operation's required invalidation")
SCHEMA = schema.Record({
    "weights": schema.required(_WEIGHTS, "how often each operation of guest/kprograms/fuzz_exec.c is drawn"),
    "kinds": schema.required(_WEIGHTS, "how often a `map` makes each kind of area"),
    "sizes": schema.required(schema.ListOf(schema.Int(min=1), one_or_more=True), "an area's sizes in pages"),
    "advice": schema.required(_WEIGHTS, "how often an `advise` gives each advice"),
    "ops_per_program": schema.required(schema.Record({
        "min": schema.required(schema.Int(min=1)), "max": schema.required(schema.Int(min=1))}),
        "how many operations a generated program has"),
    "events": schema.required(schema.MapOf(schema.Str(), _EVENT),
                              "operation (`advise ADVICE` for one advice) -> the invalidation it must make"),
    "follow": schema.optional(schema.MapOf(schema.Str(), schema.MapOf(schema.Str(), schema.Number(positive=True))),
                              {}, "operation -> the next operation (or `advise ADVICE`) -> a factor on its weight, "
                                  "when the next takes the same range"),
    "known": schema.optional(schema.ListOf(schema.Record({
        "signature": schema.required(schema.Str(), "an fnmatch pattern over a finding's signature"),
        "why": schema.required(schema.Str(), "what it is, where, and how it was found"),
    }, "a finding investigated already")), [], "findings a campaign counts and goes on from"),
})


class FuzzConfigError(UserError):
    pass


@dataclass(frozen=True)
class FuzzConfig:
    weights: dict[str, int]
    kinds: dict[str, int]
    sizes: tuple[int, ...]
    advice: dict[str, int]
    min_ops: int
    max_ops: int
    events: dict[str, dict[str, str]]
    known: tuple[dict[str, str], ...] = ()
    follow: dict[str, dict[str, float]] = field(default_factory=dict)

    def known_as(self, signature: str) -> str | None:
        """The `known` pattern a finding's signature matches, if any."""
        return next((k["signature"] for k in self.known if fnmatch.fnmatchcase(signature, k["signature"])), None)


def load_config(path: Path = CONFIG) -> FuzzConfig:
    doc = schema.load(path, SCHEMA, FuzzConfigError)
    d = doc.data
    for key, known in (("weights", SIGNATURES), ("kinds", WORDS["kind"]), ("advice", WORDS["advice"])):
        if unknown := sorted(set(d[key]) - set(known)):
            raise FuzzConfigError(f"{doc.where((key, unknown[0]))}: {unknown[0]!r} is not one of {', '.join(known)}")
    named = [(("events", op), op) for op in d["events"]] + [(("follow", op), op) for op in d["follow"]] + \
        [(("follow", op, nxt), nxt) for op, nexts in d["follow"].items() for nxt in nexts]
    for at, op in named:
        name, _, advice = op.partition(" ")
        if name not in SIGNATURES or (advice and (name != "advise" or advice not in WORDS["advice"])):
            raise FuzzConfigError(f"{doc.where(at)}: {op!r} is not an operation (or `advise ADVICE`)")
    if max(d["sizes"]) > MAX_PAGES or d["ops_per_program"]["min"] > d["ops_per_program"]["max"]:
        raise FuzzConfigError(f"{path}: sizes must be at most {MAX_PAGES} pages and ops_per_program min <= max")
    return FuzzConfig(d["weights"], d["kinds"], tuple(d["sizes"]), d["advice"], d["ops_per_program"]["min"],
                      d["ops_per_program"]["max"], d["events"], tuple(d["known"]), d["follow"])


# --- generation and mutation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """What the guest has: a program only draws what it can run."""
    hmm: bool = True
    file: bool = True  # an ext2 at /mnt/wb for `file` areas
    ksm: bool = True
    model: bool = True
    kcov: bool = False  # coverage feedback (CONFIG_KCOV and --kcov)


class Generator:
    """Programs from a seed: the same seed and corpus give the same programs, in the same order."""

    def __init__(self, config: FuzzConfig, features: Features):
        self.config = config
        ops = {op: w for op, w in config.weights.items() if w > 0}
        if not features.hmm:
            ops = {op: w for op, w in ops.items() if op not in DEVICE_OPS}  # a `bg` then writes
        if not features.ksm:
            ops.pop("ksm_wait", None)
        if not features.model:
            ops.pop("mirror", None)
        self.ops = ops
        self.kinds = {k: w for k, w in config.kinds.items() if w > 0 and (features.file or k != "file")}
        self.hmm = features.hmm

    def program(self, rng: random.Random) -> Program:
        n = rng.randint(self.config.min_ops, self.config.max_ops)
        areas: dict[int, int] = {}  # slot -> pages, as far as the generator can tell
        out: list[Op] = []
        while len(out) < n:
            out.append(self.op(rng, areas, out[-1] if out else None))
        return tuple(out)

    def op(self, rng: random.Random, areas: dict[int, int], previous: Op | None = None) -> Op:
        if not areas:
            return self._map(rng, areas)
        # Locality: most bugs need several operations on the same pages (write, MADV_FREE, write again,
        # MADV_PAGEOUT), so most of the time an operation takes the range of the one before it, and then
        # configs/fuzz.yaml's `follow` says what tends to come next.
        local = previous is not None and previous.slot in areas and rng.random() < LOCALITY and \
            SIGNATURES[previous.name][:3] == ("s", "i", "i")
        follow = self.config.follow.get(previous.kind(), {}) if local and previous else {}
        name = _weighted(rng, self._boosted(self.ops, follow, ""))
        if name == "map":
            return self._map(rng, areas)
        if local and previous:
            slot, first, count = int(previous.args[0]), int(previous.args[1]), int(previous.args[2])
            pages = areas[slot]
        else:
            slot = rng.choice(sorted(areas))
            pages = areas[slot]
            first, count = rng.randrange(pages), rng.choice((1, 1, 2, 3, 4, 8, 16, pages))
        if name == "unmap":
            if first == 0 and count >= pages:
                del areas[slot]
            return Op(name, (slot, first, count))
        if name == "protect":
            return Op(name, (slot, first, count, rng.choice(WORDS["prot"])))
        if name == "remap":
            how = rng.choice(WORDS["how"])
            delta = rng.choice((1, 2, 4, 8))
            areas[slot] = min(MAX_PAGES, pages + delta) if how == "grow" else \
                max(1, pages - delta) if how == "shrink" else pages
            return Op(name, (slot, how, delta if how in ("grow", "shrink") else 0))
        if name == "advise":
            return Op(name, (slot, first, count, _weighted(rng, self._boosted(self.config.advice, follow, "advise "))))
        if name == "bg":
            return Op(name, (slot, first, count, rng.choice(WORDS["bgkind"]) if self.hmm else "write"))
        if name in ("msync", "mirror"):
            return Op(name, (slot,))
        if SIGNATURES[name] == ("s", "i", "i"):
            return Op(name, (slot, first, count))
        return Op(name)

    @staticmethod
    def _boosted(weights: dict[str, int], follow: dict[str, float], prefix: str) -> dict[str, float]:
        """The weights, each times its `follow` factor; `advise` as a whole gets its advices' largest."""
        out = {}
        for name, w in weights.items():
            factor = follow.get(prefix + name, 1.0)
            if not prefix and name == "advise":
                factor = max([factor, *(f for k, f in follow.items() if k.startswith("advise "))])
            out[name] = w * factor
        return out

    def _map(self, rng: random.Random, areas: dict[int, int]) -> Op:
        free = [s for s in range(NSLOTS) if s not in areas]
        slot = rng.choice(free) if free else rng.randrange(NSLOTS)
        kind = _weighted(rng, self.kinds)
        pages = THP_PAGES if kind == "thp" else rng.choice(self.config.sizes)
        areas[slot] = pages
        return Op("map", (slot, kind, pages))

    def mutate(self, rng: random.Random, program: Program, other: Program) -> Program:
        """One change: insert, delete, redraw or splice (with `other`), as a grammar-blind edit of a list
        that the executor's clipping keeps runnable."""
        ops = list(program)
        how = rng.choice(("insert", "insert", "delete", "redraw", "splice", "duplicate"))
        at = rng.randrange(len(ops) + 1)
        areas = _areas_before(ops, at)
        if how == "insert" or not ops:
            ops.insert(at, self.op(rng, areas, ops[at - 1] if at else None))
        elif how == "delete" and len(ops) > 1:
            del ops[min(at, len(ops) - 1)]
        elif how == "redraw":
            ops[min(at, len(ops) - 1)] = self.op(rng, areas, ops[at - 1] if at else None)
        elif how == "splice" and other:
            ops = ops[:at] + list(other[rng.randrange(len(other)):])
        else:
            start = rng.randrange(len(ops))
            ops[start:start] = ops[start:start + rng.randint(1, 4)]
        return tuple(ops[:self.config.max_ops * 2])


def _areas_before(ops: list[Op], at: int) -> dict[int, int]:
    areas: dict[int, int] = {}
    for op in ops[:at]:
        if op.name == "map":
            areas[int(op.args[0])] = int(op.args[2])
        elif op.name == "unmap" and op.args[1] == 0 and op.slot in areas and int(op.args[2]) >= areas[int(op.args[0])]:
            del areas[int(op.args[0])]
    return areas


def _weighted(rng: random.Random, weights: dict[str, int] | dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def simpler(op: Op) -> list[Op]:
    """Smaller versions of one operation, for the shrinker: FIRST towards 0, a count or size towards 1."""
    out = []
    for i, what in enumerate(SIGNATURES[op.name]):
        value = op.args[i]
        if what != "i" or not isinstance(value, int) or (op.name == "map" and op.args[1] == "thp"):
            continue
        for v in sorted({0} if i == 1 else {1, max(1, value // 2)}):
            if v < value:
                out.append(replace(op, args=(*op.args[:i], v, *op.args[i + 1:])))
    return out
