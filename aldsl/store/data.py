"""Data sources (the paper's knowledge K and the query sets) with honest, reproducible splits.

A ``DataSpec`` names a file (jsonl, csv or a Hugging Face dataset saved to disk), which
fields hold the input, target and demonstration, and how records are split: fractions per
split (train/dev/test), assigned by a seeded hash of each record's id (the same on every
machine, independent of file order and of Python's hash randomisation), or the name of a
field that holds each record's split. ``load`` returns a memoised ``Dataset``.

Every record comes back with its original fields plus normalised keys: ``id`` (str: the
record's ``id`` field, else its 0-based record index), ``x`` (input text), ``y`` (target
text or None) and ``demo`` (the demo field, else the target).

``forbid_splits("test")`` is the held-out guard: while it is active, in any thread of the
process, reading a forbidden split raises ``SplitForbidden``. ``read_counts`` tells how
often each split was read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from aldsl.errors import UserError, require_extra
from typing import Any, Iterator, Mapping

SPLIT_NAMES = ("train", "dev", "test")
KINDS = ("jsonl", "csv", "hf_disk")


class DataError(UserError, ValueError):
    """A data source cannot be loaded or used as declared; the message says what to fix."""


class SplitForbidden(DataError):
    """A held-out split was read inside ``forbid_splits``."""


def _default_split() -> Mapping[str, float]:
    return {"train": 0.6, "dev": 0.2, "test": 0.2}


@dataclass(frozen=True)
class DataSpec:
    """Where a data source lives, which fields it uses and how it is split."""

    kind: str
    path: str
    input: str = "input"
    target: str | None = "target"
    demo: str | None = None
    split: Mapping[str, float] | str = field(default_factory=_default_split)
    seed: int = 0
    name: str = ""  # the data declaration's name (a compiled graph's data node)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r} for {self.path}; use one of {', '.join(KINDS)}")
        if not self.input:
            raise DataError(f"data source {self.path}: the input field name is empty; name the field with the input")
        if isinstance(self.split, str):
            if not self.split:
                raise DataError(f"data source {self.path}: the split field name is empty")
            return
        fractions = dict(self.split)
        unknown = sorted(set(fractions) - set(SPLIT_NAMES))
        if unknown:
            raise DataError(
                f"data source {self.path}: unknown split {', '.join(map(repr, unknown))}; "
                f"fraction splits are named {', '.join(SPLIT_NAMES)}"
            )
        bad = {k: v for k, v in fractions.items() if not isinstance(v, (int, float)) or not 0 <= v <= 1}
        if bad:
            raise DataError(f"data source {self.path}: split fractions must be numbers in [0, 1], got {bad}")
        total = sum(fractions.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise DataError(
                f"data source {self.path}: split fractions {fractions} sum to {total:g}, not 1; "
                "adjust them so they add up to 1"
            )
        object.__setattr__(self, "split", MappingProxyType(fractions))

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "DataSpec":
        """The spec of a compiled ``data`` node (its ``format`` is the kind)."""
        return DataSpec(kind=d["format"], path=d["path"], input=d["input"], target=d.get("target"),
                        demo=d.get("demo"), split=d["split"], seed=d.get("seed", 0), name=d["name"])

    def to_json(self) -> dict[str, Any]:
        split = self.split if isinstance(self.split, str) else dict(self.split)
        return {"name": self.name, "format": self.kind, "path": self.path, "input": self.input,
                "target": self.target, "demo": self.demo, "split": split, "seed": self.seed}

    def key(self) -> tuple[Any, ...]:
        """A hashable identity of the spec."""
        split = self.split if isinstance(self.split, str) else tuple(self.split.items())
        return (self.kind, self.path, self.input, self.target, self.demo, split, self.seed)

    def __hash__(self) -> int:
        return hash(self.key())


_state_lock = threading.Lock()
_forbidden: Counter[str] = Counter()
_reads: Counter[str] = Counter()


@contextmanager
def forbid_splits(*names: str) -> Iterator[None]:
    """Within this block, reading any split in ``names`` raises ``SplitForbidden`` (all threads)."""
    with _state_lock:
        _forbidden.update(names)
    try:
        yield
    finally:
        with _state_lock:
            _forbidden.subtract(names)
            for name in names:
                if _forbidden[name] <= 0:
                    del _forbidden[name]


def read_counts() -> dict[str, int]:
    """How many times each split name was read (successfully) in this process."""
    with _state_lock:
        return dict(_reads)


def reset_read_counts() -> None:
    """Set all read counters back to zero."""
    with _state_lock:
        _reads.clear()


class Dataset:
    """The records of a loaded data source, by split."""

    def __init__(self, spec: DataSpec, path: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
        self.spec = spec
        self.path = path
        self._splits = splits

    @property
    def names(self) -> tuple[str, ...]:
        """The split names of this data source."""
        return tuple(self._splits)

    def _check(self, name: str) -> list[dict[str, Any]]:
        if name not in self._splits:
            raise DataError(
                f"data source {self.path} has no split {name!r}; its splits: {', '.join(self.names) or 'none'}"
            )
        return self._splits[name]

    def size(self, name: str) -> int:
        """Number of records in split ``name`` (does not count as a read)."""
        return len(self._check(name))

    def split(self, name: str) -> list[dict[str, Any]]:
        """Copies of the records of split ``name``, in file order."""
        records = self._check(name)
        with _state_lock:
            if _forbidden[name] > 0:
                raise SplitForbidden(
                    f"split {name!r} of {self.path} is held out here (read inside forbid_splits); "
                    "optimize on train/dev and read the held-out split only for the final report"
                )
            _reads[name] += 1
        return [dict(r) for r in records]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(r)}" for n, r in self._splits.items())
        return f"Dataset({self.path}, {sizes})"


_cache_lock = threading.Lock()
_cache: dict[tuple[Any, ...], tuple[tuple[int, int], Dataset]] = {}


def load(spec: DataSpec, base_dir: str | Path | None = None) -> Dataset:
    """Load (memoised by spec and file mtime) the data source ``spec``.

    A relative ``spec.path`` is resolved against ``base_dir`` (e.g. the program's folder),
    else against the current directory.
    """
    path = Path(spec.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise DataError(
            f"data file {path} not found (data kind {spec.kind}); check the path "
            "(relative paths are resolved against the program's folder)"
        )
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = (spec.key(), str(path.resolve()))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    dataset = Dataset(spec, path, _split(spec, _normalise(spec, path, _read(spec.kind, path))))
    with _cache_lock:
        _cache[key] = (stamp, dataset)
    return dataset


def _read(kind: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs; ``where`` locates the record in the file for error messages."""
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "csv":
        return _read_csv(path)
    return _read_hf_disk(path)


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: line {number} is not valid JSON ({exc.msg}); "
                    "each line of a jsonl file must be one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{number}: line {number} is a JSON {type(record).__name__}, not an object; "
                    "each line of a jsonl file must be one JSON object"
                )
            rows.append((f"line {number}", record))
    return rows


