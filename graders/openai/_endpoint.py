

"""OpenAI's ``endpoint`` grader, run locally: POST the sample to your own HTTP reward server.

The config is the one OpenAI's RFT (Azure OpenAI preview) documents::

    {"type": "endpoint", "name": "my_reward", "url": "http://127.0.0.1:8000/grade",
     "headers": {"Authorization": "Bearer ..."}, "rate_limit": 50, "pass_threshold": 0.5}

``url`` is required; ``name`` (default ``"endpoint"``), ``headers``, ``rate_limit``
(at most that many requests per second, a positive integer) and
``pass_threshold`` (marks the grade as passing or failing in its reason) are
optional. Each grade POSTs one JSON body::

    {"sample": {"output_text": ..., "output_json": ..., ...}, "item": {...}, "trace_id": "trace_<32 hex>"}

and expects ``{"score": <number>}`` back (other keys are kept in the grade's
details). The score must lie in the grader's range, [0, 1] unless the
``score_range`` keyword says otherwise (``score_range=(0, 10)`` for a server on
OpenAI's ``pass_threshold: 8`` scale); a score outside it is the server's bug,
not a reward: it scores 0 with ``other_error`` (a trainer must never train on
``1e30``). A ``pass_threshold`` outside the range raises at construction.

How long to wait and how often to retry are not part of OpenAI's config, so
they are constructor keywords: ``timeout`` (seconds per attempt, default 600,
OpenAI's documented limit), ``max_retries`` (default 3, as OpenAI) and
``backoff`` (first retry delay; it doubles, at most 30 s; a ``Retry-After`` of
up to 60 s is honoured). Timeouts, connection failures, 408, 429 and 5xx
answers are retried; other statuses are not.

**Failures are data, never exceptions:**

==========================================================  ==============================
what happened                                               flag (score 0)
==========================================================  ==============================
no answer: timeout or connection failure, or 408/429/5xx    ``unresponsive_reward_error``
on the last attempt
another HTTP error (400, 401, 404, 422 ...)                 ``other_error``
a 2xx whose body is not JSON or has no finite number        ``other_error``
``score``, or a ``score`` outside ``score_range``
==========================================================  ==============================

The reason names the URL, the status and the start of the body. The one
exception while grading is a ``sample`` or ``item`` that cannot be written as
JSON: that is the caller's data, like a reference, and raises
:class:`GraderConfigError` (``payload_not_json``).

The module also holds the HTTP helpers the model graders share
(:func:`post_json` and its retry rules, :func:`retry_plan`; :class:`RateLimiter`).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .._errors import ErrorFlag, GraderConfigError
from .._result import FieldDetail, Grade, no_errors
from .._validation import validate_config
from ._common import OpenAIGrader, SampleInput, noting_cut
from ._configs import EndpointConfig
from ._templates import Sample

DEFAULT_TIMEOUT = 600.0
"""Seconds to wait for one answer (OpenAI waits at most 10 minutes for an endpoint grader)."""
MAX_BACKOFF = 30.0
"""The longest delay between two attempts, whatever ``backoff`` doubles to."""
MAX_RETRY_AFTER = 60.0
"""The longest ``Retry-After`` (in seconds) that is honoured; a longer one is cut to this."""
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt (any other 5xx is retried too)."""


# -- HTTP helpers (shared with the model graders) ------------------------------------------


class RateLimiter:
    """At most ``rate`` requests per second, evenly spaced: each :meth:`wait` starts ``1 / rate`` s after the last.

    Thread-safe, and per object: a grader used in N processes may send N times
    the rate. ``clock`` and ``sleep`` are injectable so tests need no real time.

    >>> now = [0.0]
    >>> limiter = RateLimiter(4, clock=lambda: now[0], sleep=lambda s: None)
    >>> [limiter.wait() for _ in range(3)]   # seconds each call slept: 0, then 1/4 s apart
    [0.0, 0.25, 0.5]
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise GraderConfigError(f"rate_limit must be a positive number of requests per second, got {rate!r}",
                                    code="bad_value", pointer="/rate_limit", hint="e.g. 50")
        self.rate = rate
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Claim the next start time; return how many seconds to wait for it (an async caller awaits that itself)."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        return start - now

    def wait(self) -> float:
        """Block until the next request may start; return how long that took (seconds)."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """A request that got no usable answer after its retries."""

    detail: str
    """One line: what went wrong on the last attempt (status and body start, or the transport error)."""
    status: int | None
    """The last HTTP status, or None when no answer came (timeout, connection failure)."""
    attempts: int

    @property
    def unanswered(self) -> bool:
        """True when the server never answered usefully: no response, or 408/429/5xx on the last attempt."""
        return self.status is None or _retryable(self.status)


class LazyClient:
    """An :class:`httpx.Client` made on first use and closed when this holder is collected; or a given one, never closed.

    One client per grader keeps connections alive between grades (a new client
    costs ~30 ms of TLS setup) without asking the caller to close anything.
    """

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        """The client."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    client = httpx.Client()
                    weakref.finalize(self, client.close)
                    self._client = client
        return self._client


