"""The generative judge: verdict parsing on noisy text, prompt filling, the OpenAI-compatible
back end against a local HTTP stub, and the HF back end through the Generator interface."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from r1pipe.config.schema import JudgeConfig
from r1pipe.generation.base import Completion
from r1pipe.rewards.judge import (
    HFJudge,
    OpenAIJudge,
    build_judge,
    fill_prompt,
    judge_answers,
    parse_verdict,
)

NOISY = [
    # labelled verdicts, in markdown, JSON, brackets
    ("**Verdict:** Correct.", True),
    ("**Verdict:** Incorrect.", False),
    ("Verdict: [[CORRECT]]", True),
    ('{"verdict": "incorrect", "reason": "5 is not 6"}', False),
    ("Final judgement: not correct", False),
    ("The student says 12, which matches. Verdict: correct", True),
    ("It looks right at first, but the verdict is: wrong", False),
    ("[[incorrect]]", False),
    # one word, any case, any punctuation
    ("incorrect", False),
    ("Correct", True),
    ("  CORRECT!  ", True),
    ("Yes.", True),
    ("no", False),
    ("`correct`", True),
    # a verdict in a sentence
    ("The answer is CORRECT", True),
    ("The student's answer is wrong.", False),
    ("I think the answer is not correct.", False),
    ("The response isn't correct.", False),
    ("The two answers are equivalent.", True),
    ("This is not incorrect.", True),
    # questions are not verdicts
    ("correct? no", False),
    ("Is it correct? Yes, it is.", True),
    ("Correct? No.", False),
    # the first word wins when it stands alone
    ("Incorrect. The right answer is 12.", False),
    ("Correct: the answer 12 matches and nothing is wrong.", True),
    # incidental yes/no/right inside a sentence say nothing
    ("There is no doubt, the answer is correct", True),
    ("The right answer is 12.", None),
    # garbage and failures
    ("asdfgh 123", None),
    ("", None),
    (None, None),
    ("I am not sure.", None),
    ("<|im_end|>7+8=15", None),
]


@pytest.mark.parametrize(("text", "verdict"), NOISY)
def test_parse_verdict_on_noisy_text(text, verdict):
    assert parse_verdict(text) is verdict


def test_fill_prompt_leaves_other_braces_alone():
    out = fill_prompt(
        "Q {question} R {reference} A {response} {other} \\boxed{x}",
        question="1+1",
        reference="\\frac{1}{2}",
        response="{2}",
    )
    assert out == "Q 1+1 R \\frac{1}{2} A {2} {other} \\boxed{x}"


class RecordingJudge:
    def __init__(self, answers):
        self.answers, self.prompts = answers, []

    def complete(self, prompts):
        self.prompts += prompts
        return self.answers[: len(prompts)]


def test_judge_answers_sends_the_summary_and_parses():
    judge = RecordingJudge(["Verdict: correct", "gibberish", None])
    verdicts, raw = judge_answers(
        judge,
        "{question}|{reference}|{response}",
        ["q1", "q2", "q3"],
        ["12", "5", "7"],
        ["<think>long reasoning</think> It is <answer>12</answer>", "no think 4", "x"],
    )
    assert verdicts == [True, None, None]
    assert raw == ["Verdict: correct", "gibberish", None]
    # the judge sees the summary after </think>, not the chain of thought
    assert judge.prompts[0] == "q1|12|It is <answer>12</answer>"
    assert judge.prompts[1] == "q2|5|no think 4"
    assert judge_answers(judge, "{reference}{response}", [], [], []) == ([], [])


# ---- OpenAI-compatible endpoint -----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """A stub /v1/chat/completions: answers with the verdict the prompt asks for."""

    requests: list = []
    fail_first: int = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_error(503)
            return
        prompt = body["messages"][0]["content"]
        content = "**Verdict:** Correct." if "12" in prompt else "The answer is incorrect."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.requests, _Handler.fail_first = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_openai_judge_against_a_local_stub(server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test")
    cfg = JudgeConfig(
        backend="openai", base_url=server + "/v1/", model="judge-v3", api_key_env="MY_JUDGE_KEY"
    )
    judge = build_judge(cfg, device=None)
    verdicts, raw = judge_answers(
        judge, cfg.prompt, ["6+6=?", "2+2=?"], ["12", "4"], ["<think>6+6</think> 12", "5"]
    )
    assert verdicts == [True, False]
    assert raw[0] == "**Verdict:** Correct."
    # the two requests are sent concurrently: take the one about 6+6
    assert len(_Handler.requests) == 2
    path, headers, body = next(
        r for r in _Handler.requests if "6+6=?" in r[2]["messages"][0]["content"]
    )
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-v3" and body["temperature"] == 0.0
    assert body["max_tokens"] == cfg.max_new_tokens
    assert body["messages"][0]["role"] == "user"
    assert "Reference answer: 12" in body["messages"][0]["content"]


def test_openai_judge_retries_server_errors(server):
    _Handler.fail_first = 2
    judge = OpenAIJudge(server + "/v1", "m", max_retries=2, concurrency=1)
    assert judge.complete(["12?"]) == ["**Verdict:** Correct."]
    assert len(_Handler.requests) == 3 and judge.errors == []


def test_openai_judge_failures_give_none_not_a_crash(server):
    # a client error is not retried
    judge = OpenAIJudge(server + "/wrong", "m", max_retries=3)
    assert judge.complete(["12?", "x"]) == [None, None]
    assert len(_Handler.requests) == 2 and "HTTP 404" in judge.errors[0]
    # nothing listening
    dead = OpenAIJudge("http://127.0.0.1:9/v1", "m", max_retries=0, timeout_s=2)
    assert dead.complete(["x"]) == [None] and dead.errors
    # no key in the environment: no Authorization header
    OpenAIJudge(server + "/v1", "m").complete(["12"])
    assert "Authorization" not in _Handler.requests[-1][1]


# ---- causal LM by path --------------------------------------------------------------------


class StubGenerator:
    def __init__(self, text):
        self.text, self.calls = text, []

    def generate(self, prompts, params):
        self.calls.append((prompts, params))
        return [[Completion(i, self.text, [1], None, "stop")] for i in range(len(prompts))]


def test_hf_judge_uses_the_chat_template_and_greedy_decoding():
    from r1pipe.models import build_char_tokenizer

    gen = StubGenerator("Correct.")
    judge = HFJudge(gen, build_char_tokenizer(), max_new_tokens=7)
    assert judge.complete(["Is 12 right?"]) == ["Correct."]
    ((prompts, params),) = gen.calls
    assert prompts == ["<|im_start|>user\nIs 12 right?<|im_end|>\n<|im_start|>assistant\n"]
    assert params.temperature == 0.0 and params.max_new_tokens == 7 and params.n == 1


def test_hf_judge_loads_a_model_by_path(tmp_path):
    import torch

    from r1pipe.config.schema import ModelConfig
    from r1pipe.models import save_tiny_base

    spec = ModelConfig(
        path=None, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1
    )
    save_tiny_base(spec, tmp_path / "judge", seed=0)
    judge = build_judge(
        JudgeConfig(backend="hf", path=str(tmp_path / "judge"), max_new_tokens=4),
        torch.device("cpu"),
    )
    texts = judge.complete(["Reference 12, answer 12. Verdict:", "x"])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # an untrained judge says nothing readable: unknown, never a guess
    assert {parse_verdict(t) for t in texts} <= {True, False, None}


def test_hf_judge_generates_with_the_generation_config(tmp_path):
    """Every generation.* knob reaches the judge's generator; its batch size is the judge's."""
    import torch

    from r1pipe.config.schema import GenerationConfig, ModelConfig
    from r1pipe.models import save_tiny_base

    spec = ModelConfig(
        path=None, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1
    )
    save_tiny_base(spec, tmp_path / "judge", seed=0)
    generation = GenerationConfig(batch_size=99, decoder="generate", num_threads=3)
    judge = build_judge(
        JudgeConfig(backend="hf", path=str(tmp_path / "judge"), batch_size=5),
        torch.device("cpu"),
        generation,
    )
    gen = judge.generator
    assert (gen.batch_size, gen.decoder, gen.num_threads) == (5, "generate", 3)
