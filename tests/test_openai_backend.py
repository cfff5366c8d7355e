"""``backend = openai`` against a real ``transformers serve`` on 127.0.0.1 (the tiny model), with a
fault injector in front of it: retries, resuming after the server dies, the cache identity, the
API key never written, and programs run end to end from the CLI and from Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import aldsl
from aldsl.backends import Decoding, GenRequest, ModelSpec, ServerSpec
from aldsl.backends.base import BackendError
from aldsl.backends.cache import CachedBackend, GenerationCache
from aldsl.backends.openai_backend import OpenAIBackend
from aldsl.language.diagnostics import AlpError
from servers import FaultProxy, Server, servable_copy, start_transformers_serve

SECRET = "sk-aldsl-test-0123456789-never-written"
SAMPLED = Decoding(temperature=0.9, max_tokens=8, seed=3)


@pytest.fixture(scope="module")
def served_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return servable_copy(tiny_model_dir, tmp_path_factory.mktemp("served") / "tiny")


@pytest.fixture(scope="module")
def server(served_model: Path, tmp_path_factory: pytest.TempPathFactory):
    s = start_transformers_serve(served_model, tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    s.kill()


def backend(url: str, model: str, **server: object) -> OpenAIBackend:
    return OpenAIBackend(ModelSpec(name=model, backend="openai", server=ServerSpec(url, **server)))  # type: ignore[arg-type]


def prompts(n: int) -> list[GenRequest]:
    return [GenRequest(f"Question {i}: what is {i} plus {i}?", (0, 1)) for i in range(n)]


def test_samples_come_back_for_every_request_and_are_cached_as_they_finish(server: Server, tmp_path: Path):
    cached = CachedBackend(backend(server.url, server.model, concurrency=4), GenerationCache(tmp_path / "c.sqlite"))
    seen: list[int] = []
    out = cached.generate(prompts(6), SAMPLED, finished=lambda done: seen.append(len(cached.cache)))
    assert [len(row) for row in out] == [2] * 6 and all(c.tokens > 0 for row in out for c in row)
    assert seen == sorted(seen) and seen[0] < 12 and len(cached.cache) == 12  # stored one response at a time
    again = cached.generate(prompts(6), SAMPLED)
    assert all(c.cached for row in again for c in row) and again == out


def test_stop_strings_cut_the_text(server: Server):
    b = backend(server.url, server.model)
    plain = b.generate([GenRequest("Once upon a time")], Decoding(max_tokens=12))[0][0]
    assert len(plain.text) > 2
    stop = plain.text[1:3]
    cut = b.generate([GenRequest("Once upon a time")], Decoding(max_tokens=12, stop=(stop,)))[0][0]
    assert cut.finish == "stop" and stop not in cut.text and plain.text.startswith(cut.text)


def test_identity_is_the_served_model_not_the_url(server: Server):
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    try:
        direct, through = backend(server.url, server.model), backend(proxy.url, server.model)
        assert direct.identity == through.identity and server.url not in direct.identity
        assert backend(server.url, server.model, api="chat").identity != direct.identity
    finally:
        proxy.close()
    with pytest.raises(BackendError, match="does not serve 'no-such-model'; it serves"):
        backend(server.url, "no-such-model")


def test_429_500_stalls_and_dropped_connections_are_retried(server: Server):
    faults = {1: 429, 2: 500, 3: "stall", 4: "drop", 6: 503, 7: "drop"}
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}", faults=faults, stall_s=3.0)
    try:
        b = backend(proxy.url, server.model, timeout=1.5, retries=4, concurrency=2)
        greedy = Decoding(max_tokens=6)
        out = b.generate([GenRequest(f"Item {i}") for i in range(6)], greedy)
        counts = proxy.counts()
        assert {"429": 1, "500": 1, "503": 1, "stall": 1, "drop": 2}.items() <= counts.items()
        clean = backend(server.url, server.model).generate([GenRequest(f"Item {i}") for i in range(6)], greedy)
        assert [[c.text for c in row] for row in out] == [[c.text for c in row] for row in clean]
    finally:
        proxy.close()


def test_a_server_killed_mid_run_fails_clearly_and_the_rerun_resumes(served_model: Path, tmp_path: Path):
    server = start_transformers_serve(served_model, tmp_path / "serve.log")
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}",
                       after_forward=lambda count: server.kill() if count == 5 else None)  # /models, then 4 answers
    cache = GenerationCache(tmp_path / "c.sqlite")
    try:
        cached = CachedBackend(backend(proxy.url, server.model, retries=1, timeout=5, concurrency=1), cache)
        with pytest.raises(BackendError, match="failed after 1 retries.*rerun to resume"):
            cached.generate([GenRequest(f"Item {i}") for i in range(10)], Decoding(max_tokens=6))
        kept = len(cache)
        assert 4 <= kept < 10  # what finished before the server died is in the cache
        restarted = start_transformers_serve(served_model, tmp_path / "serve2.log", port=server.port)
        try:
            again = CachedBackend(backend(proxy.url, server.model, concurrency=1), cache)
            out = again.generate([GenRequest(f"Item {i}") for i in range(10)], Decoding(max_tokens=6))
            assert len(out) == 10 and again.stats()["hits"] == kept and again.stats()["misses"] == 10 - kept
        finally:
            restarted.kill()
    finally:
        proxy.close()
        server.kill()


def test_a_server_without_logprobs_says_what_a_critic_needs(server: Server):
    with pytest.raises(BackendError, match="no log-probabilities.*vLLM, SGLang"):
        backend(server.url, server.model).logprobs(["Is 2 + 2 = 4?"], ["Yes"])


def test_chat_api_sends_messages_and_prefill(server: Server):
    b = backend(server.url, server.model, api="chat")
    prompt = b.format_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert b.generate([GenRequest(prompt)], Decoding(max_tokens=5))[0][0].tokens > 0
    with pytest.raises(BackendError, match="rejected a chat request.*prefill"):  # transformers serve cannot continue
        b.generate([GenRequest(prompt + "Sure,")], Decoding(max_tokens=5))


# ---------------------------------------------------------------- programs
PROGRAM = """program served "arithmetic over a server"
data problems = jsonl("data/arith.jsonl", input = "question", target = "answer", demo = "solution")
generator g = model("MODEL", backend = openai, base_url = "URL", api_key_env = "ALDSL_TEST_KEY",
                    temperature = 0.7, max_tokens = 12, retries = 3)
