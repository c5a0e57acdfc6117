"""Where a model grader's model runs: an OpenAI-compatible server or a local transformers model."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .._errors import GraderConfigError
from ._endpoint import DEFAULT_TIMEOUT, HttpFailure, LazyClient, check_url, excerpt, json_body, post_json

if TYPE_CHECKING:
    import torch
from ._model_io import _PATH_PREFIXES, BASE_URL_ENV, LOCAL_MAX_NEW_TOKENS, SamplingParams

# -- where the grader model runs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """What the grader model answered."""

    text: str
    finish_reason: str | None
    refusal: str | None = None
    usage: dict[str, Any] | None = None
    """The server's token counts (``prompt_tokens``, ``completion_tokens`` ...), when it sent them."""


@dataclass(frozen=True, slots=True)
class ServerFailure:
    """The grader model gave no reply (the reason behind ``model_grader_server_error``)."""

    detail: str


class Backend(Protocol):
    """Runs the grader model: a chat-completions server or a local transformers model."""

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure: ...

    def describe(self) -> str: ...


class ChatCompletions:
    """An OpenAI-compatible ``/chat/completions`` server (vLLM, llama.cpp, SGLang, Ollama, OpenAI)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = 2, backoff: float = 0.5, structured_output: bool = True,
                 client: httpx.Client | None = None) -> None:
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.structured_output = structured_output
        self._http = LazyClient(client)

    def describe(self) -> str:
        return f"model {self.model!r} at {self.url}"

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, **params.request()}
        if answer_format is not None and self.structured_output:
            payload["response_format"] = answer_format
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = post_json(self.url, json_body(payload, "the grader prompt"), headers, timeout=self.timeout,
                           max_retries=self.max_retries, backoff=self.backoff, client=self._http.get())
        if isinstance(answer, HttpFailure):
            hint = (" (if the server does not support JSON-schema response_format, build the grader with "
                    "structured_output=False)" if answer.status == 400 and "response_format" in payload else "")
            return ServerFailure(answer.detail + hint)
        return _read_completion(answer)


def _read_completion(response: httpx.Response) -> Reply | ServerFailure:
    try:
        body = response.json()
    except ValueError:
        return ServerFailure(f"HTTP {response.status_code} with a body that is not JSON: {excerpt(response.text)}")
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        return ServerFailure(f"the reply has no choices[0].message: {excerpt(response.text)}")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is not None and not isinstance(content, str):
        return ServerFailure(f"choices[0].message.content is {type(content).__name__}, not text")
    refusal = message.get("refusal")
    finish = choice.get("finish_reason") if choice is not None else None
    usage = body.get("usage")
    return Reply(content or "", finish if isinstance(finish, str) else None,
                 refusal if isinstance(refusal, str) and refusal.strip() else None,
                 usage if isinstance(usage, dict) else None)


class LocalModel:
    """A transformers causal LM in a local directory, loaded on first use (one copy per directory and device)."""

    def __init__(self, path: Path, device: str | None = None) -> None:
        self.path = path
        self.device = device

    def describe(self) -> str:
        return f"local model {str(self.path)!r}"

    def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                 answer_format: dict[str, Any] | None) -> Reply | ServerFailure:
        lm = load_local_model(self.path, self.device)
        try:
            text, finish = lm.generate(messages, params)
        except Exception as exc:  # the model grader's boundary (the error policy): a failing model is a flagged 0
            return ServerFailure(f"generation failed: {type(exc).__name__}: {exc}")
        return Reply(text, finish)


class LoadedModel:
    """A loaded local grader model and its tokenizer."""

    def __init__(self, path: Path, device: str | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer  # torch and transformers load here, not on import

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        loaded: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        self.model: Any = loaded.to(self.device)  # typed loosely, as rl does: transformers' Auto classes type poorly
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos or [])
        pad = self.tokenizer.pad_token_id
        self.pad_id: int | None = pad if pad is not None else min(self.eos_ids, default=None)

    def prompt(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The prompt text, and whether it came from the chat template (which then holds the special tokens)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text), True
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:", False

    def generate(self, messages: list[dict[str, str]], params: SamplingParams) -> tuple[str, str]:
        """The reply text and its finish reason (``stop`` at an end-of-sequence token, else ``length``)."""
        import torch

        text, templated = self.prompt(messages)
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=not templated).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": params.max_tokens or LOCAL_MAX_NEW_TOKENS, "pad_token_id": self.pad_id}
        if params.temperature:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p or 1.0)
        else:
            options.update(do_sample=False)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():  # a seed must not move the trainer's RNG
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out: torch.Tensor = self.model.generate(**batch, **options)  # (1, T_prompt + T_new)
        new = out[0, batch["input_ids"].shape[1]:]  # (T_new,)
        finish = "stop" if len(new) and int(new[-1]) in self.eos_ids else "length"
        return str(self.tokenizer.decode(new, skip_special_tokens=True)), finish


@lru_cache(maxsize=2)
def load_local_model(path: Path, device: str | None = None) -> LoadedModel:
    """The :class:`LoadedModel` for ``path``, loaded once and kept; a directory that does not load raises."""
    try:
        return LoadedModel(path, device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise GraderConfigError(f"the grader model in {str(path)!r} did not load: {type(exc).__name__}: {exc}",
                                code="model_load_failed", pointer="/model",
                                hint="a transformers causal LM directory (config.json, weights, tokenizer files)") from None


def _looks_like_path(model: str) -> bool:
    return model.startswith(_PATH_PREFIXES) or (len(model) > 2 and model[1] == ":" and model[2] in "/\\")


_local_models: contextvars.ContextVar[bool] = contextvars.ContextVar("rftkit_local_models", default=True)


@contextmanager
def served_models_only() -> Iterator[None]:
    """Graders built inside take ``model`` as a served model's name only: no local directory is looked at or loaded.

    ``rftkit serve`` builds request-borne model graders in here, so a request
    cannot make the server stat or load a path it names.
    """
    token = _local_models.set(False)
    try:
        yield
    finally:
        _local_models.reset(token)


def resolve_backend(model: object, *, base_url: str | None = None, api_key: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT, max_retries: int = 2, backoff: float = 0.5,
                    structured_output: bool = True, device: str | None = None,
                    client: httpx.Client | None = None) -> Backend:
    """Where ``model`` runs: a local model directory, else a chat-completions server (see the module docstring)."""
    if not isinstance(model, str) or not model.strip():
        raise GraderConfigError(f"model must be a non-empty string, got {model!r}", code="wrong_type", pointer="/model")
    path = Path(model).expanduser() if _local_models.get() else None  # None: looks at nothing on this machine
    if path is not None and (path.is_dir() or _looks_like_path(model)):
        if not (path / "config.json").is_file():
            raise GraderConfigError(f"model {model!r} is not a model directory (no config.json)", code="model_not_found",
                                    pointer="/model", hint="a local transformers causal LM directory, or a model name "
                                    f"served at ${BASE_URL_ENV}")
        if find_spec("torch") is None or find_spec("transformers") is None:
            raise GraderConfigError("a local grader model needs torch and transformers", code="missing_extra",
                                    pointer="/model", hint="pip install 'rftkit[rl]', or serve the model with vLLM or "
                                    f"llama.cpp and set ${BASE_URL_ENV}")
        return LocalModel(path, device)
    source = "base_url"
    if base_url is None:
        for env in (BASE_URL_ENV, "OPENAI_BASE_URL"):
            if os.environ.get(env):
                base_url, source = os.environ[env], f"${env}"
                break
    if base_url is None:
        raise GraderConfigError(f"model {model!r} is not a local directory and no chat-completions server is configured",
                                code="model_not_found", pointer="/model",
                                hint=f"set ${BASE_URL_ENV} (or $OPENAI_BASE_URL) to an OpenAI-compatible server such as "
                                     "http://127.0.0.1:8000/v1 (vLLM, llama.cpp), pass base_url=..., or give a local "
                                     "model directory")
    try:
        check_url(base_url, "/model")
    except GraderConfigError as exc:
        raise GraderConfigError(f"{source}: {exc.message}", code=exc.code, pointer="/model",
                                hint="a chat-completions base URL such as http://127.0.0.1:8000/v1") from None
    return ChatCompletions(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                           structured_output=structured_output, client=client)