def _retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def excerpt(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters, quoted.

    >>> excerpt("a\\n  b" + "c" * 300, 10)
    "'a bcccc...'"
    """
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:  # an HTTP date: use our own backoff
        return None
    return None if seconds is None or not math.isfinite(seconds) or seconds < 0 else min(seconds, MAX_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class Failed:
    """What one attempt got when it got no 2xx: the input of :func:`retry_plan`."""

    detail: str
    """One line: ``HTTP 503: 'body start'``, or the transport error."""
    status: int | None = None
    """The HTTP status, or None when no answer came."""
    retry_after: str | None = None
    """The answer's ``Retry-After`` header, as sent."""


def retry_plan(max_retries: int, backoff: float) -> Generator[float | None, Failed, HttpFailure]:
    """The retry rules of :func:`post_json` without the I/O, so a synchronous and an asynchronous client share them.

    The driver takes the first value (None: send at once), then sends the :class:`Failed` of each
    attempt that got no 2xx and receives the seconds to wait before the next attempt; when no
    attempt is left (or the status is not worth another), the plan returns the :class:`HttpFailure`
    (``StopIteration.value``). Attempt ``k`` (from 0) that fails in a retryable way waits
    ``backoff * 2**k`` seconds (at most :data:`MAX_BACKOFF`), or the server's ``Retry-After``.

    >>> plan = retry_plan(2, 0.5)
    >>> next(plan), plan.send(Failed("HTTP 503: ''", 503)), plan.send(Failed("HTTP 429: ''", 429, "7"))
    (None, 0.5, 7.0)
    """
    last = HttpFailure("no attempt made", None, 0)
    delay: float | None = None
    for attempt in range(max_retries + 1):
        failed = yield delay
        delay = min(backoff * 2 ** attempt, MAX_BACKOFF)
        last = HttpFailure(failed.detail, failed.status, attempt + 1)
        if failed.status is not None:
            if not _retryable(failed.status):
                return last
            server_says = _retry_after(failed.retry_after)
            if server_says is not None:
                delay = server_says
    if last.attempts > 1:
        return HttpFailure(f"{last.detail} (after {last.attempts} attempts)", last.status, last.attempts)
    return last


def post_json(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float, max_retries: int, backoff: float,
              client: httpx.Client | None = None, limiter: RateLimiter | None = None,
              sleep: Callable[[float], None] = time.sleep) -> httpx.Response | HttpFailure:
    """POST ``body`` (JSON bytes) with retries (:func:`retry_plan`); the 2xx response, or an :class:`HttpFailure`.

    Every attempt first waits for ``limiter``. Never raises on a network or HTTP failure.
    """
    sent = {"Content-Type": "application/json", **headers}
    plan = retry_plan(max_retries, backoff)
    delay = next(plan)
    while True:
        if delay is not None:
            sleep(delay)
        if limiter is not None:
            limiter.wait()
        try:
            if client is None:
                with httpx.Client() as own:
                    response = own.post(url, content=body, headers=sent, timeout=timeout)
            else:
                response = client.post(url, content=body, headers=sent, timeout=timeout)
        except httpx.TimeoutException as exc:
            failed = Failed(f"no answer within {timeout:g} s ({type(exc).__name__})")
        except httpx.TransportError as exc:
            failed = Failed(f"{type(exc).__name__}: {exc}")
        else:
            if response.is_success:
                return response
            failed = Failed(f"HTTP {response.status_code}: {excerpt(response.text)}", response.status_code,
                            response.headers.get("retry-after"))
        try:
            delay = plan.send(failed)
        except StopIteration as stop:  # no attempt left: the plan's HttpFailure
            result: HttpFailure = stop.value
            return result


def json_body(payload: Any, what: str) -> bytes:
    """``payload`` as UTF-8 JSON bytes; a value JSON cannot hold raises :class:`GraderConfigError`."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GraderConfigError(f"{what} cannot be sent as JSON: {exc}", code="payload_not_json",
                                hint="pass JSON values only (dict, list, str, finite numbers, bool, None)") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (model output can hold one): sent as its \\u escape, which JSON allows
        return json.dumps(payload, allow_nan=False).encode("ascii")


def check_options(timeout: object, max_retries: object, backoff: object) -> tuple[float, int, float]:
    """The HTTP keywords, checked: ``timeout > 0``, ``max_retries >= 0`` (an int), ``backoff >= 0``."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (timeout > 0 and math.isfinite(timeout)):
        raise GraderConfigError(f"timeout must be a positive number of seconds, got {timeout!r}", code="bad_option",
                                pointer="/timeout")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise GraderConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}", code="bad_option",
                                pointer="/max_retries")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not (backoff >= 0 and math.isfinite(backoff)):
        raise GraderConfigError(f"backoff must be a number of seconds >= 0, got {backoff!r}", code="bad_option",
                                pointer="/backoff")
    return float(timeout), max_retries, float(backoff)


