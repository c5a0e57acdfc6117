"""``rftkit serve``: the command line that starts uvicorn with the app."""

from __future__ import annotations

import gc
import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from starlette.types import ASGIApp

from schemas import UserError

from ._app import create_app
from ._protocol import _http_protocol, _served
from ._wire import (
    _SETTINGS_ENV,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PYTHON_GRADERS,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT_S,
    RUN_PATH,
    SAFE_GRADER_TYPES,
    TOKEN_ENV,
    VALIDATE_PATH,
)


def _app_from_env() -> ASGIApp:
    """The app of one ``--workers`` process, from the settings the parent put in the environment.

    Once the app is built, :func:`gc.freeze` moves everything alive (the modules,
    the grader) out of the cyclic collector's reach: grading allocates many
    short-lived objects, and each collection they trigger would otherwise
    re-scan the whole import-time heap (about 8 % of the CPU per 256-row batch).
    """
    s = json.loads(os.environ[_SETTINGS_ENV])
    app = create_app(s.pop("grader"), **s)
    gc.freeze()
    return _served(app)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _read_token(token: str | None, token_file: Path | None) -> str | None:
    """The bearer token: ``--token`` (or ``$RFTKIT_SERVE_TOKEN``), or the first line of ``--token-file``."""
    if token_file is None:
        return token or None
    if token:
        raise _fail(f"give the token once: --token (or ${TOKEN_ENV}) or --token-file, not both")
    try:
        text = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"--token-file {token_file}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if not text or "\n" in text:
        raise _fail(f"--token-file {token_file} must hold the token on one line")
    return text


def serve(
    grader: Annotated[Path, typer.Option("--grader", "-g", help="Grader config (JSON) served by /get_reward, /grade and /score.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs a token (or --insecure-no-token).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own copy of the grader.", min=1)] = 1,
    token: Annotated[str | None, typer.Option(envvar=TOKEN_ENV, show_envvar=True, help=(
        "Bearer token every POST must send (GET /health stays open). Prefer the environment variable or --token-file: "
        "a command line is readable by every process on the machine."))] = None,
    token_file: Annotated[Path | None, typer.Option(help="Read the bearer token from this file (one line).")] = None,
    insecure_no_token: Annotated[bool, typer.Option("--insecure-no-token", help=(
        "Serve on a non-loopback --host without a token: anyone who can reach the port can use the server."))] = False,
    allow_graders: Annotated[str, typer.Option(help=(
        "Grader types a graders/run or graders/validate request may carry besides string_check, text_similarity, "
        "structured and multi, comma-separated: python (runs the client's code), score_model, label_model (call your "
        "model server), endpoint (POSTs to any URL the client names), or all. See docs/serve.md, Security."))] = "",
    max_python_graders: Annotated[int, typer.Option(help="Request-borne python graders kept alive at once, per worker.", min=1)]
    = DEFAULT_MAX_PYTHON_GRADERS,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body in bytes; larger ones get 413.", min=1)] = DEFAULT_MAX_BODY_BYTES,
    timeout: Annotated[float, typer.Option(help=(
        "Seconds a request may spend grading; then it gets 504 and its python work is killed."), min=0.001)] = DEFAULT_TIMEOUT_S,
    read_timeout: Annotated[float, typer.Option(help=(
        "Seconds a client has to send a request's head and body; then the connection is closed."), min=0.001)]
    = DEFAULT_READ_TIMEOUT_S,
    max_connections: Annotated[int, typer.Option(help="Open connections per worker; more get 503 and are closed.", min=1)]
    = DEFAULT_MAX_CONNECTIONS,
    max_concurrency: Annotated[int, typer.Option(help="Requests graded or waiting at once, per worker; more get 503.", min=1)]
    = DEFAULT_MAX_CONCURRENCY,
    threads: Annotated[int, typer.Option(help="Grading threads per worker and lane (served grader; request-borne or large).",
                                         min=1)] = DEFAULT_THREADS,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level (critical, error, warning, info, debug).")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve a grader over HTTP: OpenRLHF's /get_reward, OpenAI's graders run/validate, /grade and /score.

    Example: rftkit serve --grader graders/data/resume_grader.json --port 8000 --workers 2
    then point OpenRLHF at http://127.0.0.1:8000/get_reward (--reward.remote_url; before 0.10: --remote_rm_url).
    """
    import uvicorn

    token = _read_token(token, token_file)
    if not token and not _is_loopback(host) and not insecure_no_token:
        raise _fail(f"--host {host} is reachable from other machines and no token is set: give --token-file PATH or "
                    f"${TOKEN_ENV}, serve on 127.0.0.1 behind a proxy, or pass --insecure-no-token")
    settings: dict[str, Any] = {
        "token": token, "max_body_bytes": max_body_bytes, "timeout_s": timeout, "max_concurrency": max_concurrency,
        "threads": threads, "allow_graders": [a.strip() for a in allow_graders.split(",") if a.strip()],
        "max_python_graders": max_python_graders, "read_timeout_s": read_timeout, "max_connections": max_connections}
    try:
        app = create_app(grader, **settings)  # builds the grader: a bad config stops here, before any worker starts
    except UserError as exc:
        raise _fail(str(exc)) from None
    if not token and not _is_loopback(host):
        typer.echo(f"warning: serving on {host} without a token: anyone who can reach it can use it", err=True)
    allowed = sorted(app.state.rftkit.allowed)
    typer.echo(f"rftkit serve: grader {grader} on http://{host}:{port} ({workers} worker(s)); POST /get_reward, /grade, "
               f"/score, {RUN_PATH}, {VALIDATE_PATH} (request-borne graders: {', '.join([*SAFE_GRADER_TYPES, *allowed])}); "
               "GET /health", err=True)
    common: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": access_log,
                              "http": _http_protocol()}
    if workers == 1:
        gc.freeze()  # see _app_from_env
        uvicorn.run(_served(app), **common)
        return
    os.environ[_SETTINGS_ENV] = json.dumps({"grader": str(grader.resolve()), **settings})
    uvicorn.run(f"{__name__}:_app_from_env", factory=True, workers=workers, **common)


def register(app: typer.Typer) -> None:
    """Add ``rftkit serve`` to ``app`` (the ``rftkit.commands`` entry point)."""
    app.command(name="serve")(serve)


