"""The teach UI's HTTP side: a Starlette app over a `TeachUiNode`.

GET  /                  the page (its assets under /static, shipped in the package)
GET  /api/state         node presence, vocabulary, concepts with their newest mask, frozen frames
GET  /api/live.jpg      the node's newest overlay
GET  /api/frozen/{key}  a frozen frame's overlay;  /api/review.jpg  the last teach's review
GET  /api/mask/{id}     a concept's newest mask
POST /api/freeze        hold the newest frame (camera pixels + overlay) for teaching
POST /api/teach | /api/forget | /api/vocabulary

Every request passes `guard.Guard` first; every POST body is read up to MAX_BODY (413 as
soon as it passes, chunked or not) and checked by `forms` before anything reaches the node.
A refusal is JSON {"error": ...}, which the page shows as is.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .bridge import NodeUnavailable, TeachUiNode
from .forms import FormError, forget_form, teach_form, vocabulary_form
from .guard import TOKEN_COOKIE, Guard

MAX_BODY = 64 * 1024  # a teach form is a few hundred bytes
STATIC = resources.files(__package__) / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class BodyTooLarge(Exception):
    """A request body past MAX_BODY (answered 413, before the rest of it is read)."""


def refusal(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def jpeg_response(data: bytes | None, missing: str) -> Response:
    if data is None:
        return refusal(missing, 404)
    return Response(data, media_type="image/jpeg")


def build_app(node: TeachUiNode, guard: Guard) -> Starlette:
    """The app serving the page for `node`, under `guard`'s rules."""

    class Guarded(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            path = request.url.path
            if request.method == "POST":
                why = guard.may_change(request.method, request.headers, request.cookies)
                status = 403
            elif path.startswith("/static/"):
                why, status = guard.host_problem(request.headers), 403
            else:
                why = guard.may_read(request.headers, request.cookies,
                                     request.query_params.get("token"))
                status = 403 if why.startswith("refused: this page answers") else 401
            if why:
                if path == "/" and request.method == "GET":
                    response = HTMLResponse(_refusal_page(why), status_code=status)
                else:
                    response = refusal(why, status)
            else:
                response = await call_next(request)
            response.headers.update(SECURITY_HEADERS)
            return response

    async def page(request: Request) -> Response:
        if request.query_params.get("token"):  # a session cookie, then the address bar clean
            response: Response = RedirectResponse("/", status_code=303)
        else:
            text = (STATIC / "index.html").read_text(encoding="utf-8")
            response = HTMLResponse(text.replace("{{TOKEN}}", html.escape(guard.token)))
        response.set_cookie(TOKEN_COOKIE, guard.token, httponly=True, samesite="strict")
        return response

    async def state(request: Request) -> Response:
        return JSONResponse(node.state())

    async def live(request: Request) -> Response:
        return jpeg_response(node.live_picture(), "no overlay yet: is the camera publishing and "
                             "the povss node running?")

    async def frozen_picture(request: Request) -> Response:
        frozen = node.frozen(request.path_params["key"])
        return jpeg_response(None if frozen is None else frozen.picture,
                             "that frozen frame is no longer held")

    async def review(request: Request) -> Response:
        return jpeg_response(node.review_picture(), "no teach review yet")

    async def mask(request: Request) -> Response:
        return jpeg_response(node.mask_picture(request.path_params["concept_id"]),
                             "no mask of that concept yet")

    async def freeze(request: Request) -> Response:
        frozen = node.freeze()
        if frozen is None:
            return refusal("no frame to freeze yet: the node's overlay and the camera frame "
                           "it shows have not both arrived (is the povss node running?)", 409)
        width, height = frozen.size
        return JSONResponse({"frame": frozen.key, "width": width, "height": height})

    async def body(request: Request) -> object:
        """The request's JSON, read as it arrives and refused (BodyTooLarge) once past
        MAX_BODY, whether its Content-Length says so or it is sent chunked without one: a
        client cannot make the page hold an unbounded body in memory."""
        size = request.headers.get("content-length")
        if size is not None and not size.isdigit():
            raise FormError("the request's Content-Length is not a number")
        if size is not None and int(size) > MAX_BODY:
            raise BodyTooLarge
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise BodyTooLarge
        try:
            return json.loads(bytes(raw))
        except (ValueError, UnicodeDecodeError):
            raise FormError("the request is not valid JSON") from None

    async def answer(request: Request, call) -> Response:  # noqa: ANN001 - form -> coroutine
        try:
            return JSONResponse(await call(await body(request)))
        except BodyTooLarge:
            return refusal(f"the request is larger than {MAX_BODY} bytes", 413)
        except FormError as exc:
            return refusal(str(exc), 400)
        except NodeUnavailable as exc:
            return refusal(str(exc), 503)
        except TimeoutError:
            return refusal("the povss node gave no answer in time (is it still running?)", 504)

    async def teach(request: Request) -> Response:
        if node.teaching:
            return refusal(f"a teach ({node.teaching!r}) is running: wait for its answer", 409)

        async def call(data: object) -> dict:
            return await node.teach(teach_form(data, node.frozen_sizes(), node.vocabulary()))
        return await answer(request, call)

    async def forget(request: Request) -> Response:
        async def call(data: object) -> dict:
            return await node.forget(forget_form(data))
        return await answer(request, call)

    async def vocabulary(request: Request) -> Response:
        async def call(data: object) -> dict:
            return await node.set_vocabulary(vocabulary_form(data))
        return await answer(request, call)

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/live.jpg", live),
        Route("/api/frozen/{key}.jpg", frozen_picture),
        Route("/api/review.jpg", review),
        Route("/api/mask/{concept_id}.jpg", mask),
        Route("/api/freeze", freeze, methods=["POST"]),
        Route("/api/teach", teach, methods=["POST"]),
        Route("/api/forget", forget, methods=["POST"]),
        Route("/api/vocabulary", vocabulary, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guarded)])


def _refusal_page(why: str) -> str:
    return ("<!doctype html><meta charset=utf-8><meta name=viewport "
            "content='width=device-width'><title>povss teach UI</title>"
            f"<p id=refused>{html.escape(why)}</p>")