def _read_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for record in reader:
            if None in record:
                raise DataError(
                    f"{path}:{reader.line_num}: line {reader.line_num} has more values than the header "
                    f"has columns ({', '.join(reader.fieldnames or [])}); quote values that contain commas"
                )
            rows.append((f"line {reader.line_num}", dict(record)))
    return rows


def _read_hf_disk(path: Path) -> list[tuple[str, dict[str, Any]]]:
    datasets = require_extra("datasets", "hf", f"data source {path} (a Hugging Face dataset on disk)")
    loaded = datasets.load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    rows = []
    for part, table in parts:
        for index, record in enumerate(table):
            if part is not None:
                record = {"split": part, **record}
            rows.append((f"row {index}" + (f" of split {part!r}" if part else ""), record))
    return rows


def as_text(value: Any) -> str:
    """A field value as text: strings as they are, anything else as canonical JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _get(path: Path, where: str, record: Mapping[str, Any], name: str, role: str) -> Any:
    if name not in record:
        raise DataError(
            f"{path}: record at {where} has no {role} field {name!r}; its fields: "
            f"{', '.join(map(str, record)) or 'none'}; name one of them as the {role} field"
        )
    return record[name]


def _normalise(spec: DataSpec, path: Path, rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    if not rows:
        raise DataError(f"data file {path} has no records; add some or point the program at another file")
    seen: dict[str, str] = {}
    records = []
    for index, (where, raw) in enumerate(rows):
        record_id = as_text(raw.get("id", index))
        if record_id in seen:
            raise DataError(
                f"{path}: id {record_id!r} at {where} repeats the id at {seen[record_id]}; ids must be unique"
            )
        seen[record_id] = where
        x = as_text(_get(path, where, raw, spec.input, "input"))
        target = None if spec.target is None else _get(path, where, raw, spec.target, "target")
        y = None if target is None else as_text(target)
        demo = y if spec.demo is None else as_text(_get(path, where, raw, spec.demo, "demo"))
        if isinstance(spec.split, str):
            part = _get(path, where, raw, spec.split, "split")
            if not isinstance(part, str) or not part:
                raise DataError(f"{path}: record at {where} has split {part!r}; a split name must be a non-empty string")
        records.append({**raw, "id": record_id, "x": x, "y": y, "demo": demo})
    return records


def _split(spec: DataSpec, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    if isinstance(spec.split, str):
        by_field: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_field.setdefault(record[spec.split], []).append(record)
        return by_field

    def rank(index: int) -> bytes:
        return hashlib.sha256(f"{spec.seed}\x00{records[index]['id']}".encode()).digest()

    order = sorted(range(len(records)), key=rank)
    splits: dict[str, list[dict[str, Any]]] = {}
    start, cumulative = 0, 0.0
    for name, fraction in spec.split.items():
        cumulative += fraction
        end = len(records) if math.isclose(cumulative, 1.0, abs_tol=1e-6) else round(cumulative * len(records))
        splits[name] = [records[i] for i in sorted(order[start:end])]
        start = end
    return splits


def read_inputs(path: str | Path, spec: DataSpec) -> list[dict[str, Any]]:
    """New records to run on (``aldsl run --input``): a .jsonl or .csv file read with the input field of
    the program's data ``spec``. When every record also has the target field, records keep it as ``y``
    (and can be scored); otherwise ``y`` is None."""
    p = Path(path).expanduser()
    kind = {".jsonl": "jsonl", ".csv": "csv"}.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"input file {p}: name a .jsonl or .csv file (one record per line or row)")
    if not p.is_file():
        raise DataError(f"input file {p} not found; check the path")
    rows = _read(kind, p)
    target = spec.target if spec.target is not None and all(spec.target in raw for _, raw in rows) else None
    plain = DataSpec(kind, str(p), input=spec.input, target=target, name=spec.name)
    return _normalise(plain, p, rows)


def first_record_fields(kind: str, path: str | Path) -> set[str] | None:
    """The field names of a jsonl file's first record or a csv file's header, read cheaply (for
    the checker); None when they cannot be known without loading (hf_disk, unreadable files)."""
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as f:
            if kind == "csv":
                return set(next(csv.reader(f), []))
            if kind == "jsonl":
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        return set(map(str, record)) if isinstance(record, dict) else None
    except (OSError, ValueError, UnicodeDecodeError, csv.Error):
        return None
    return None
