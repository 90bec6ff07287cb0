"""The viewer's web application (Starlette): the page, its static files and a small JSON/binary API.

Routes: ``/`` the page; ``/static/*`` its JavaScript and CSS; ``/api/meta`` sizes, levels and
chromosomes; ``/api/tile/{level}/{row}/{col}`` one tile as little-endian float16 (204 when the
tile holds no tested pair; ``?layer=effect``: the map of max |effect|); ``/api/axis.bin`` every
SNP's bp as int32; ``/api/pixel`` a pixel's statistic, SNP ranges and best pair (``?layer=effect``:
also its max |effect| and the pair that holds it); ``/api/pair`` a pair's card; ``/api/top`` the
scan's top pairs; ``/api/search`` where a SNP id, chromosome, region or gene lies. Bad requests get a 400 with
a one-line ``{"error": ...}``.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipelines.errors import EpiflowError
from pipelines.view.data import ScanMap

STATIC = Path(__file__).parent / "static"

__all__ = ["make_app", "STATIC"]


def _json(obj, status: int = 200) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers={"Cache-Control": "no-store"})


def _ints(request: Request, *names: str) -> list[int]:
    try:
        return [int(request.query_params[n]) for n in names]
    except (KeyError, ValueError):
        raise EpiflowError(f"need integer query parameters {', '.join(names)}") from None


def make_app(scan_map: ScanMap, *, preload: bool = True) -> Starlette:
    """The application serving ``scan_map``; ``preload``: once the page has drawn its first view,
    prepare the tiles and read the genotypes in the background (``POST /api/warm``; its answer
    says how far that got), so that zoom steps and hovers do not wait for them."""

    def guard(fn):
        def wrapped(request: Request):
            try:
                return fn(request)
            except EpiflowError as exc:
                return _json({"error": str(exc)}, 400)
        return wrapped

    def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def meta(request):
        m = scan_map.meta()
        m["genotypes"] = scan_map.genotypes_status()
        return _json(m)

    def tile(request):
        level, row, col = (int(request.path_params[k]) for k in ("level", "row", "col"))
        gz = "gzip" in request.headers.get("accept-encoding", "")
        data = scan_map.tile(level, row, col, gzip=gz, layer=request.query_params.get("layer", "stat"))
        headers = {"Cache-Control": "max-age=3600"}
        if data is None:
            return Response(status_code=204, headers=headers)
        if gz:      # compressed once, fast, and cached (the middleware's level 9 costs ~20 ms a tile)
            headers["Content-Encoding"] = "gzip"
        return Response(data, media_type="application/octet-stream", headers=headers)

    def axis(request):
        return Response(scan_map.axis_bp(), media_type="application/octet-stream",
                        headers={"Cache-Control": "max-age=3600"})

    def pixel(request):
        level, row, col = _ints(request, "level", "row", "col")
        return _json(scan_map.pixel(level, row, col, layer=request.query_params.get("layer", "stat")))

    def pair(request):
        i, j = _ints(request, "i", "j")
        return _json(scan_map.pair(i, j))

    def top(request):
        limit = int(request.query_params.get("limit", 200))
        return _json(scan_map.top_pairs(max(1, min(limit, 5000))))

    def search(request):
        return _json(scan_map.search(request.query_params.get("q", "")))

    started, done = threading.Event(), threading.Event()

    def warm_all():
        try:
            scan_map.warm()          # tiles in their served form, coarse levels first
            scan_map.genotypes()     # for the best pair under a pixel and the pair cards
        finally:
            done.set()

    def warm(request):
        # the page asks once its first view is drawn, so that the warming does not compete with
        # the first tiles for the interpreter
        if preload and not started.is_set():
            started.set()
            threading.Thread(target=warm_all, name="epiflow-view-warm", daemon=True).start()
        return _json({"genotypes": scan_map.genotypes_status(), "tiles_ready": scan_map.warmed,
                      "warm": "done" if done.is_set() else ("running" if started.is_set() else "idle")})

    routes = [
        Route("/", index),
        Route("/api/meta", guard(meta)),
        Route("/api/tile/{level:int}/{row:int}/{col:int}", guard(tile)),
        Route("/api/axis.bin", guard(axis)),
        Route("/api/pixel", guard(pixel)),
        Route("/api/pair", guard(pair)),
        Route("/api/top", guard(top)),
        Route("/api/search", guard(search)),
        Route("/api/warm", warm, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        if preload:     # the coarse levels the first view draws, while the browser starts
            threading.Thread(target=scan_map.warm, kwargs={"max_tiles": 64}, name="epiflow-view-first",
                             daemon=True).start()
        yield

    return Starlette(routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)],
                     lifespan=lifespan)
