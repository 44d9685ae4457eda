# -*- test-case-name: tests.test_console -*-
"""
The operator console (CONTRACT §7): C{GET /} is its page, C{/console/…} its script,
styles and icon. They ship in this package (C{static/}) and load nothing from
elsewhere; the page reads everything it shows from the HTTP API, with the bearer
token when the hub has one. The files hold no data, so they are served without it.
"""

import hashlib
from importlib.resources import files

from twisted.web.resource import Resource

from devicehub.api.jsonio import respond

_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
}
# The page may load only its own files and talk only to this API.
_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PREFIX = b"/console/"


class _File:
    def __init__(self, name: str) -> None:
        self.body = files(__package__).joinpath("static", name).read_bytes()
        self.type = _TYPES[name.rsplit(".", 1)[1]]
        self.etag = b'"' + hashlib.sha256(self.body).hexdigest()[:20].encode() + b'"'


class Console(Resource):
    """The console's files: C{/} is C{index.html}, C{/console/NAME} the others."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.files = {b"/": _File("index.html")}
        for name in ("console.js", "console.css", "icon.svg"):
            self.files[_PREFIX + name.encode()] = _File(name)

    @staticmethod
    def serves(path: bytes) -> bool:
        """Whether C{path} is the console's (C{/} or under C{/console/})."""
        return path == b"/" or path.startswith(_PREFIX)

    def render(self, request) -> bytes:
        file = self.files.get(request.path)
        if file is None:
            return respond(request, 404, {"error": "not found"})
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return respond(request, 405, {"error": "method not allowed"})
        request.setHeader(b"Content-Security-Policy", _POLICY)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"Cache-Control", b"no-cache")  # revalidated: a new version shows at once
        request.setHeader(b"ETag", file.etag)
        if file.etag in (request.getHeader(b"if-none-match") or b"").split(b", "):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", file.type)
        return file.body
