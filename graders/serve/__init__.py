"""The reward HTTP server (``rftkit serve``) as a library: :func:`create_app` builds the ASGI app.

Run it with any ASGI server, e.g. ``uvicorn.run(create_app("grader.json"), port=8000)``;
the endpoints, limits and status codes are in ``docs/serve.md``, and what a
client may make the server do (``allow_graders``, the read timeout, the
connection cap) in its Security section. Needs the ``serve`` extra
(``pip install 'rftkit[serve]'``).
"""

from ._app import create_app

__all__ = ["create_app"]
