"""
The status page: C{GET /} and C{GET /ui/} serve one static HTML page,
C{/ui/<asset>} its stylesheet, script and icon, all shipped as package
data in C{orchestrator/web/static/}.

Nothing is built and nothing is fetched from elsewhere: the page talks to
the API with C{fetch()} from the same origin, so the L{Guard}'s Host and
Origin checks apply to it unchanged.  The page and its assets need no
token (they hold no state and no secret); the API calls the page makes
do, and it asks the operator for the token when the API answers 401.

The assets are read once, when the tree is built, into memory: a known,
small set of names, so a request can only ever name one of them (there is
no file system lookup a path could escape from).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.web._render import ApiError, writeJSON

__all__ = ["Asset", "CONTENT_SECURITY_POLICY", "INDEX", "StaticPage", "StaticFolder",
           "loadAssets", "MAX_ASSET_BYTES"]

#: The page itself.
INDEX = "index.html"

#: The largest asset read (they are a few KiB: no framework); a bigger file
#: in the folder is a packaging mistake, refused when the tree is built.
MAX_ASSET_BYTES = 256 * 1024

#: Scripts, styles, images and requests from this origin only; no inline
#: script or style, no plugins, no frames, no form posts, no <base>.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|css|js|svg)$")


@dataclass(frozen=True)
class Asset:
    """
    One static file, as served.

    @ivar etag: a strong validator (a hash of the body), so a browser that
        revalidates (C{Cache-Control: no-cache}) gets a 304 without a body.
    """

    name: str
    body: bytes
    contentType: str
    etag: bytes


def loadAssets(folder=None) -> dict[str, Asset]:
    """
    Read the status page's files.

    @param folder: a C{Traversable} or path-like folder (default: the
        package's C{static/}).
    @raise ValueError: a file is larger than L{MAX_ASSET_BYTES}, or the
        page is missing.
    """
    if folder is None:
        folder = resources.files("orchestrator.web").joinpath("static")
    assets = {}
    for entry in folder.iterdir():
        name = entry.name
        if not _NAME.match(name):
            continue
        body = entry.read_bytes()
        if len(body) > MAX_ASSET_BYTES:
            raise ValueError(f"status page asset {name} is {len(body)} bytes, "
                             f"more than {MAX_ASSET_BYTES}")
        kind = _TYPES[name[name.rindex("."):]]
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        assets[name] = Asset(name, body, kind, etag)
    if INDEX not in assets:
        raise ValueError(f"status page {INDEX} is missing from {folder}")
    return assets


def _serve(request, asset: Asset | None) -> bytes:
    """
    Answer a C{GET} or C{HEAD} with C{asset}, a JSON 404 without one, a
    JSON 405 for another method.
    """
    if request.method not in (b"GET", b"HEAD"):
        return _refuse(request, ApiError(
            405, f"method {request.method.decode('latin-1')} not allowed on "
                 f"{request.path.decode('utf-8', 'replace')}; use GET, HEAD",
            headers={"Allow": "GET, HEAD"}))
    if asset is None:
        return _refuse(request, ApiError(
            404, f"no such route: {request.path.decode('utf-8', 'replace')}"))
    request.setHeader(b"content-type", asset.contentType.encode("ascii"))
    # Revalidate every time (the files change when the package does); the
    # ETag makes that a body-less 304.
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"etag", asset.etag)
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii"))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cross-origin-opener-policy", b"same-origin")
    match = request.getHeader(b"if-none-match")
    if match is not None and asset.etag in [m.strip() for m in match.split(b",")]:
        request.setResponseCode(304)
        return b""
    request.setHeader(b"content-length", b"%d" % len(asset.body))
    return b"" if request.method == b"HEAD" else asset.body


def _refuse(request, error: ApiError) -> bytes:
    writeJSON(request, error.answer())
    return NOT_DONE_YET


class StaticPage(Resource):
    """
    C{GET /}: the page, and nothing below it (C{//x} is a 404).
    """

    isLeaf = True

    def __init__(self, assets: dict[str, Asset]) -> None:
        super().__init__()
        self._page = assets[INDEX]

    def allowedMethods(self) -> list[str]:
        return ["GET", "HEAD"]

    def render(self, request):
        return _serve(request, self._page if request.postpath in ([], [b""]) else None)


class StaticFolder(Resource):
    """
    C{/ui}, C{/ui/}: the page; C{/ui/<name>}: one of the assets; anything
    else (an unknown name, a deeper path, C{..}) is a 404.
    """

    isLeaf = True

    def __init__(self, assets: dict[str, Asset]) -> None:
        super().__init__()
        self._assets = dict(assets)

    def allowedMethods(self) -> list[str]:
        return ["GET", "HEAD"]

    def render(self, request):
        path = request.postpath
        if path in ([], [b""]):
            asset = self._assets[INDEX]
        elif len(path) == 1:
            asset = self._assets.get(path[0].decode("utf-8", "replace"))
        else:
            asset = None
        return _serve(request, asset)
