"""The model sources of ``rftkit eval``: what a sampler is, and the OpenAI-compatible server one.

A sampler turns :class:`Request` objects (one per row and sample) into :class:`Completion`
objects, yielding each pair as soon as it is done, in any order. Two exist:

* :class:`ServerSampler` (here): any OpenAI-compatible ``/chat/completions`` or ``/completions``
  server (vLLM, llama.cpp, Ollama, SGLang, OpenAI). Up to ``concurrency`` requests are in flight
  (threads sharing one httpx client); each goes through :func:`graders.openai._endpoint.post_json`,
  the endpoint grader's client: a per-attempt timeout, retries with exponential backoff on
  timeouts, connection failures, 408, 429 and 5xx, a server's ``Retry-After`` honoured, and an
  optional rate limit (requests per second, :class:`~graders.openai._endpoint.RateLimiter`).
* ``rl``'s local sampler (a Hugging Face model directory or hub id, batched ``generate``), found
  through the ``rftkit.samplers`` entry point so that ``graders`` never imports torch.

A request that still fails after its retries is not an exception: its :class:`Completion` carries
``error``, the run records it, and a resumed run samples that row again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, Protocol

import httpx

from ..openai._endpoint import HttpFailure, RateLimiter, check_url, excerpt, post_json
from ._spec import SamplingParams


@dataclass(frozen=True)
class Request:
    """One sample to draw: row ``row``'s ``sample``-th."""

    row: int
    sample: int
    prompt: str | None
    messages: Sequence[Mapping[str, Any]] | None


@dataclass
class Completion:
    """What the model wrote for one request, and what it cost."""

    text: str
    finish_reason: str | None
    """``stop`` (ended on its own or on a stop sequence), ``length`` (hit ``max_tokens``), or the server's word; None on error."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    """Why no completion came (after every retry); None when one did."""


class Sampler(Protocol):
    """A model source: yields ``(request, completion)`` for every request, each once, in any order."""

    def sample(self, requests: Iterable[Request], params: SamplingParams) -> Iterator[tuple[Request, Completion]]: ...

    def close(self) -> None: ...


Api = Literal["auto", "chat", "completions"]


class ServerSampler:
    """An OpenAI-compatible server at ``base_url`` (``http://127.0.0.1:8000/v1``), model ``model``.

    ``api``: ``chat`` sends every row as messages (a ``prompt`` string as one user message),
    ``completions`` sends prompt strings to ``/completions`` (a chat row is refused there), ``auto``
    picks per row. ``sleep`` is injectable so tests see the backoff without waiting it out.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, api: Api = "auto", concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0, rate_limit: float | None = None,
                 client: httpx.Client | None = None, sleep: Any = time.sleep) -> None:
        from schemas import UserError

        check_url(base_url, "/base_url")
        if concurrency < 1:
            raise UserError(f"concurrency must be >= 1, got {concurrency}", code="bad_option", pointer="/concurrency")
        if not timeout > 0 or max_retries < 0 or backoff < 0:
            raise UserError("timeout must be > 0, max_retries >= 0 and backoff >= 0", code="bad_option", pointer="/timeout")
        if api not in ("auto", "chat", "completions"):
            raise UserError(f"api must be auto, chat or completions, got {api!r}", code="bad_option", pointer="/api")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.concurrency = concurrency
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._own = client is None
        self.client = client if client is not None else httpx.Client(limits=limits)
        self._sleep = sleep
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._own:
            self.client.close()

    def body(self, request: Request, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of one request."""
        body: dict[str, Any] = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                                "max_tokens": params.max_tokens}
        if params.seed is not None:
            body["seed"] = params.seed + request.sample
        if params.stop:
            body["stop"] = list(params.stop)
        chat = self.api == "chat" or (self.api == "auto" and request.prompt is None)
        if chat:
            body["messages"] = list(request.messages) if request.messages is not None else [{"role": "user", "content": request.prompt}]
            if params.response_format is not None:
                body["response_format"] = dict(params.response_format)
            return "/chat/completions", body
        if request.prompt is None:
            from schemas import UserError

            raise UserError("a chat row cannot be sent to /completions", code="bad_option", pointer="/api",
                            hint="use --api chat (or auto) for rows with messages")
        body["prompt"] = request.prompt
        return "/completions", body

    def one(self, request: Request, params: SamplingParams) -> Completion:
        """Send one request (with its retries) and read the completion; failures come back as ``error``."""
        path, body = self.body(request, params)
        retries = [0]

        def wait(seconds: float) -> None:  # post_json sleeps once before each retry
            retries[0] += 1
            self._sleep(seconds)

        start = time.perf_counter()
        answer = post_json(self.base_url + path, json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"), self.headers,
                           timeout=self.timeout, max_retries=self.max_retries, backoff=self.backoff, client=self.client,
                           limiter=self.limiter, sleep=wait)
        latency = time.perf_counter() - start
        if isinstance(answer, HttpFailure):
            return Completion("", None, latency_s=latency, attempts=answer.attempts, error=answer.detail)
        done = read_completion(answer, chat=path == "/chat/completions", latency=latency)
        done.attempts = retries[0] + 1
        return done

    def sample(self, requests: Iterable[Request], params: SamplingParams) -> Iterator[tuple[Request, Completion]]:
        """Keep up to ``concurrency`` requests in flight; yield each as it finishes.

        The slots a finished request frees are refilled before its result is yielded, so the
        caller's grading and writing overlap the next requests."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="rftkit-eval") as pool:
            pending: dict[Future[Completion], Request] = {}
            it = iter(requests)

            def refill() -> None:
                for request in islice(it, self.concurrency - len(pending)):
                    pending[pool.submit(self.one, request, params)] = request

            refill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                finished = [(pending.pop(f), f.result()) for f in done]
                refill()
                yield from finished


def read_completion(response: httpx.Response, *, chat: bool, latency: float) -> Completion:
    """The text, finish reason and token counts of a 2xx answer; a body without them is an ``error`` completion."""
    try:
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Completion("", None, latency_s=latency, error=f"the answer is not a completion: {excerpt(response.text)}")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    return Completion(text if isinstance(text, str) else "", choice.get("finish_reason"),
                      _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), latency)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
