"""What made an output, kept with it and never in its records.

An output's provenance is the list of steps that made it (an input scored by one scorer, then by the other, then
selected from), each in two parts: its *identity*, what `resume` and `merge` check (the step, the model's content
fingerprint, the settings that change its results), and its *record*, what is reported only (the model file's
name, and per distinct setup that ran: the localscore and llama-cpp-python versions, the kernels, CPU class and
backend). Nothing in it depends on paths, hosts or time, so a resumed, sharded-and-merged or Ray run records
exactly what the single run records. A shard adds its slice (see runs/shards.py).

Where it lives: a Parquet file holds it in its key-value metadata (key PARQUET_KEY); every other output (JSON
Lines, `.npy`, a partial output, a Parquet partial folder) has the sidecar `OUT.provenance.json`, written through
durable.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterable

from ..errors import InputError
from ..extras import require
from .durable import Sink, write_file
from .tables import PARQUET_MAGIC

# How much of a fingerprint or digest messages show: enough to tell two apart at a glance.
SHORT = 12

SIDECAR_SUFFIX = ".provenance.json"
PARQUET_KEY = "localscore.provenance"

# How each setting reads in messages, in this order.
_SETTING_WORDS = {
    "scorer": "the {} scorer",
    "weights": "{} weights",
    "ctx": "context {}",
    "pack": "pack {}",
    "too_long": "too-long policy {}",
    "budget": "budget {}",
    "threshold": "threshold {}",
}
_VERBS = {"score": "scored", "embed": "embedded", "select": "selected"}


@dataclass(frozen=True)
class Step:
    """One step that made (part of) an output. `kind`, `model` and `settings` are its identity; `files` and `ran`
    its record."""

    kind: str  # "score", "embed" or "select"
    model: str | None  # the model's content fingerprint (llama/fingerprint.py); None: not known
    settings: dict = field(default_factory=dict)  # what else changes the results
    files: tuple[str, ...] = ()  # the model file's name: a copy under another name is the same model
    ran: tuple[dict, ...] = ()  # one entry per distinct setup that ran it (a Ray run over unlike nodes: several)

    @property
    def identity(self) -> tuple:
        return self.kind, self.model, sorted(self.settings.items())

    def joined(self, other: Step) -> Step:
        """This step with `other`'s record added (the same work, done in parts: resumed, sharded, on Ray)."""
        return replace(self, files=distinct((*self.files, *other.files)), ran=distinct((*self.ran, *other.ran)))

    def model_name(self) -> str:
        """The model as messages name it: its file name and short fingerprint."""
        name = " or ".join(self.files) or "a model"
        return f"{name} ({self.model[:SHORT]})" if self.model else f"{name} (fingerprint not recorded)"

    def line(self) -> str:
        settings = _settings(self, list(self.settings))
        made = f"{self.kind}: {self.model_name()}" if self.model or self.files else self.kind
        return f"{made}{', ' + settings if settings else ''}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": self.model, "settings": self.settings,
                "record": {"files": list(self.files), "ran": list(self.ran)}}

    @classmethod
    def from_dict(cls, data: dict) -> Step:
        record = data.get("record", {})
        return cls(data["kind"], data.get("model"), dict(data.get("settings", {})), tuple(record.get("files", ())),
                   tuple(record.get("ran", ())))


def scoring_step(fingerprint: str, file_name: str, *, scorer: str, weights: str, ctx: int, pack: int,
                 too_long: str, ran: tuple[dict, ...] = ()) -> Step:
    """What a scoring run of the GGUF `file_name` is: every setting that changes scores on one machine."""
    return Step("score", fingerprint, {"scorer": scorer, "weights": weights, "ctx": ctx, "pack": pack,
                                       "too_long": too_long}, (file_name,), ran)


def embedding_step(fingerprint: str, file_name: str, *, weights: str, ran: tuple[dict, ...] = ()) -> Step:
    return Step("embed", fingerprint, {"weights": weights}, (file_name,), ran)


