"""The VLM judge against real HTTP servers on 127.0.0.1; the strict answer parser."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.seeds.judges.parsing import NUMBER_WORDS, parse_count, parse_yes_no
from tamis.seeds.judges.vlm import VLMJudge
from tamis.seeds.prompts import ObjectName, Question

APPLE = ObjectName("apple", "apples", "an")
CAT = ObjectName("cat", "cats")
IMAGES = np.zeros((2, 8, 8, 3), np.uint8)
QUESTIONS = [Question("count", APPLE, count=3), Question("spatial", APPLE, None, "left of", CAT)]


def _server(behaviour):
    """Start a chat-completions server whose answers come from ``behaviour(state, body)``."""
    state = {"calls": 0, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["calls"] += 1
            state["bodies"].append(body)
            code, answer = behaviour(state, body)
            if code == "sleep":
                time.sleep(answer)
                code, answer = 200, "3"
            payload = (
                json.dumps({"choices": [{"message": {"content": answer}}]})
                if code == 200
                else "error"
            ).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, state


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        server, state = _server(behaviour)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _answers(state, body):
    text = body["messages"][0]["content"][1]["text"]
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert body["temperature"] == 0.0
    return 200, ("There are three apples." if text.startswith("How many apples") else "Yes.")


def test_correct_answers(serve):
    url, state = serve(_answers)
    verdicts = VLMJudge(url, "m", timeout=5).judge(IMAGES, QUESTIONS)
    assert [v.answer for v in verdicts] == [3, True] and all(v.correct for v in verdicts)
    assert state["bodies"][1]["messages"][0]["content"][1]["text"] == (
        "Is the apple on the left of the cat in this image? Answer with yes or no."
    )


def test_garbage_answers_are_failures(serve):
    url, _ = serve(lambda s, b: (200, "I cannot tell, maybe two or three"))
    verdicts = VLMJudge(url + "/v1", "m", timeout=5, retries=0).judge(IMAGES, QUESTIONS)
    assert all(v.failed and v.error == "unparseable answer" for v in verdicts)
    assert verdicts[0].raw.startswith("I cannot tell")


def test_timeout_is_failure(serve):
    url, state = serve(lambda s, b: ("sleep", 1.0))
    judge = VLMJudge(url, "m", timeout=0.2, retries=1, backoff=0.01)
    v = judge.judge(IMAGES[:1], QUESTIONS[:1])[0]
    assert v.failed and "after 2 attempts" in v.error and state["calls"] == 2


def test_server_down_is_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = VLMJudge(f"http://127.0.0.1:{port}", "m", timeout=1, retries=2, backoff=0.01)
    v = judge.judge(IMAGES[:1], QUESTIONS[:1])[0]
    assert v.failed and "cannot reach" in v.error and v.correct is None


def test_5xx_then_success_retries(serve):
    url, state = serve(lambda s, b: (503, "") if s["calls"] < 3 else (200, "3"))
    v = VLMJudge(url, "m", timeout=5, retries=3, backoff=0.01).judge(IMAGES[:1], QUESTIONS[:1])[0]
    assert v.correct and v.answer == 3 and state["calls"] == 3
    url4, state4 = serve(lambda s, b: (404, ""))
    v4 = VLMJudge(url4, "m", timeout=5, retries=3, backoff=0.01).judge(IMAGES[:1], QUESTIONS[:1])
    assert v4[0].failed and "HTTP 404" in v4[0].error and state4["calls"] == 1


def test_bad_endpoint():
    with pytest.raises(ValueError, match="http"):
        VLMJudge("localhost:8000", "m")


def test_parser_cases():
    assert parse_count("3") == 3 and parse_count("There are three apples.") == 3
    assert parse_count("none") == 0 and parse_count("No.") == 0 and parse_count("twenty") == 20
    assert parse_count("two or three") is None and parse_count("many") is None
    assert parse_count("2.5") is None and parse_count("-2") is None
    assert parse_count("3 apples, yes three") == 3
    assert parse_yes_no("Yes.") is True and parse_yes_no("no, it is not") is False
    assert parse_yes_no("yes and no") is None and parse_yes_no("maybe") is None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 20), st.sampled_from(["{}", "There are {} apples.", "{}."]))
def test_parser_roundtrip(n, template):
    word = next(w for w, v in NUMBER_WORDS.items() if v == n)
    assert parse_count(template.format(n)) == n
    assert parse_count(template.format(word)) == n


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=40))
def test_parser_never_raises(text):
    out = parse_count(text)
    assert out is None or (isinstance(out, int) and out >= 0)
    assert parse_yes_no(text) in (True, False, None)
