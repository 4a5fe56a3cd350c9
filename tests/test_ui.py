"""
The status page's static resource in memory: what is served at C{/},
C{/ui/} and C{/ui/<asset>}, with which headers, and what is refused
(unknown assets, path traversal, foreign Hosts and Origins, other
methods), over the real admin site (L{tests.test_api.ApiHarness}).
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from orchestrator.web.ui import CONTENT_SECURITY_POLICY, MAX_ASSET_BYTES, loadAssets
from tests.test_api import ApiHarness
from tests.test_api_security import raw

STATIC = resources.files("orchestrator.web").joinpath("static")


@pytest.fixture
def api():
    harness = ApiHarness()  # with a token: the page itself needs none
    yield harness
    harness.stopOrchestrator()


def page(api, path, **kwargs):
    return api.get(path, token=False, **kwargs)


class TestServed:
    @pytest.mark.parametrize("path", ["/", "/ui/", "/ui", "/ui/index.html"])
    def test_page(self, api, path):
        """The page is served at /, /ui/ and /ui, as UTF-8 HTML, without a token."""
        answer = page(api, path)
        assert answer.status == 200
        assert answer.header("content-type") == "text/html; charset=utf-8"
        assert answer.text == (STATIC / "index.html").read_text("utf-8")

    @pytest.mark.parametrize("name, kind", [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ])
    def test_assets_content_types(self, api, name, kind):
        """Each asset is served whole with its content type and nosniff."""
        answer = page(api, "/ui/" + name)
        assert answer.status == 200
        assert answer.header("content-type") == kind
        assert answer.header("x-content-type-options") == "nosniff"
        assert answer.text.encode("utf-8") == (STATIC / name).read_bytes()

    @pytest.mark.parametrize("path", ["/", "/ui/app.js", "/ui/app.css"])
    def test_security_headers(self, api, path):
        """Every file carries the strict CSP (no inline script or style), no framing, no referrer, and must be revalidated."""
        answer = page(api, path)
        csp = answer.header("content-security-policy")
        assert csp == CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert "unsafe" not in csp
        assert directives["frame-ancestors"] == "'none'"
        assert answer.header("x-frame-options") == "DENY"
        assert answer.header("referrer-policy") == "no-referrer"
        assert answer.header("cache-control") == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{32}"', answer.header("etag"))

    def test_not_modified(self, api):
        """A revalidation naming the current ETag is a 304 without a body; another ETag gets the file."""
        etag = page(api, "/ui/app.js").header("etag")
        again = page(api, "/ui/app.js", headers={"If-None-Match": etag})
        assert again.status == 304 and again.text == ""
        other = page(api, "/ui/app.js", headers={"If-None-Match": '"stale"'})
        assert other.status == 200 and other.text

    def test_head(self, api):
        """HEAD answers the headers of GET without the body."""
        answer = api.call("HEAD", "/ui/app.css", token=False)
        assert answer.status == 200 and answer.text == ""
        assert answer.header("content-type") == "text/css; charset=utf-8"

    def test_html_has_no_inline_script_or_style(self):
        """The page loads its script and style from files only (the CSP would block inline ones)."""
        html = (STATIC / "index.html").read_text("utf-8")
        assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/ui/app.js" defer>']
        assert "<style" not in html and " style=" not in html and " on" not in re.sub(r"\s+", " ", html).replace(
            " one", "").replace(" only", "").replace(" once", "")
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere

    def test_page_weight_is_small(self):
        """The whole page (HTML, CSS, JS, icon) stays under 64 KiB: no framework."""
        assert sum(len(asset.body) for asset in loadAssets().values()) < 64 * 1024


class TestRefused:
    @pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/app.js.map", "/ui/static/app.js",
                                      "/ui/app.js/x", "//ui/app.js"])
    def test_unknown_asset_is_404(self, api, path):
        """A name that is not one of the page's files is a JSON 404."""
        answer = page(api, path)
        assert answer.status == 404
        assert answer.header("content-type") == "application/json"
        assert answer.json["success"] is False

    @pytest.mark.parametrize("target", [
        b"/ui/../orchestrator/web/ui.py", b"/ui/..%2fui.py", b"/ui/%2e%2e/%2e%2e/setup.cfg",
        b"/ui/..%2F..%2F..%2Fetc%2Fpasswd", b"/ui/%2Fetc%2Fpasswd", b"/ui/.%2e/api/v1/processes",
    ])
    def test_traversal_refused(self, api, target):
        """Path traversal (raw, encoded, doubly) never leaves the asset set: a 404 JSON, never a file or an API answer."""
        transport = raw(api, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found", head
        assert b"application/json" in head
        assert b"root:" not in body and b"processes" not in body.replace(b"/api/v1/processes", b"")

    def test_api_still_needs_token(self, api):
        """Exempting the page from the token exempts nothing else."""
        assert api.get("/api/v1/processes", token=False).status == 401
        assert api.get("/api/v1/orchestrator", token=False).status == 401

    def test_foreign_host_is_421(self, api):
        """The page is behind the API's Host check (DNS rebinding): a foreign Host is a 421."""
        answer = page(api, "/", headers={"Host": "evil.example:8000"})
        assert answer.status == 421
        assert page(api, "/ui/app.js", headers={"Host": "evil.example"}).status == 421
        assert page(api, "/", headers={"Host": "localhost:8000"}).status == 200

    def test_foreign_origin_is_403(self, api):
        """A cross-site request for the page is refused like the API's (403); a same-origin one passes."""
        assert page(api, "/", headers={"Origin": "http://evil.example"}).status == 403
        assert page(api, "/", headers={"Origin": "http://127.0.0.1:8000"}).status == 200

    def test_other_methods_are_405(self, api):
        """POST to the page or an asset is a JSON 405 with Allow: GET, HEAD."""
        for path in ("/", "/ui/app.js"):
            answer = api.post(path, token=False)
            assert answer.status == 405
            assert answer.header("allow") == "GET, HEAD"


class TestAssets:
    def test_oversized_asset_refused(self, tmp_path):
        """An asset larger than MAX_ASSET_BYTES is a packaging error when the tree is built."""
        (tmp_path / "index.html").write_text("<!doctype html>")
        (tmp_path / "big.js").write_bytes(b"x" * (MAX_ASSET_BYTES + 1))
        with pytest.raises(ValueError, match="big.js"):
            loadAssets(tmp_path)

    def test_missing_page_refused(self, tmp_path):
        """A static folder without index.html is refused."""
        (tmp_path / "app.js").write_text("")
        with pytest.raises(ValueError, match="index.html"):
            loadAssets(tmp_path)

    def test_only_known_kinds_are_served(self, tmp_path):
        """Files that are not html/css/js/svg (or hidden ones) are never part of the page."""
        for name in ("index.html", "app.js", ".secret.js", "notes.txt", "x.py"):
            (tmp_path / name).write_text("")
        assert sorted(loadAssets(tmp_path)) == ["app.js", "index.html"]


    def test_openapi_lists_the_assets(self, api):
        """The OpenAPI document's {asset} names exactly the files served."""
        document = api.get("/api/v1/openapi.json").json
        (parameter,) = document["paths"]["/ui/{asset}"]["get"]["parameters"]
        assert sorted(parameter["schema"]["enum"]) == sorted(loadAssets())


class TestAbout:
    def test_about(self, api):
        """GET /api/v1/orchestrator tells the version, uptime and mode the page shows."""
        from orchestrator import __version__

        api.reactor.advance(90)
        body = api.get("/api/v1/orchestrator").json
        assert body["version"] == __version__
        assert body["uptime_secs"] == 90
        assert body["monitor_only"] is False and body["orchestrator_enabled"] is True
        assert body["process_count"] == 2 and body["default_process"] == "backend"

    def test_about_monitor_only(self):
        """In monitor-only mode the page is told so."""
        from tests.test_api import config

        harness = ApiHarness(config(enabled=False))
        try:
            assert harness.get("/api/v1/orchestrator").json["monitor_only"] is True
        finally:
            harness.stopOrchestrator()
