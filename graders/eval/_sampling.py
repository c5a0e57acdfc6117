"""The model sources of ``rftkit eval``: what a sampler is, and the OpenAI-compatible server one.

A sampler turns :class:`Request` objects (one per row and sample) into :class:`Completion`
objects, yielding each pair as soon as it is done, in any order. Two exist:

* :class:`ServerSampler` (here): any OpenAI-compatible ``/chat/completions`` or ``/completions``
  server (vLLM, llama.cpp, Ollama, SGLang, OpenAI). Up to ``concurrency`` requests are in flight
  on one asyncio event loop (an :mod:`aiohttp` session), each with the retry rules of the endpoint
  grader's client (:func:`graders.openai._endpoint.retry_plan`, shared with its synchronous
  :func:`~graders.openai._endpoint.post_json`): a per-attempt timeout, retries with exponential
  backoff on timeouts, connection failures, 408, 429 and 5xx, a server's ``Retry-After``
  honoured, and an optional rate limit (requests per second,
  :class:`~graders.openai._endpoint.RateLimiter`).
* ``rl``'s local sampler (a Hugging Face model directory or hub id, batched ``generate``), found
  through the ``rftkit.samplers`` entry point so that ``graders`` never imports torch.

A request that still fails after its retries is not an exception: its :class:`Completion` carries
``error``, the run records it, and a resumed run samples that row again.

**Why aiohttp, and one thread.** The target is ``concurrency / latency`` samples/s (3,200/s at 64
requests in flight on a 20 ms server), graded as they come, and a client spends CPU on every
request. ``benchmarks/eval_throughput.py`` measures the candidates side by side (figures in
docs/benchmarks.md): threads on a sync :class:`httpx.Client` cost about 1-2.5 ms of CPU per
request and :class:`httpx.AsyncClient` 1-6 ms (its pool degrades with many connections), capping
both far below the target; aiohttp on one event loop costs 120-220 us and gives the best rate
measured. The loop runs in the caller's thread: :meth:`ServerSampler.sample` runs it until some
requests are done, then yields them, so grading and writing happen while the server works on the
other requests in flight, with no second thread contending for the interpreter.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..openai._endpoint import Failed, HttpFailure, RateLimiter, check_url, excerpt, retry_plan
from ._spec import SamplingParams

if TYPE_CHECKING:
    import aiohttp


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
    picks per row. ``sleep`` (seconds -> None or an awaitable; default :func:`asyncio.sleep`) waits out
    a backoff or the rate limit; it is injectable so tests see the waits without waiting them out.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, api: Api = "auto", concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0, rate_limit: float | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
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
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._sleep = sleep
        self.proxy = env_proxy(self.base_url)
        """The proxy requests go through (from the environment, as httpx does); None: direct."""

    def close(self) -> None:
        """Nothing to release: each :meth:`sample` call opens and closes its own session and loop."""

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

    async def _pause(self, seconds: float) -> None:
        if self._sleep is None:
            await asyncio.sleep(seconds)
        else:
            waited = self._sleep(seconds)
            if inspect.isawaitable(waited):
                await waited

    async def one(self, session: aiohttp.ClientSession, request: Request, params: SamplingParams) -> Completion:
        """Send one request (with its retries, :func:`~graders.openai._endpoint.retry_plan`) and read the completion;
        failures come back as ``error``."""
        import aiohttp

        path, body = self.body(request, params)
        url, data = self.base_url + path, json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        plan = retry_plan(self.max_retries, self.backoff)
        delay, attempts = next(plan), 0
        start = time.perf_counter()
        while True:
            if delay is not None:
                await self._pause(delay)
            if self.limiter is not None and (wait := self.limiter.reserve()) > 0:
                await self._pause(wait)
            attempts += 1
            try:
                async with session.post(url, data=data, headers=self.headers, timeout=timeout, proxy=self.proxy) as response:
                    raw = await response.read()
                    status, retry_after = response.status, response.headers.get("Retry-After")
            except asyncio.TimeoutError as exc:  # aiohttp's timeouts subclass it (before ClientError: some are both)
                failed = Failed(f"no answer within {self.timeout:g} s ({type(exc).__name__})")
            except aiohttp.ClientError as exc:
                failed = Failed(f"{type(exc).__name__}: {exc}")
            else:
                if 200 <= status < 300:
                    done = read_completion(raw, chat=path == "/chat/completions", latency=time.perf_counter() - start)
                    done.attempts = attempts
                    return done
                failed = Failed(f"HTTP {status}: {excerpt(raw.decode('utf-8', 'replace'))}", status, retry_after)
            try:
                delay = plan.send(failed)
            except StopIteration as stop:  # no attempt left
                failure: HttpFailure = stop.value
                return Completion("", None, latency_s=time.perf_counter() - start, attempts=failure.attempts, error=failure.detail)

    def sample(self, requests: Iterable[Request], params: SamplingParams) -> Iterator[tuple[Request, Completion]]:
        """Keep up to ``concurrency`` requests in flight; yield each as it finishes.

        The loop runs in this thread until a request is done; it is yielded while the server works
        on the rest, so the caller's grading and writing overlap the requests in flight, and after
        each one the loop takes one turn without waiting (answers are read, next requests sent).
        A completion's ``latency_s`` therefore includes up to one sample's grading time, and a
        sample whose grading takes longer than ``timeout`` can make an answer that came in time
        count as a timeout (it is then retried). Called from a thread that already runs an event loop, it raises
        (run it in a worker thread there, e.g. ``await asyncio.to_thread(run_eval, ...)``).
        """
        from schemas import UserError

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UserError("ServerSampler.sample runs its own event loop and cannot run inside one", code="bad_option",
                            pointer="/sampler", hint="call run_eval from a worker thread: await asyncio.to_thread(run_eval, ...)")
        loop = asyncio.new_event_loop()
        try:
            yield from self._pump(loop, iter(requests), params)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _pump(self, loop: asyncio.AbstractEventLoop, requests: Iterator[Request],
              params: SamplingParams) -> Iterator[tuple[Request, Completion]]:
        import aiohttp

        finished: asyncio.Queue[tuple[Request, Completion] | BaseException | None] = asyncio.Queue()

        async def worker(session: aiohttp.ClientSession) -> None:
            try:
                for request in requests:  # shared by the workers; taken one at a time, on this one thread
                    finished.put_nowait((request, await self.one(session, request, params)))
            except Exception as exc:  # handed to the caller, who raises it
                finished.put_nowait(exc)
            finally:
                finished.put_nowait(None)

        async def opened() -> tuple[aiohttp.ClientSession, list[asyncio.Task[None]]]:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency),
                                            cookie_jar=aiohttp.DummyCookieJar())  # no state carried from one request to the next
            return session, [asyncio.ensure_future(worker(session)) for _ in range(self.concurrency)]

        async def poll() -> None:
            await asyncio.sleep(0)

        session, workers = loop.run_until_complete(opened())
        try:
            live = len(workers)
            while live:
                item = finished.get_nowait() if not finished.empty() else loop.run_until_complete(finished.get())
                if item is None:
                    live -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
                    # back from the caller (who graded and wrote it): one turn of the loop without waiting reads the
                    # answers that came meanwhile and sends the next requests, so a slow grader holds them up by one
                    # sample's grading at most (a grading longer than --timeout can still make an answer count as late)
                    loop.run_until_complete(poll())
        finally:
            for task in workers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*workers, return_exceptions=True))
            loop.run_until_complete(session.close())


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``), as httpx would use; None: direct.

    Looked up once per sampler: aiohttp's own ``trust_env`` looks it up on every request, which costs
    more CPU than the request itself.
    """
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if parts.hostname is None or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


def read_completion(raw: bytes, *, chat: bool, latency: float) -> Completion:
    """The text, finish reason and token counts of a 2xx answer's body; a body without them is an ``error`` completion."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Completion("", None, latency_s=latency, error=f"the answer is not a completion: {excerpt(raw.decode('utf-8', 'replace'))}")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    return Completion(text if isinstance(text, str) else "", choice.get("finish_reason"),
                      _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), latency)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