def check_url(url: object, pointer: str) -> str:
    """An ``http://`` or ``https://`` URL, or :class:`GraderConfigError` at ``pointer``."""
    if not isinstance(url, str) or not url:
        raise GraderConfigError(f"the URL must be a non-empty string, got {url!r}", code="wrong_type", pointer=pointer)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise GraderConfigError(f"{url!r} is not a valid URL: {exc}", code="bad_value", pointer=pointer) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise GraderConfigError(f"{url!r} is not an http(s) URL", code="bad_value", pointer=pointer,
                                hint="e.g. http://127.0.0.1:8000/grade")
    return url


def verdict(score: float, threshold: float | None) -> str:
    """``" >= 0.5: passes"`` / ``" < 0.5: fails"``, or ``""`` without a threshold."""
    if threshold is None:
        return ""
    return f" >= {threshold:g}: passes" if score >= threshold else f" < {threshold:g}: fails"


def flagged(flag: ErrorFlag, reason: str, details: dict[str, FieldDetail] | None = None) -> Grade:
    """A zero grade with one error flag raised."""
    errors = no_errors()
    errors[flag] = True
    return Grade(0.0, {}, details, errors, reason)


# -- the grader ----------------------------------------------------------------------------


def sample_payload(sample: Sample) -> dict[str, Any]:
    """The ``sample`` the server receives: the caller's dict as given, with the derived fields it lacks filled in.

    >>> sample_payload(Sample.of('{"a": 1}'))
    {'output_text': '{"a": 1}', 'output_json': {'a': 1}}
    """
    derived = sample.to_dict()
    if isinstance(sample.raw, Mapping):
        sent = {**derived, **sample.raw}
        if sample.cut is not None:  # the output text over the per-sample bound: its first characters, as graded
            sent["output_text"] = sample.output_text
        return sent
    return derived


