"""Answer extraction on realistic model outputs."""

import json

import pytest

from aldsl.ops.answers import KINDS, extract, normalize_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tom has 3 + 5 = 8 apples.\nThe answer is: 8", "8"),
        ("#### 1,200", "1200"),
        ("The answer is 8.00", "8"),
        ("The answer is 2.50 dollars.", "2.5"),
        ("The answer is -3.", "-3"),
        ("The answer is **12**.\nI hope this helps with 3 more questions!", "12"),
        ("The answer is $1,000.", "1000"),
        ("Step 1: 3 + 5 = 8\nStep 2: 8 * 2 = 16", "16"),
        ("So 4 * 6 = 24 apples for 2 people", "24"),
        ("5-3=2", "2"),
        ("She has 7 apples, then 4 more, so 11", "11"),
        ("I don't know how many apples.", ""),
        ("", ""),
        ("The answer is 12.\nThe answer is 13.", "13"),
        ("Answer: 42", "42"),
    ],
)
def test_number(text: str, expected: str) -> None:
    assert extract("number", text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1,000", "1000"), ("8.0", "8"), ("-3", "-3"), ("2.5", "2.5"), ("$ 7", "7"), ("-0.0", "0"),
     ("0.10", "0.1"), ("1,0,0", None), ("nan", None), ("eight", None), ("", None)],
)
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


def test_text_and_line() -> None:
    assert extract("text", "  hello world \n") == "hello world"
    assert extract("line", "\n\n  first line \nsecond") == "first line"
    assert extract("line", " \n ") == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here:\n```python\ndef f(x):\n    return x + 1\n```\nDone.", "def f(x):\n    return x + 1"),
        ("```\nprint(1)\n```\n```\nprint(2)\n```", "print(1)"),
        ("```print(3)```", "print(3)"),
        ("Sure!\n```py\nx = 1\ny = 2", "x = 1\ny = 2"),
        ("  return 5  ", "return 5"),
    ],
)
def test_code(text: str, expected: str) -> None:
    assert extract("code", text) == expected


def test_json_first_object_is_canonical() -> None:
    text = 'Result: {not json} then {"b": 2, "a": [1, 2]} and {"c": 3}'
    got = extract("json", text)
    assert got == '{"a":[1,2],"b":2}'
    assert json.loads(got) == {"a": [1, 2], "b": 2}
    assert extract("json", "a list [1, 2] only") == ""


def test_regex() -> None:
    assert extract("regex", "Grade: B+ overall", r"Grade: (\S+)") == "B+"
    assert extract("regex", "id 42x", r"\d+") == "42"
    assert extract("regex", "nothing here", r"\d+") == ""
    with pytest.raises(ValueError, match="needs a pattern"):
        extract("regex", "x")
    with pytest.raises(ValueError, match="invalid regex pattern"):
        extract("regex", "x", "(")


def test_choice() -> None:
    options = ["yes", "no"]
    assert extract("choice", "No, it is not yes.", options) == "no"
    assert extract("choice", "YES, correct", options) == "yes"
    assert extract("choice", "I cannot say; nothing fits", options) == ""  # 'no' inside 'cannot'/'nothing'
    assert extract("choice", "The best is New York", ["York", "New York"]) == "New York"
    with pytest.raises(ValueError, match="list of options"):
        extract("choice", "yes", "yes")


def test_unknown_kind_names_valid_kinds() -> None:
    with pytest.raises(ValueError, match="unknown answer kind 'numbr'.*number"):
        extract("numbr", "1")
    assert set(KINDS) == {"text", "number", "line", "code", "json", "regex", "choice"}