@dataclass(frozen=True)
class Provenance:
    steps: tuple[Step, ...]
    shard: dict | None = None  # a shard's slice and input (runs/shards.py); None for a whole output

    @property
    def identity(self) -> tuple:
        return tuple(step.identity for step in self.steps)

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def joined(self, other: Provenance | None) -> Provenance:
        """This provenance with `other`'s records added, where `other` has the same identity."""
        if other is None or other.identity != self.identity:
            return self
        return replace(self, steps=tuple(a.joined(b) for a, b in zip(self.steps, other.steps)))

    def after(self, upstream: Provenance | None) -> Provenance:
        """This output's steps preceded by those that made its input, less any this run redoes (the same scorer
        again replaces its fields)."""
        if upstream is None:
            return self
        mine = {(step.kind, step.settings.get("scorer")) for step in self.steps}
        kept = tuple(step for step in upstream.steps if (step.kind, step.settings.get("scorer")) not in mine)
        return replace(self, steps=kept + self.steps)

    def difference(self, other: Provenance, but: str | None = None) -> str | None:
        """None when `other` is the same work; else, for the first step that differs, how this one's was made and
        `other`'s: "scored by A.gguf (3f2a...), not B.gguf (9e1b...)", or with `but` (what made `other`)
        "scored by A.gguf (3f2a...) but <but> by B.gguf (9e1b...)"; settings where the model is the same."""
        if self.identity == other.identity:
            return None
        pairs = list(zip(self.steps, other.steps))
        if len(self.steps) != len(other.steps) or any(a.kind != b.kind for a, b in pairs):
            return _versus("made by", self.described(), "by", other.described(), but)
        for index, (a, b) in enumerate(pairs):
            if a.identity == b.identity:
                continue
            verb = ("" if index == len(pairs) - 1 else "from an input ") + _VERBS.get(a.kind, a.kind)
            if a.model != b.model:
                return _versus(f"{verb} by", a.model_name(), "by", b.model_name(), but)
            keys = [key for key in {**a.settings, **b.settings} if a.settings.get(key) != b.settings.get(key)]
            return _versus(f"{verb} with", _settings(a, keys), "with", _settings(b, keys), but) + \
                f" (the same model, {a.model_name()})"
        raise AssertionError("identities differ but no step does")

    def described(self) -> str:
        """The steps, each as its model and its own settings, for one line."""
        return "; ".join(step.line() for step in self.steps)

    def lines(self) -> list[str]:
        """What `info` shows: each step's identity and record, and a shard's slice."""
        out = []
        for step in self.steps:
            out.append(step.line())
            out += [f"  ran with {_setup(entry)}" for entry in step.ran]
        if self.shard is not None:
            out.append(f"shard {self.shard['shard']}/{self.shard['shards']} of an input of {self.shard['records']:,} "
                       f"records (sha256 {self.shard['input'][:SHORT]})")
        return out

    def to_json(self) -> bytes:
        data = {"made_by": [step.to_dict() for step in self.steps]}
        if self.shard is not None:
            data["shard"] = self.shard
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: str | bytes, where: object) -> Provenance:
        try:
            data = json.loads(text)
            return cls(tuple(Step.from_dict(step) for step in data["made_by"]), data.get("shard"))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InputError(f"{where} is not a localscore provenance record ({e}); remove it") from None


def scored_by(provenance: Provenance | None, scorers: Iterable[str]) -> str:
    """What scored an input, for a summary: "the quality scorer A.gguf (3f2a...)", or "... (model not recorded)",
    for each of `scorers`."""
    steps = {} if provenance is None else {step.settings.get("scorer"): step for step in provenance.steps
                                           if step.kind == "score"}
    return " and ".join(f"the {name} scorer {steps[name].model_name() if name in steps else '(model not recorded)'}"
                        for name in scorers)


def sidecar(path: str | os.PathLike) -> Path:
    return Path(os.fspath(path) + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, provenance: Provenance) -> None:
    write_file(sidecar(path), provenance.to_json() + b"\n")


def remove_sidecar(path: str | os.PathLike) -> None:
    sidecar(path).unlink(missing_ok=True)


def commit_with_sidecar(sink: Sink, path: Path, provenance: Provenance | None) -> None:
    """Commit the partial output `sink` onto `path` with its sidecar, which replaces the old output's: that one is
    removed first, so a crash in between leaves an output that records nothing rather than the wrong thing."""
    remove_sidecar(path)
    sink.commit(path)
    if provenance is not None:
        write_sidecar(path, provenance)
    remove_sidecar(sink.name)


def read_provenance(source: str | os.PathLike | BinaryIO) -> Provenance | None:
    """What made the output `source`: from a Parquet file's metadata, else from its sidecar; None when it records
    nothing (written by another tool or an older localscore, or not a file: stdin, a hub dataset)."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.exists(source):
        return None
    if _is_parquet_file(source):
        pq = require("pyarrow.parquet", "parquet", "reading this Parquet file", InputError)
        try:
            metadata = pq.read_metadata(source).metadata or {}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {os.fspath(source)}: {e}") from None
        text = metadata.get(PARQUET_KEY.encode())
        return None if text is None else Provenance.from_json(text, f"the metadata of {os.fspath(source)}")
    try:
        text = sidecar(source).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"cannot read {sidecar(source)}: {e.strerror}") from None
    return Provenance.from_json(text, sidecar(source))


def _is_parquet_file(path: str | os.PathLike) -> bool:
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


def distinct(entries: Iterable) -> tuple:
    """The entries, each once, in a fixed order (so the bytes do not depend on which part of a run came first)."""
    unique = {json.dumps(entry, sort_keys=True): entry for entry in entries}
    return tuple(unique[key] for key in sorted(unique))


def _versus(how: str, mine: str, preposition: str, theirs: str, but: str | None) -> str:
    return f"{how} {mine}, not {theirs}" if but is None else f"{how} {mine} but {but} {preposition} {theirs}"


def _settings(step: Step, keys: list[str]) -> str:
    """The settings `keys` of `step` in words, in the order of _SETTING_WORDS."""
    order = list(_SETTING_WORDS)
    keys = sorted(keys, key=lambda key: order.index(key) if key in order else len(order))
    return ", ".join(_SETTING_WORDS.get(key, key + " {}").format(step.settings.get(key)) for key in keys)


def _setup(entry: dict) -> str:
    return (f"localscore {entry.get('localscore')}, llama-cpp-python {entry.get('llama_cpp_python')}, "
            f"{entry.get('kernels')} kernels on {entry.get('cpu')}, {entry.get('backend')}")