prompter p = prompt(template = zero_shot, demos = demos(problems.train, k = 1, pick = nearest))
reward orm = outcome(problems.train, samples = 2, queries = 6, features = minilm, epochs = 20)
evaluator acc = numeric_match()
flow main = loop(problems, generator = g, prompter = p, samples = 2, reward = orm, select = argmax,
                 answer = number, evaluator = acc)
"""


def program(tmp_path: Path, url: str, model: str, body: str = PROGRAM) -> Path:
    data = Path(__file__).resolve().parents[1] / "programs" / "data"
    (tmp_path / "data").symlink_to(data)
    path = tmp_path / "served.alp"
    path.write_text(body.replace("MODEL", model).replace("URL", url))
    return path


def written_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_a_program_runs_from_the_cli_and_python_and_the_key_is_never_written(server: Server, tmp_path: Path,
                                                                              isolated_cache: Path, monkeypatch):
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}", faults={3: 500, 9: "drop"})
    try:
        path = program(tmp_path, proxy.url, server.model)
        traces = tmp_path / "traces.jsonl"
        env = {"ALDSL_TEST_KEY": SECRET, "ALDSL_CACHE": str(isolated_cache), "PATH": "/usr/bin:/bin",
               "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-m", "aldsl.cli", "run", str(path), "--split", "dev", "--limit", "4",
                              "--out", str(traces), "--quiet"], capture_output=True, env=env, timeout=600,
                             cwd=tmp_path)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        assert "acc" in run.stdout.decode() and len(traces.read_text().splitlines()) == 4
        monkeypatch.setenv("ALDSL_TEST_KEY", SECRET)
        result = aldsl.compile(path).run(split="dev", limit=4)
        assert set(result.scores) == {"acc"} and result.stats["hits"] > 0  # the CLI's generations, from the cache
        assert all(h.get("authorization") == f"Bearer {SECRET}" for h in proxy.headers)  # read from the variable
        outputs = run.stdout + run.stderr
        assert SECRET.encode() not in outputs
        files = written_files(isolated_cache, tmp_path)
        assert traces in files and any(f.suffix == ".sqlite" for f in files)
        leaked = [f for f in files if SECRET.encode() in f.read_bytes()]
        assert leaked == [] and proxy.counts().get("500") == 1
    finally:
        proxy.close()


def test_a_missing_key_variable_is_one_clear_error(server: Server, tmp_path: Path, isolated_cache: Path, monkeypatch):
    monkeypatch.delenv("ALDSL_TEST_KEY", raising=False)
    path = program(tmp_path, server.url, server.model)
    from aldsl.cli import main

    assert main(["run", str(path), "--split", "dev", "--limit", "1", "--quiet"]) == 2


@pytest.mark.parametrize("inside, after, message", [
    (", finetune = tune", "finetune tune = sft(problems.train)", "cannot be fine-tuned: fine-tuning theta trains local"),
    ("", "reward hid = outcome(problems.train, features = hidden)", "(?s)features = hidden.*use features = minilm"),
    ("", "reward lm = outcome(problems.train, tune = lora)", "(?s)tune = lora trains an LM reward.*backbone = "),
])
def test_what_needs_local_weights_is_refused_at_its_position(tmp_path: Path, inside: str, after: str,
                                                              message: str):
    body = PROGRAM.replace("retries = 3)", "retries = 3" + inside + ")\n" + after)
    path = program(tmp_path, "http://127.0.0.1:9/v1", "m", body)
    with pytest.raises(AlpError, match=message) as info:
        aldsl.compile(path)
    assert "served.alp:" in str(info.value.render())


@pytest.mark.parametrize("args, message", [
    ('backend = openai', "no base_url"),
    ('backend = openai, base_url = "localhost:8000"', "not an http"),
    ('backend = openai, base_url = "http://h/v1", api_key_env = "sk-live-123"', "must name an environment variable"),
    ('base_url = "http://h/v1"', "is for backend = openai"),
])
def test_server_parameters_are_checked(tmp_path: Path, args: str, message: str):
    body = PROGRAM.replace('backend = openai, base_url = "URL", api_key_env = "ALDSL_TEST_KEY",', args + ",")
    path = program(tmp_path, "", "smollm2-135m", body)
    with pytest.raises(AlpError, match=message) as info:
        aldsl.compile(path)
    first = info.value.first
    assert "sk-live-123" not in first.message + first.hint  # a key written by mistake is not repeated


def test_optimize_over_the_server(server: Server, tmp_path: Path, isolated_cache: Path):
    from aldsl.runtime.session import Session
    from aldsl.optimizers.run import optimize

    body = PROGRAM.replace('api_key_env = "ALDSL_TEST_KEY",', "").replace("samples = 2, reward = orm",
                                                                          "samples = 1 in [1, 2], reward = orm")
    body += ("optimize search = optuna(objective = acc, on = problems.dev, trials = 3, minibatch = 4, promote = 1,"
             " pruner = none, queries = 6, report_queries = 4)\n")
    result = optimize(aldsl.compile(program(tmp_path, server.url, server.model, body)), session=Session(),
                      out_dir=tmp_path / "out")
    assert result.optimized.exists() and len(result.rows) == 4
    assert "backend = openai" in result.optimized.read_text()
    assert json.loads((tmp_path / "out" / "served" / "report.json").read_text())


# ---------------------------------------------------------------- Table 1 over the server
from test_table1 import table1  # noqa: E402  (bench/table1.py, loaded once)

SERVED_ROWS = (4, 5, 7, 9, 10, 11)  # every row whose parts need neither local weights nor logprobs
# (row 8 generates nothing: its candidates are the records' two responses)
WEIGHT_ROWS = (1, 2, 3)  # fine-tuning theta (and row 2's discriminator on hidden states)
LOGPROB_ROWS = (6,)  # an LLM critic reads P(yes) from logprobs, which transformers serve does not return


def on_server(server: Server) -> dict[str, str]:
    return {"g.name": server.model, "g.backend": "openai", "g.base_url": server.url}


@pytest.mark.parametrize("number", SERVED_ROWS, ids=lambda n: f"row{n:02d}")
def test_table1_rows_run_over_the_server(number: int, server: Server, tmp_path: Path):
    row = next(r for r in table1.ROWS if r.number == number)
    outcome = table1.run_row(row, "small", tmp_path, extra=on_server(server))
    assert outcome.n >= 1 and outcome.tokens > 0
    assert all(0.0 <= s <= 1.0 for s in (outcome.baseline, outcome.optimized))


@pytest.mark.parametrize("number", WEIGHT_ROWS + LOGPROB_ROWS, ids=lambda n: f"row{n:02d}")
def test_table1_rows_that_need_weights_or_logprobs_say_what_to_use(number: int, server: Server, tmp_path: Path):
    row = next(r for r in table1.ROWS if r.number == number)
    expected = (AlpError, r"(?s)local weights") if number in WEIGHT_ROWS else (BackendError, "no log-probabilities")
    with pytest.raises(expected[0], match=expected[1]):
        table1.run_row(row, "small", tmp_path, extra=on_server(server))
