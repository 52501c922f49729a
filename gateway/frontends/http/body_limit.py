"""ASGI middleware refusing request bodies over the limit with 413 before they are buffered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge, new_request_id
from gateway.frontends.http.errors import ErrorBodies, error_response
from gateway.ops.request_log import current_request_id

# POST routes whose bodies carry files or training data: they get the deploy limit
LARGE_BODIES = frozenset(
    {
        "/management/models",
        "/api/v1/TextGenerationTaskPeftPromptTuningTrain",
        "/v1/files",
        "/v1/fine_tuning/jobs",
    }
)


class BodyLimit:
    """Refuse request bodies over the limit with 413, before they are buffered whole (model
    deploys and training requests with their data inline have the deploy limit)."""

    def __init__(self, app: ASGIApp, limit: int, deploy_limit: int, bodies: ErrorBodies) -> None:
        self.app = app
        self.limits = (limit, deploy_limit)
        self.bodies = bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        deploy = scope.get("method") == "POST" and path in LARGE_BODIES
        limit = self.limits[1] if deploy else self.limits[0]
        too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
        body = self.bodies.body_for(path)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(too_large, current_request_id() or new_request_id(), body)(
                    scope, receive, send
                )
                return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit and not refused:
                refused = True
                rid = current_request_id() or new_request_id()
                await error_response(too_large, rid, body)(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded)