class EndpointGrader(OpenAIGrader):
    """OpenAI's ``endpoint`` grader: POST ``{"sample", "item", "trace_id"}`` to ``url``, read ``{"score": number}``.

    See the module docstring for the request, the retries and the error flags.
    ``client`` may be an :class:`httpx.Client` to reuse connections (the grader
    does not close it); by default each grade opens and closes its own.
    """

    type: Literal["endpoint"] = "endpoint"

    def __init__(self, *, url: str, name: str = "endpoint", headers: Mapping[str, str] | None = None,
                 rate_limit: int | None = None, pass_threshold: float | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = 3, backoff: float = 0.5, client: httpx.Client | None = None,
                 score_range: tuple[float, float] = (0.0, 1.0)) -> None:
        config = validate_config(EndpointConfig, {"type": "endpoint", "url": url, "name": name, "headers": headers,
                                                  "rate_limit": rate_limit, "pass_threshold": pass_threshold})
        self._setup(config, timeout=timeout, max_retries=max_retries, backoff=backoff, client=client, score_range=score_range)

    def _setup(self, config: EndpointConfig, *, timeout: float = DEFAULT_TIMEOUT, max_retries: int = 3,
               backoff: float = 0.5, client: httpx.Client | None = None,
               score_range: tuple[float, float] = (0.0, 1.0)) -> None:
        """Set the grader up from its validated config and the keywords (the constructor's defaults): the one path of
        the constructor and :meth:`from_config`."""
        self._name = config.name
        self.score_range = _check_score_range(score_range)
        """The scores the server may answer, inclusive; another scores 0 with ``other_error``."""
        self.url = config.url
        """Where each grade is POSTed."""
        self.headers = dict(config.headers or {})
        """Sent with every request (after ``Content-Type: application/json``)."""
        self.rate_limit = config.rate_limit
        """At most this many requests per second from this grader object; None: no limit."""
        self.rate_limiter = RateLimiter(config.rate_limit) if config.rate_limit is not None else None
        self.pass_threshold = config.pass_threshold
        """The score at or above which a grade passes (only marks the reason); None: no verdict."""
        low, high = self.score_range
        if self.pass_threshold is not None and not low <= self.pass_threshold <= high:
            raise GraderConfigError(f"pass_threshold {self.pass_threshold:g} is outside the score range [{low:g}, {high:g}]",
                                    code="bad_value", pointer="/pass_threshold",
                                    hint='give the server\'s scale in the config, e.g. "range": [0, 10]')
        self.timeout, self.max_retries, self.backoff = check_options(timeout, max_retries, backoff)
        self._http = LazyClient(client)

    @property
    def name(self) -> str:
        """The grader's name."""
        return self._name

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | EndpointConfig, **options: Any) -> EndpointGrader:
        """Build from ``{"type": "endpoint", "url", "name"?, "headers"?, "rate_limit"?, "pass_threshold"?, "range"?}``.

        ``range`` (``[low, high]``, as ``score_model``'s) is rftkit's addition to
        OpenAI's config: the server's scale, so a config that pairs an endpoint with
        ``"pass_threshold": 8`` builds with ``"range": [0, 10]``. ``options`` are the
        constructor's keywords (``timeout``, ``max_retries``, ``backoff``, ``client``,
        ``score_range``).
        """
        checked = config if isinstance(config, EndpointConfig) else validate_config(EndpointConfig, config)
        if checked.range is not None:
            if "score_range" in options:
                raise GraderConfigError("the scale is given twice: the config's range and the score_range keyword",
                                        code="bad_value", pointer="/range", hint="keep one of them")
            options = {**options, "score_range": tuple(checked.range)}
        grader = cls.__new__(cls)
        grader._setup(checked, **options)
        return grader

    def grade(self, sample: SampleInput, item: Mapping[str, Any] | None = None) -> Grade:
        """POST the sample and item; the server's score, or a flagged 0 when it gives none."""
        s = Sample.of(sample)
        return noting_cut(self._graded(s, item), s)

    def _graded(self, s: Sample, item: Mapping[str, Any] | None) -> Grade:
        payload = {"sample": sample_payload(s), "item": dict(item) if item is not None else {},
                   "trace_id": f"trace_{uuid.uuid4().hex}"}
        body = json_body(payload, "the sample or item")
        answer = post_json(self.url, body, self.headers, timeout=self.timeout, max_retries=self.max_retries,
                           backoff=self.backoff, client=self._http.get(), limiter=self.rate_limiter)
        if isinstance(answer, HttpFailure):
            flag: ErrorFlag = "unresponsive_reward_error" if answer.unanswered else "other_error"
            return flagged(flag, f"endpoint {self.url}: {answer.detail}; scored 0")
        try:
            reply = answer.json()
        except ValueError:
            return flagged("other_error", f"endpoint {self.url} answered HTTP {answer.status_code} with a body that is not "
                                          f"JSON: {excerpt(answer.text)}; scored 0")
        score = reply.get("score") if isinstance(reply, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return flagged("other_error", f'endpoint {self.url} answered without a finite number "score": '
                                          f"{excerpt(answer.text)}; scored 0")
        value = float(score)
        low, high = self.score_range
        if not low <= value <= high:
            return flagged("other_error", f"endpoint {self.url} answered score {value:g}, outside the grader's range "
                                          f"[{low:g}, {high:g}]; scored 0 (give another scale with the config's range)")
        detail = FieldDetail("endpoint", value, "compared", reply, None)
        return Grade(value, {}, {self.name: detail}, None,
                     f"{value:g} from endpoint {self.url}{verdict(value, self.pass_threshold)}")

    def config(self) -> dict[str, Any]:
        """The grader as OpenAI's config."""
        out: dict[str, Any] = {"type": "endpoint", "name": self.name, "url": self.url}
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        if self.pass_threshold is not None:
            out["pass_threshold"] = self.pass_threshold
        if self.score_range != (0.0, 1.0):
            out["range"] = list(self.score_range)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        options = {"timeout": self.timeout, "max_retries": self.max_retries, "backoff": self.backoff}
        return (_rebuild, (self.config(), options))

    def __repr__(self) -> str:  # header values may be secrets: only their names are shown
        return (f"EndpointGrader(name={self.name!r}, url={self.url!r}, headers={sorted(self.headers)}, "
                f"rate_limit={self.rate_limit!r})")


def _rebuild(config: dict[str, Any], options: dict[str, Any]) -> EndpointGrader:
    return EndpointGrader.from_config(config, **options)


def _check_score_range(value: object, pointer: str = "/score_range") -> tuple[float, float]:
    """``score_range`` (or the config's ``range``): two finite numbers, low < high."""
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            and value[0] < value[1]):
        return float(value[0]), float(value[1])
    raise GraderConfigError(f"{pointer[1:]} must be [low, high] with finite numbers and low < high, got {value!r}",
                            code="bad_value", pointer=pointer, hint="e.g. [0, 1] (the default) or [0, 10]")


