"""Data sources: honest splits, normalised records, clear errors and the held-out guard."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aldsl.store.data import (
    DataError,
    DataSpec,
    SplitForbidden,
    forbid_splits,
    load,
    read_counts,
    reset_read_counts,
)

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", [{"q": f"question {i}", "a": i} for i in range(100)])


def ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records]


def test_fraction_splits_are_disjoint_cover_everything_and_have_the_right_sizes(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a"))
    assert data.names == ("train", "dev", "test")
    parts = {name: ids(data.split(name)) for name in data.names}
    assert [len(parts[n]) for n in data.names] == [60, 20, 20]
    assert sorted(sum(parts.values(), []), key=int) == [str(i) for i in range(100)]
    assert all(part == sorted(part, key=int) for part in parts.values())  # file order within a split


def test_fraction_splits_depend_on_seed_not_on_file_order(qa: Path, tmp_path: Path) -> None:
    spec = DataSpec("jsonl", str(qa), input="q", target="a")
    test_ids = set(ids(load(spec).split("test")))
    assert set(ids(load(DataSpec("jsonl", str(qa), input="q", target="a", seed=1)).split("test"))) != test_ids
    reordered = [{"id": str(i), "q": f"question {i}", "a": i} for i in reversed(range(100))]
    shuffled = write_jsonl(tmp_path / "reordered.jsonl", reordered)
    assert set(ids(load(DataSpec("jsonl", str(shuffled), input="q", target="a")).split("test"))) == test_ids


def test_fraction_splits_are_the_same_in_fresh_processes_with_any_hash_seed(qa: Path) -> None:
    code = (
        "import sys; from aldsl.store.data import DataSpec, load; "
        "print(','.join(r['id'] for r in load(DataSpec('jsonl', sys.argv[1], input='q', target='a')).split('test')))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", code, str(qa)], env=env, cwd=REPO,
                                capture_output=True, text=True, check=True)
        outputs.add(result.stdout.strip())
    in_process = ",".join(ids(load(DataSpec("jsonl", str(qa), input="q", target="a")).split("test")))
    assert outputs == {in_process}


def test_custom_fractions(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a", split={"train": 0.75, "test": 0.25}))
    assert data.names == ("train", "test")
    assert (data.size("train"), data.size("test")) == (75, 25)
    with pytest.raises(DataError, match="no split 'dev'; its splits: train, test"):
        data.split("dev")


def test_normalised_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "p1", "question": "2+2?", "answer": 4, "solution": "2 + 2 = 4."},
        {"id": "p2", "question": "3+3?", "answer": 6, "solution": "3 + 3 = 6."},
    ])
    spec = DataSpec("jsonl", str(path), input="question", target="answer", demo="solution", split={"train": 1.0})
    first = load(spec).split("train")[0]
    assert first == {"id": "p1", "question": "2+2?", "answer": 4, "solution": "2 + 2 = 4.",
                     "x": "2+2?", "y": "4", "demo": "2 + 2 = 4."}
    no_demo = load(DataSpec("jsonl", str(path), input="question", target="answer", split={"train": 1.0}))
    assert no_demo.split("train")[1]["demo"] == "6"
    no_target = load(DataSpec("jsonl", str(path), input="question", target=None, split={"train": 1.0}))
    assert no_target.split("train")[0]["y"] is None and no_target.split("train")[0]["demo"] is None


def test_returned_records_are_copies(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a"))
    data.split("train")[0]["x"] = "changed"
    assert data.split("train")[0]["x"] != "changed"


def test_csv_with_field_split(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label,part\n"hello, world",pos,train\nbad day,neg,test\nfine,pos,train\n', encoding="utf-8")
    data = load(DataSpec("csv", str(path), input="text", target="label", split="part"))
    assert data.names == ("train", "test")
    assert [(r["id"], r["x"], r["y"]) for r in data.split("train")] == [("0", "hello, world", "pos"),
                                                                       ("2", "fine", "pos")]
    assert ids(data.split("test")) == ["1"]


def test_memoised_by_spec_and_reloaded_when_the_file_changes(qa: Path) -> None:
    spec = DataSpec("jsonl", str(qa), input="q", target="a")
    first = load(spec)
    assert load(DataSpec("jsonl", str(qa), input="q", target="a")) is first
    assert hash(spec) == hash(DataSpec("jsonl", str(qa), input="q", target="a"))
    write_jsonl(qa, [{"q": f"new question {i}", "a": i} for i in range(10)])
    reloaded = load(spec)
    assert reloaded is not first and sum(reloaded.size(n) for n in reloaded.names) == 10


def test_relative_path_resolves_against_base_dir(qa: Path) -> None:
    data = load(DataSpec("jsonl", qa.name, input="q", target="a"), base_dir=qa.parent)
    assert data.size("dev") == 20


def test_shipped_arith_data_loads() -> None:
    spec = DataSpec("jsonl", "programs/data/arith.jsonl", input="question", target="answer", demo="solution")
    data = load(spec, base_dir=REPO)
    assert [data.size(n) for n in data.names] == [600, 200, 200]
    record = data.split("dev")[0]
    assert record["demo"].endswith(f"The answer is {record['y']}.")


# --- errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nope\.jsonl not found.*check the path"):
        load(DataSpec("jsonl", str(tmp_path / "nope.jsonl")))


def test_malformed_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a"}\n\n{"input": "b"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: line 3 is not valid JSON"):
        load(DataSpec("jsonl", str(path)))
    path.write_text('{"input": "a", "target": "b"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: line 2 is a JSON list, not an object"):
        load(DataSpec("jsonl", str(path)))


def test_missing_input_field_names_record_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "target": 1}, {"question": "b", "target": 2}])
    with pytest.raises(DataError, match=r"d\.jsonl: record at line 2 has no input field 'input'; "
                                        r"its fields: question, target"):
        load(DataSpec("jsonl", str(path)))
    with pytest.raises(DataError, match=r"record at line 1 has no target field 'answer'"):
        load(DataSpec("jsonl", str(path), input="input", target="answer"))
    with pytest.raises(DataError, match=r"record at line 1 has no split field 'part'"):
        load(DataSpec("jsonl", str(path), input="input", split="part"))


def test_bad_fractions_and_spec_values() -> None:
    with pytest.raises(DataError, match=r"d\.jsonl: split fractions .* sum to 0\.9, not 1"):
        DataSpec("jsonl", "d.jsonl", split={"train": 0.6, "dev": 0.2, "test": 0.1})
    with pytest.raises(DataError, match=r"unknown split 'validation'; fraction splits are named train, dev, test"):
        DataSpec("jsonl", "d.jsonl", split={"train": 0.5, "validation": 0.5})
    with pytest.raises(DataError, match=r"fractions must be numbers in \[0, 1\]"):
        DataSpec("jsonl", "d.jsonl", split={"train": 1.5, "test": -0.5})
    with pytest.raises(DataError, match=r"unknown data kind 'parquet'.*jsonl, csv, hf_disk"):
        DataSpec("parquet", "d.parquet")


def test_duplicate_ids_empty_file_and_csv_overflow(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "input": "a", "target": 1}, {"id": 1, "input": "b", "target": 2}])
    with pytest.raises(DataError, match=r"id '1' at line 2 repeats the id at line 1"):
        load(DataSpec("jsonl", str(path)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl has no records"):
        load(DataSpec("jsonl", str(empty)))
    table = tmp_path / "t.csv"
    table.write_text("input,target\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.csv:2: line 2 has more values than the header"):
        load(DataSpec("csv", str(table)))


def test_field_split_with_bad_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "target": "b", "part": 3}])
    with pytest.raises(DataError, match=r"record at line 1 has split 3"):
        load(DataSpec("jsonl", str(path), split="part"))


def test_hf_disk_without_datasets_says_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("the datasets package is installed; this checks the message shown without it")
    with pytest.raises(DataError, match=r'needs the datasets package.*pip install "aldsl\[hf\]"'):
        load(DataSpec("hf_disk", str(tmp_path)))


# --- held-out guard -----------------------------------------------------------------------


def test_forbidden_split_raises_inside_and_not_outside(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a"))
    with forbid_splits("test"):
        assert len(data.split("train")) == 60
        assert data.size("test") == 20  # sizes are not reads
        with pytest.raises(SplitForbidden, match=r"split 'test' of .*qa\.jsonl is held out"):
            data.split("test")
        with forbid_splits("test", "dev"):
            with pytest.raises(SplitForbidden):
                data.split("dev")
        data.split("dev")  # the inner block ended; "test" stays forbidden
        with pytest.raises(SplitForbidden):
            data.split("test")
    assert len(data.split("test")) == 20
    assert issubclass(SplitForbidden, DataError)


def test_guard_holds_in_worker_threads(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a"))
    errors: list[BaseException] = []

    def read_test() -> None:
        try:
            data.split("test")
        except SplitForbidden as exc:
            errors.append(exc)

    with forbid_splits("test"):
        thread = threading.Thread(target=read_test)
        thread.start()
        thread.join()
        with ThreadPoolExecutor(2) as pool:
            with pytest.raises(SplitForbidden):
                pool.submit(data.split, "test").result()
    assert len(errors) == 1
    with ThreadPoolExecutor(1) as pool:
        assert len(pool.submit(data.split, "test").result()) == 20


def test_read_counts(qa: Path) -> None:
    data = load(DataSpec("jsonl", str(qa), input="q", target="a"))
    reset_read_counts()
    data.split("train")
    data.split("train")
    data.split("dev")
    with forbid_splits("test"), pytest.raises(SplitForbidden):
        data.split("test")
    assert read_counts() == {"train": 2, "dev": 1}
    reset_read_counts()
    assert read_counts() == {}
