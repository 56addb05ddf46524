"""A vision-language judge behind any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Stdlib HTTP (``urllib.request``); the image goes as a base64 PNG data URL. Greedy decoding
(temperature 0) by default; timeouts; retries with exponential backoff on connection errors,
timeouts and 5xx answers. A failed or unparseable call is a recorded failure, never a guess.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tamis.seeds.judges.base import Verdict
from tamis.seeds.judges.parsing import parse_count, parse_yes_no
from tamis.seeds.prompts import RELATION_PHRASES, Question

COUNT_QUESTION = "How many {plural} are in this image? Answer with a single number."
RELATION_QUESTION = (
    "Is the {obj} {relation_phrase} the {obj2} in this image? Answer with yes or no."
)


def count_question(question: Question) -> str:
    """The count question put to the VLM."""
    return COUNT_QUESTION.format(plural=question.obj.plural)


def relation_question(question: Question) -> str:
    """The yes/no relation question put to the VLM."""
    return RELATION_QUESTION.format(
        obj=question.obj.singular,
        relation_phrase=RELATION_PHRASES[question.relation],
        obj2=question.obj2.singular,
    )


def png_data_url(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URL of a uint8 (H, W, 3) image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _RetryableError(Exception):
    pass


@dataclass
class VLMJudge:
    """Judge images by asking a VLM served behind an OpenAI-compatible endpoint.

    Attributes:
        endpoint: base URL ("http://host:8000" or ".../v1") or the full
            ".../v1/chat/completions" URL.
        model: the served model name.
        timeout: seconds per HTTP call.
        retries: extra attempts after the first on connection errors, timeouts and 5xx.
        backoff: first retry delay in seconds (doubled each retry).
        temperature: sampling temperature (0 = greedy, the default).
        max_tokens: answer length limit.
        api_key: optional bearer token.
        name: judge name for the records.

    """

    endpoint: str
    model: str
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    temperature: float = 0.0
    max_tokens: int = 16
    api_key: str | None = None
    name: str = "vlm"

    def __post_init__(self) -> None:
        """Validate and normalise the endpoint URL."""
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"VLM endpoint must be an http(s) URL, got {self.endpoint!r}")
        url = self.endpoint.rstrip("/")
        if not url.endswith("/chat/completions"):
            url = url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")
        self.url = url
        if self.retries < 0 or self.timeout <= 0:
            raise ValueError("retries must be >= 0 and timeout > 0")

    def _post(self, payload: dict) -> str:
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise _RetryableError(f"HTTP {err.code} from {self.url}") from None
            raise RuntimeError(f"HTTP {err.code} from {self.url}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise _RetryableError(f"cannot reach {self.url}: {reason}") from None
        try:
            return json.loads(body)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise RuntimeError(f"not a chat-completions answer: {body[:200]!r}") from None

    def ask(self, image: np.ndarray, text: str) -> str:
        """Ask one question about one image; return the raw answer.

        Raises:
            RuntimeError: every attempt failed (the last reason in the message), or a non-
                retryable error (4xx, malformed answer).

        """
        payload = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                        {"type": "text", "text": text},
                    ],
                }
            ],
        }
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._post(payload)
            except _RetryableError as err:
                last = str(err)
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
        raise RuntimeError(f"{last} (after {self.retries + 1} attempts)")

    def judge(self, images: np.ndarray, questions: Sequence[Question]) -> list[Verdict]:
        """One verdict per image (a failure for a failed call or an unparseable answer)."""
        out = []
        for image, question in zip(images, questions):
            text = count_question(question) if question.kind == "count" else relation_question(
                question
            )
            try:
                raw = self.ask(image, text)
            except RuntimeError as err:
                out.append(Verdict.failure(str(err)))
                continue
            if question.kind == "count":
                answer = parse_count(raw)
            else:
                answer = parse_yes_no(raw)
            if answer is None:
                out.append(Verdict.failure("unparseable answer", raw=raw))
            else:
                out.append(Verdict.of(question, answer, raw=raw))
        return out
