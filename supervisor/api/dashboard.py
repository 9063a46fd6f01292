"""The dashboard: ``GET /admin/`` serves the page, ``/`` redirects there, and its
script (JavaScript modules) and style are served from ``/admin/static/``.

The files are read once, when the app is built, and served from memory: a
request never touches the disk on the event loop. They are public, like any
static page: everything the page shows comes from API calls that need the
caller's role.
"""

from __future__ import annotations

from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from supervisor.api.access import public
from supervisor.api.contract import NO_CONTENT, Text, contract

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _read() -> dict[str, tuple[bytes, str]]:
    """name -> (body, media type): the page, its script's modules, its style."""
    files = {}
    for item in resources.files("supervisor.dashboard").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if suffix in _MEDIA_TYPES:
            files[item.name] = (item.read_bytes(), _MEDIA_TYPES[suffix])
    return files


_FILES = _read()

# The page loads only its own script and style and talks only to this host.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str) -> Response:
    body, media_type = _FILES[name]
    return Response(body, media_type=media_type, headers=_PAGE_HEADERS)


@public
@contract(returns=Text("text/html", "the dashboard page"))
async def page(request: Request) -> Response:
    """The dashboard: jobs, their progress, a start form, groups."""
    return _file("index.html")


@public
@contract(
    returns=Text("text/javascript", "a module of the page's script, or its style"),
    errors=(404,),
)
async def static(request: Request) -> Response:
    """The dashboard's script (app.js and the modules it imports) and style (style.css)."""
    name = request.path_params["name"]
    if name not in _FILES or name == "index.html":  # the page itself is /admin/
        raise HTTPException(404, "Not Found")
    return _file(name)


@public
@contract(responses={307: NO_CONTENT}, headers={"Location": "/admin/, the dashboard"})
async def home(request: Request) -> Response:
    """Redirects to the dashboard at /admin/."""
    return RedirectResponse("/admin/", status_code=307)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/admin/", page, methods=["GET"]),
    Route("/admin/static/{name}", static, methods=["GET"]),
]
