"""
JSON answers for the admin API, and the one way a handler is rendered.

Every answer the API gives, success or error, is JSON with
C{Content-Type: application/json}; every error is
C{{"success": false, "error": "..."}}.  Handlers are plain methods named
after the HTTP method (C{GET}, C{POST}) that return an L{Answer}, a dict,
or a L{Deferred} of either, and raise L{ApiError} to refuse.
L{ApiResource.render} writes an answer that is ready at once directly;
a Deferred (or a coroutine) it waits for the way klein's C{_resource.py}
does: C{NOT_DONE_YET}, and an eye on C{request.notifyFinish()} so a
client that went away is simply not answered (the command it sent
is not cancelled: a half-done stop or restart would help nobody).
"""

from __future__ import annotations

import json
from inspect import iscoroutine
from dataclasses import dataclass, field
from typing import Any, Mapping

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

__all__ = [
    "Answer",
    "ApiError",
    "ApiResource",
    "ErrorResource",
    "errorBody",
    "jsonBody",
    "jsonText",
    "writeJSON",
]

_log = Logger()


@dataclass(frozen=True)
class Answer:
    """
    A JSON answer with its HTTP status and extra headers.
    """

    body: Any
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """
    A refusal: answered as C{{"success": false, "error": message}} and the
    C{extra} fields, with C{status}.

    @ivar headers: extra response headers (C{Allow} for a 405,
        C{WWW-Authenticate} for a 401).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def answer(self) -> Answer:
        return Answer(errorDocument(self.message, **self.extra), self.status, self.headers)


def jsonBody(value: Any) -> bytes:
    """
    Serialise an answer: compact but readable, one line, newline-terminated
    (so C{curl} leaves the prompt on its own line).
    """
    return jsonText(value) + b"\n"


def jsonText(value: Any) -> bytes:
    """
    L{jsonBody} without its newline: a piece of a larger answer.
    """
    return json.dumps(value, separators=(", ", ": "), allow_nan=False).encode("utf-8")


def errorDocument(message: str, **extra: Any) -> dict:
    return {"success": False, "error": message, **extra}


def errorBody(message: str, **extra: Any) -> bytes:
    """
    The bytes of an error answer, for the rare place that writes raw HTTP
    (the body cap answers before twisted.web has a request to render).
    """
    return jsonBody(errorDocument(message, **extra))


def writeJSON(request, answer: Answer) -> None:
    """
    Write C{answer} and finish the request; for C{HEAD}, the headers only.
    """
    # bytes are an answer encoded already (L{orchestrator.web.views.StatusCache}).
    body = answer.body if isinstance(answer.body, bytes) else jsonBody(answer.body)
    request.setResponseCode(answer.status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    for name, value in answer.headers.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    request.setHeader(b"content-length", b"%d" % len(body))
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def _toAnswer(result: Any) -> Answer:
    return result if isinstance(result, Answer) else Answer(result)


class ApiResource(Resource):
    """
    A node of the API tree.

    Methods named C{GET}, C{POST} (the HTTP method) handle requests that
    end here; C{HEAD} is served by C{GET} without a body; any other method
    is a 405 naming the allowed ones.  A node with no handlers is a 404 (a
    directory such as C{/api/v1} is not a route), and so is any child path
    not put with C{putChild}.  A trailing slash is ignored.
    """

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        return ErrorResource(ApiError(404, f"no such route: {_path(request)}"))

    def allowedMethods(self) -> list[str]:
        methods = [m for m in ("GET", "POST") if callable(getattr(self, m, None))]
        return methods + (["HEAD"] if "GET" in methods else [])

    def render(self, request):
        method = request.method.decode("latin-1")
        allowed = self.allowedMethods()
        if not allowed:
            handler = _raiser(ApiError(404, f"no such route: {_path(request)}"))
        elif method not in allowed:
            handler = _raiser(ApiError(
                405, f"method {method} not allowed on {_path(request)}; use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)}))
        else:
            handler = getattr(self, "GET" if method == "HEAD" else method)
        # Most answers are ready at once (a status, a list): written here,
        # without a Deferred and its callbacks.  What is not, and every
        # error (an ApiError's JSON, or a logged 500), goes through
        # renderDeferred.
        try:
            result = handler(request)
        except Exception:
            return renderDeferred(request, fail())
        if iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            return renderDeferred(request, result)
        try:
            writeJSON(request, _toAnswer(result))
        except Exception:
            _log.failure("admin API: cannot write an answer")
        return NOT_DONE_YET


def renderDeferred(request, d) -> bytes:
    """
    Answer C{request} when C{d} fires: with its L{Answer} or dict, an
    L{ApiError}'s JSON, or a 500 for anything unexpected (logged, never
    shown: no traceback reaches a client).  If the client is gone by then
    the answer is dropped.

    @return: C{NOT_DONE_YET}.
    """
    gone = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def failed(failure):
        if failure.check(ApiError):
            return failure.value.answer()
        _log.failure("admin API: {method} {path} failed", failure,
                     method=request.method.decode("latin-1"), path=_path(request))
        return ApiError(500, "internal error (see the orchestrator's log)").answer()

    def write(answer):
        if not gone:
            writeJSON(request, answer)

    d.addCallback(_toAnswer)
    d.addErrback(failed)
    d.addCallback(write)
    d.addErrback(lambda f: _log.failure("admin API: cannot write an answer", f))
    return NOT_DONE_YET


def _raiser(error: Exception):
    def handler(request):
        raise error
    return handler


def _path(request) -> str:
    return request.path.decode("utf-8", "replace")


class ErrorResource(Resource):
    """
    A leaf that answers one L{ApiError}, whatever the method: what the tree
    returns for an unknown path or a request the guard refused.
    """

    isLeaf = True

    def __init__(self, error: ApiError) -> None:
        super().__init__()
        self.error = error

    def render(self, request):
        writeJSON(request, self.error.answer())
        return NOT_DONE_YET
