"""GET / (the live dashboard) and GET /static/{name} (its files, app/web/static/)."""

from __future__ import annotations

from pathlib import Path

from faust.web import Request, Response, View

from app.web.params import error

STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The dashboard loads nothing from elsewhere (the machine may be offline) and runs no
# inline script, so a strict policy costs nothing.
STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of app/web/static by bare name; nothing outside it, no sub-directories."""
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        return None
    return path.read_bytes(), kind


class StaticView(View):
    async def get(self, request: Request, name: str) -> Response:
        found = static_file(name)
        if found is None:
            return error(self, 404, "no such file", name=name)
        return self.bytes(found[0], headers={"Content-Type": found[1], **STATIC_HEADERS})


class DashboardView(View):
    async def get(self, request: Request) -> Response:
        found = static_file("dashboard.html")
        if found is None:
            return error(self, 404, "dashboard not installed")
        return self.bytes(found[0], headers={"Content-Type": found[1], **STATIC_HEADERS})
