"""A cap on the size of the HTTP request bodies the demo server reads.

gradio (on Starlette) reads and JSON-parses a whole request body before any handler of ours runs, with no size
limit: a 200 MB POST to ``/gradio_api/call/generate`` costs the server about 1 GB and seconds of CPU before the
demo's own checks (:mod:`galip_diffusers.demo.inputs`) can refuse the prompt. Neither gradio nor Starlette has a
setting for that (gradio's ``max_file_size`` covers uploaded files only), so this small ASGI middleware does it.
A demo request is a prompt of at most :data:`~galip_diffusers.demo.inputs.MAX_PROMPT_CHARS` characters and a few
numbers, so :data:`MAX_REQUEST_BYTES` leaves ample room.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from .inputs import MAX_PROMPT_CHARS

#: the largest request body the demo server reads, in bytes (a request holds one or two prompts of at most 2,000
#: characters, each up to 4 bytes in UTF-8 or 6 as a JSON escape, and a few numbers)
MAX_REQUEST_BYTES = 64 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestSizeLimit:
    """ASGI middleware: an HTTP request whose body is over ``max_bytes`` gets ``413 Payload Too Large`` and is never
    handed to the app. A declared ``Content-Length`` is checked before anything is read; a body sent without one
    (chunked) is read up to the limit, then either refused or replayed to the app unchanged. Other scopes
    (websocket, lifespan) pass through."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 max_bytes: int = MAX_REQUEST_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}.")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        messages, size = [], 0
        while True:  # read the body (bounded) before the app sees any of it
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app gets the disconnect as usual
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(messages, receive), send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"The request body is over the demo's limit of {self.max_bytes} bytes "
                                    f"(a prompt is at most {MAX_PROMPT_CHARS} characters)."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that returns ``messages`` first, then waits on the real one (e.g. for the disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
