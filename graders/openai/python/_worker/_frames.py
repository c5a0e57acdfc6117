"""The frames on the sandbox's pipes: a 4-byte big-endian length, then JSON (UTF-8, lone surrogates kept).

The grading process reads the same format (``_sandbox``) and validates every
frame it gets: a grade child's user code can write anything on its own reply pipe.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any


def send(fd: int, obj: object) -> None:
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv(fd: int) -> Any:
    head = read_exact(fd, 4)
    body = None if head is None else read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)

