"""The HTTP API and the page (Starlette; served by uvicorn from ``cli.serve``).

API (pinned; ``README.md``, "Serving"):

* ``POST /jobs``: multipart form: ``content`` (a file), ``style`` (a file, repeatable), ``preset``
  and any option a job takes, named as the CLI names it without dashes, in the CLI's syntax
  (``size=64``, ``style-weight=1e3``). 201 ``{"id": ...}``; a bad request is 4xx ``{"error": ...}``
  with the CLI's message.
* ``GET /jobs/{id}``: ``status`` (queued, running, done, failed, cancelled), ``iteration``,
  ``iterations``, ``losses``, ``parts``, ``error``, ``batch`` (``{"id", "size"}``), ``config``.
* ``GET /jobs/{id}/image``: the result (PNG), or the latest preview while it runs.
* ``GET /jobs/{id}/events``: Server-Sent Events, one ``progress`` event a chunk.
* ``DELETE /jobs/{id}``: cancel. ``GET /jobs``: the newest jobs. ``GET /options``: what a job takes.
* ``GET /healthz``: 200 once the server takes jobs. ``GET /``: the page.

Safety: with a token every request carries it (``Authorization: Bearer``, or ``?token=`` where a
browser cannot set headers: ``EventSource``, ``<img>``); bodies are capped before they are read
(``Content-Length`` required) and while they are; a state-changing request from another site's
page is refused (``Origin``/``Sec-Fetch-Site``); no CORS headers are ever sent; a request names a
job by its id only, checked against the form the store gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import pathlib
import secrets
import shutil
import time
from typing import Any, AsyncIterator, Optional
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import NSTError
from ..program.presets import PRESETS
from .jobs import Limits, command_line, config_json, error_message, option_names, parse_job
from .store import FINISHED, JobStore, valid_id
from .worker import Paths, Worker

STATIC = pathlib.Path(__file__).resolve().parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """A server's limits and secrets."""

    data_dir: pathlib.Path
    token: Optional[str] = None
    max_batch: int = 4
    max_body: int = 64 * 2**20  # one request's bytes, files included
    max_styles: int = 8
    max_pending: int = 16  # a client's queued and running jobs
    limits: Limits = Limits()
    events_seconds: float = 3600.0  # how long one event stream lasts at most


def create_app(settings: Settings, network: Any, *, store: Optional[JobStore] = None) -> Starlette:
    """The ASGI app: the API, the page, and the worker (started and drained by the app's lifespan).

    ``network`` None with a ``store``: a view of jobs someone else runs (``stylize --web``: the
    page and the read-only API over the CLI run's one-job store; no worker, no new jobs).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    own = store is None
    store = store or JobStore(settings.data_dir / "jobs.sqlite3")
    paths = Paths(settings.data_dir)
    worker = None if network is None else Worker(store, paths, network, max_batch=settings.max_batch,
                                                 limits=settings.limits)
    api = _Api(settings, store, paths, worker, network)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            api.closing = True
            if worker is not None:
                worker.drain()  # stops at the next chunk boundary, after its checkpoint
                await run_in_threadpool(worker.join, 120)
            if own:
                store.close()

    routes = [
        Route("/", api.page), Route("/static/{name}", api.static), Route("/healthz", api.health),
        Route("/options", api.options), Route("/jobs", api.submit, methods=["POST"]), Route("/jobs", api.list),
        Route("/jobs/{id}", api.get), Route("/jobs/{id}", api.cancel, methods=["DELETE"]),
        Route("/jobs/{id}/image", api.image), Route("/jobs/{id}/events", api.events),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    return Guard(app, settings)  # type: ignore[return-value]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Api:
    def __init__(self, settings: Settings, store: JobStore, paths: Paths, worker: Optional[Worker],
                 network: Any) -> None:
        self.settings, self.store, self.paths, self.worker, self.network = settings, store, paths, worker, network
        self.closing = False
        self.streams = 0  # event streams open now

    async def page(self, request: Request) -> Response:
        html = (STATIC / "index.html").read_text()
        token = request.query_params.get("token")
        if self.settings.token and token:  # (checked by Guard) the page's own files need it too
            for name in PAGE_FILES:
                html = html.replace(f"/static/{name}", f"/static/{name}?token={quote(token, safe='')}")
        return HTMLResponse(html)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PAGE_FILES:  # a fixed list: no path from a request reaches the filesystem
            return _error(404, "no such file")
        return Response((STATIC / name).read_bytes(), media_type=PAGE_FILES[name])

    async def health(self, request: Request) -> Response:
        if self.worker is None:
            return JSONResponse({"ok": True, "view": "one nst-jax stylize run (--web)", "arch": "", "max_batch": 1})
        if self.closing or not self.worker.is_alive():
            return _error(503, "not taking jobs")
        return JSONResponse({"ok": True, "arch": self.network.arch, "max_batch": self.settings.max_batch})

    async def options(self, request: Request) -> Response:
        return JSONResponse({"options": option_names(), "presets": sorted(PRESETS)})

    def _client(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def submit(self, request: Request) -> Response:
        if self.worker is None:
            return _error(403, "this page watches one nst-jax stylize run; start jobs with nst-jax serve")
        if self.closing:
            return _error(503, "the server is shutting down")
        client = self._client(request)
        if self.store.pending(client) >= self.settings.max_pending:
            return _error(429, f"{self.settings.max_pending} of your jobs are waiting or running; wait for one")
        try:
            form = await request.form(max_files=self.settings.max_styles + 1, max_fields=64, max_part_size=4096)
        except Exception as err:  # malformed multipart, too many parts: the parser's own message
            return _error(400, f"a multipart form is needed ({error_message(err)})")
        try:
            response, job_id, argv, job = await self._accept(form)
        finally:
            await form.close()
        if response is not None:
            return response
        self.store.add(client=client, argv=argv, key=job.key, config=config_json(job.cfg),
                       iterations=job.cfg.iterations, job_id=job_id)
        self.worker.wake.set()
        return JSONResponse({"id": job_id}, status_code=201)

    async def _accept(self, form: Any) -> tuple[Optional[Response], str, list[str], Any]:
        """The form's files saved under a new job's folder and its options parsed as the CLI parses
        them: (None, id, argv, job), or (the 4xx response, ...) with nothing left on disk."""
        content = form.getlist("content")
        styles = form.getlist("style")
        if len(content) != 1 or not isinstance(content[0], UploadFile):
            return _error(400, "content: one image file is needed"), "", [], None
        if not styles or not all(isinstance(s, UploadFile) for s in styles):
            return _error(400, "style: at least one image file is needed"), "", [], None
        options: list[tuple[str, str]] = []
        for name, value in form.multi_items():
            if name in ("content", "style"):
                continue
            if not isinstance(value, str):
                return _error(400, f"{name[:60]!r}: an option is text, not a file"), "", [], None
            options.append((name, value))
        job_id = secrets.token_hex(16)
        folder = self.paths.job(job_id)
        folder.mkdir(parents=True)
        try:
            names = [folder / "content"] + [folder / f"style-{i}" for i in range(len(styles))]
            for upload, target in zip([content[0], *styles], names):
                await run_in_threadpool(_copy, upload, target)
            argv = command_line(options, str(names[0]), [str(p) for p in names[1:]], str(self.paths.result(job_id)))
            job = await run_in_threadpool(parse_job, argv, self.settings.limits)
            if job.cfg.arch != self.network.arch:
                raise NSTError(f"arch {job.cfg.arch}: this server runs {self.network.arch}")
        except NSTError as err:
            shutil.rmtree(folder, ignore_errors=True)
            return _error(400, error_message(err)), "", [], None
        return None, job_id, argv, job

    def _job(self, request: Request) -> Optional[dict]:
        job_id = request.path_params["id"]
        return self.store.get(job_id) if valid_id(job_id) else None

    def _view(self, job: dict) -> dict:
        keys = ("id", "status", "iteration", "iterations", "losses", "parts", "error", "config", "created",
                "started", "finished")
        out = {k: job[k] for k in keys}
        out["batch"] = None if job["batch"] is None else {"id": job["batch"], "size": job["batch_size"]}
        out["options"] = job["argv"][job["argv"].index("-o") + 2:]
        return out

    async def get(self, request: Request) -> Response:
        job = self._job(request)
        return _error(404, "no such job") if job is None else JSONResponse(self._view(job))

    async def list(self, request: Request) -> Response:
        return JSONResponse({"jobs": [{k: v for k, v in self._view(j).items() if k not in ("losses", "config")}
                                      for j in self.store.jobs(100)]})

    async def cancel(self, request: Request) -> Response:
        if self.worker is None:
            return _error(403, "this page watches one nst-jax stylize run; stop it with Ctrl-C")
        job = self._job(request)
        if job is None:
            return _error(404, "no such job")
        return JSONResponse({"id": job["id"], "status": self.store.cancel(job["id"])})

    async def image(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return _error(404, "no such job")
        path = self.paths.result(job["id"]) if job["status"] == "done" else self.paths.preview(job["id"])
        if not path.is_file():
            return _error(404, "no image yet")
        return FileResponse(path, media_type="image/png", headers={"cache-control": "no-store"},
                            filename=f"nst-jax-{job['id'][:8]}.png", content_disposition_type="inline")

    async def events(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return _error(404, "no such job")
        return StreamingResponse(self._stream(request, job["id"]), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    async def _stream(self, request: Request, job_id: str) -> AsyncIterator[str]:
        """A ``progress`` event whenever the job moves, until it ends (or the client goes, the
        server closes, or ``events_seconds`` pass): bounded, never a loop that waits forever."""
        start = time.monotonic()
        self.streams += 1
        try:
            async for event in self._events(request, job_id, start):
                yield event
        finally:
            self.streams -= 1

    async def _events(self, request: Request, job_id: str, start: float) -> AsyncIterator[str]:
        seen: Any = None
        last_sent = start
        while not self.closing and time.monotonic() - start < self.settings.events_seconds:
            job = self.store.get(job_id)
            if job is None:
                return
            now = (job["status"], job["iteration"])
            if now != seen:
                seen, last_sent = now, time.monotonic()
                view = {k: v for k, v in self._view(job).items() if k != "config"}
                view["preview"] = f"/jobs/{job_id}/image?v={job['iteration']}-{job['status']}"
                yield f"event: progress\ndata: {json.dumps(view)}\n\n"
                if job["status"] in FINISHED:
                    return
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)


def _copy(upload: UploadFile, target: pathlib.Path) -> None:
    """An upload to a file the server named (created here: never an existing file, never a link)."""
    upload.file.seek(0)
    with open(target, "xb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


class Guard:
    """ASGI middleware in front of every route: the token, the body cap, cross-site refusals, and
    the security headers on every response."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY"),
               (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'")]

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *self.HEADERS])
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, secured)
        limit, seen = self.settings.max_body, 0

        async def capped() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # a body longer than its Content-Length said, or than the cap: cut off
                return {"type": "http.disconnect"}
            return message

        await self.app(scope, capped, secured)

    def _refusal(self, scope: dict) -> Optional[Response]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = self.settings.token
        if token is not None:
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not given:
                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "a token is needed (Authorization: Bearer TOKEN, or ?token=TOKEN)")
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") == "cross-site" or (
                    origin is not None and origin.split("://", 1)[-1] != headers.get("host")):
                return _error(403, "a request from another site's page is refused")
            if scope["method"] == "POST":
                length = headers.get("content-length")
                if length is None or not length.isdigit():
                    return _error(411, "a Content-Length is needed")
                if int(length) > self.settings.max_body:
                    return _error(413, f"the request is over {self.settings.max_body} bytes")
        return None
