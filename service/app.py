"""The FastAPI app: routes behind the request guard (Host, token, body size), the inputs' policy, and the
lifespan of the engine, the photo parser and the sweep of expired jobs."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile as FormFile
from starlette.requests import ClientDisconnect
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from vidparse.config import Config
from vidparse.errors import ConfigError
from vidparse.jobs import ParserSpec, ResolvedModels
from vidparse.service.engine import EngineHost
from vidparse.service.errors import ApiError, install_handlers
from vidparse.service.guard import GuardSettings, RequestGuard
from vidparse.service.inputs import InputPolicy, UrlPolicy
from vidparse.service.job_manager import JobManager, new_id
from vidparse.service.metrics import Metrics
from vidparse.service.photos import PhotoParser
from vidparse.service.streams import LiveStream, StreamManager
from vidparse.service.uploads import PHOTO_FORMAT_NAMES, probe_video, read_photo, save_upload

log = logging.getLogger(__name__)

BOUNDARY = "vidparse-frame"
PREVIEW_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
VIEWER_CHECK_S = 1.0  # a viewer waiting for a frame looks this often whether the server stops
SWEEP_S = 30.0  # expired jobs are looked for this often (and before each new job)


@dataclass
class ServeSettings:
    config: Config
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    data_dir: Path | None = None  # jobs' files; None: a temporary folder removed at exit
    allow_dirs: list[Path] = field(default_factory=list)  # folders JSON job inputs may name
    allow_hosts: list[str] = field(default_factory=list)  # hosts URLs may name even when private or loopback
    allow_private: bool = False  # URLs may name any host

    def check(self) -> None:
        """Refuse, before serving, what would only fail later: no token off loopback, an --allow-dir that is not a
        folder (every job naming it would get 403), a --data-dir that is a file, a port already taken."""
        if not self.token and not is_loopback(self.host):
            raise ConfigError(f"refusing to serve on {self.host} without a token",
                              hint="pass --token (clients send 'Authorization: Bearer TOKEN'), or bind to 127.0.0.1")
        for folder in self.allow_dirs:
            if not folder.is_dir():
                raise ConfigError(f"--allow-dir {folder} is not a folder" if folder.exists()
                                  else f"--allow-dir {folder} does not exist", hint="give a folder that holds videos")
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir {self.data_dir} is a file", hint="give a folder (it is made if missing)")
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a stopped server's
            try:                                                        # closing connections do not hold the port
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}",
                                  hint="another program holds the port: choose another with --port") from exc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_INPUT_CHARS = 4096


class JobRequest(BaseModel):
    # a misspelt "max_frame" is refused, not a job of the whole video; "max_frames": true or "3" is no number
    model_config = ConfigDict(extra="forbid", strict=True)

    input: str = Field(description="A file under an --allow-dir folder, or an rtsp/rtsps/http/https URL",
                       max_length=MAX_INPUT_CHARS)
    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames")


class StreamRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(description="rtsp, rtsps, http or https URL", max_length=MAX_INPUT_CHARS)
    name: str = Field("", max_length=100)


RequestBody = TypeVar("RequestBody", bound=BaseModel)


class Service:
    """What the routes share: the engine, the photo parser, jobs, streams and metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        config = settings.config
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if settings.data_dir:
            self.data_dir = settings.data_dir
        else:
            self._temporary = tempfile.TemporaryDirectory(prefix="vidparse-serve-")
            self.data_dir = Path(self._temporary.name)
        self.uploads = self.data_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.inputs = InputPolicy(UrlPolicy.allowing(settings.allow_hosts, settings.allow_private),
                                  tuple(settings.allow_dirs), config.serve.max_video_pixels)
        # a damaged model file keeps the server up: /readyz and each request say why (docs/serve.md)
        models = ResolvedModels.for_config(config, check_files=False)
        self.metrics = Metrics()
        self.engines = EngineHost(config, ParserSpec(config, models))
        self.photos = PhotoParser(config, self.engines.threads)
        self.jobs = JobManager(config, self.engines, self.data_dir, self.metrics, self.inputs)
        self.streams = StreamManager(config, self.engines, self.metrics, self.inputs)
        self.stopping = threading.Event()

    def start(self) -> None:
        self.engines.start()
        threading.Thread(target=self.photos.open, name="vidparse-photo-model", daemon=True).start()

    def stopping_soon(self) -> None:
        """The server was told to stop: open previews end now, before its grace for open connections runs out (then
        they would be cancelled, each with an error in the log)."""
        self.stopping.set()
        for live in self.streams.list():
            live.viewers.wake()

    def stop(self) -> None:
        self.stopping.set()
        self.engines.stop()
        self.photos.close()
        if self._temporary:
            self._temporary.cleanup()

    @property
    def ready(self) -> bool:
        return self.photos.ready and self.engines.running

    async def sweep(self) -> None:
        """Expire finished jobs (their TTL, the data dir's quota) for the life of the server."""
        while True:
            await asyncio.sleep(min(SWEEP_S, self.settings.config.serve.job_ttl_s / 2))
            try:
                await asyncio.to_thread(self.jobs.expire)
            except OSError as exc:
                log.warning("expiring jobs failed: %s", exc)


class ReleasedAtEnd:
    """A response that calls ``release`` once it ends, however it ends (sent, client gone, server stopping)."""

    release: Callable[[], None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            self.release()


class DownloadResponse(ReleasedAtEnd, FileResponse):
    def __init__(self, download: tuple[Path, Callable[[], None]], media_type: str,
                 filename: str | None = None) -> None:
        path, self.release = download
        super().__init__(path, media_type=media_type, filename=filename)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """Starlette's, its refusals the service's JSON errors (Starlette answers them in plain text)."""
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise ApiError(400, "malformed Range header", "send 'Range: bytes=START-END'") from exc
        except RangeNotSatisfiable as exc:
            raise ApiError(416, f"the range lies outside the file ({exc.max_size} bytes)",
                           f"ask for bytes 0 to {exc.max_size - 1}" if exc.max_size else "the file is empty: ask "
                           "without a Range",
                           headers={"Content-Range": f"bytes */{exc.max_size}"}) from exc


class PreviewResponse(ReleasedAtEnd, StreamingResponse):
    def __init__(self, parts: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self.release = release
        super().__init__(parts, media_type=PREVIEW_TYPE, headers={"Cache-Control": "no-store"})


def validated(model: type[RequestBody], body: bytes, hint: str) -> RequestBody:
    """``body`` as ``model``; JSON that is broken, undecodable or of the wrong shape is a 422 naming the first
    problem and where it is."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first: Mapping[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ApiError(422, f"invalid JSON body: {where}: {first.get('msg', 'invalid')}", hint) from exc


def unsupported_type(kind: str, hint: str) -> ApiError:
    return ApiError(415, f"unsupported content type '{kind or 'none'}'", hint)


def refuse_if_failed(live: LiveStream) -> None:
    """A failed stream has no frame to come: 409 with why, not a wait (a client obeying Retry-After would poll for
    ever) nor an empty preview."""
    if live.state == "failed":
        raise ApiError(409, f"the stream failed: {live.error}", f"remove it (DELETE /v1/streams/{live.id}) and add it "
                       "again once the camera is reachable")


def create_app(settings: ServeSettings) -> FastAPI:
    settings.check()
    service = Service(settings)
    serve = settings.config.serve
    limit_mb = serve.max_upload_mb

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        sweeper = asyncio.create_task(service.sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await asyncio.to_thread(service.stop)

    # No /docs or /redoc (they load their scripts from a CDN); /openapi.json needs the token like any route.
    app = FastAPI(title="vidparse", description="Human parsing for photos, videos and live cameras.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    install_handlers(app)
    app.add_middleware(RequestGuard, settings=GuardSettings(settings.token, limit_mb, {
        "/v1/jobs": service.jobs.no_room, "/v1/images": service.photos.no_room}))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Models are loaded and the engine runs (its workers start with the first job or stream)."""
        ready = service.ready
        error = service.photos.error
        return JSONResponse({"ready": ready, "photo_model": service.photos.ready, "engine": service.engines.running,
                             **({"error": f"the photo model cannot be loaded: {error.message}"} if error else {})},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((resources.files("vidparse.service") / "static" / "index.html").read_text())

    @app.post("/v1/images", tags=["photos"], responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def parse_image(file: Annotated[UploadFile, File(description=f"a photo: {PHOTO_FORMAT_NAMES}")],
                          format: Literal["json", "labels", "overlay"] = "json",
                          overlay: Annotated[bool, Query(description="json: also the overlay JPEG, base64")] = False
                          ) -> Response:
        """Parse one photo: persons, boxes and part pixels (json), the label PNG (labels) or an overlay JPEG.
        429 while ``serve.photo_queue`` photos wait or are parsed."""
        service.photos.check_ready()

        def parse() -> Response:
            spool = service.uploads / f"photo-{new_id()}"
            try:
                image = read_photo(save_upload(file, spool, limit_mb), serve.max_photo_pixels)
            finally:
                spool.unlink(missing_ok=True)
            parsed = service.photos.parse(image)
            service.metrics.photos.observe(parsed.seconds)
            if format == "labels":
                return Response(service.photos.labels_png(parsed), media_type="image/png")
            if format == "overlay":
                return Response(service.photos.overlay_jpeg(parsed), media_type="image/jpeg")
            return JSONResponse(service.photos.summary(parsed, with_overlay=overlay))

        return await service.photos.run(parse)

    @app.post("/v1/jobs", tags=["jobs"], status_code=202, openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                      "format": "binary"}}}},
        "application/json": {"schema": JobRequest.model_json_schema()}}}})
    async def create_job(request: Request, max_frames: Annotated[int | None, Query(ge=1)] = None) -> JSONResponse:
        """Parse a video: a multipart upload (field ``file``), or JSON ``{"input": path-or-url}``. 507 while the
        data folder is over its quota."""
        kind = request.headers.get("content-type", "").lower()  # media types are case-insensitive
        await asyncio.to_thread(service.jobs.make_room)
        if kind.startswith("multipart/form-data"):
            try:
                form = await request.form()
            except ClientDisconnect:  # a tab closed mid-upload: nobody to answer, nothing to log
                raise ApiError(400, "the upload was cut short", "send the whole file") from None
            upload = form.get("file")
            if not isinstance(upload, FormFile):
                raise ApiError(400, "no file in the upload", "send the video as the multipart field 'file'")
            with service.jobs.reserved("upload") as job:
                target = await asyncio.to_thread(save_upload, upload, job.directory / "input", limit_mb)
                await asyncio.to_thread(probe_video, target, service.inputs.file_limits())
                service.jobs.start(job, str(target), max_frames)
        elif kind.startswith("application/json"):
            body = validated(JobRequest, await request.body(),
                             'send {"input": "path-or-url"} and optionally "max_frames": a whole number >= 1')
            input_url = await asyncio.to_thread(service.inputs.check, body.input)
            if "://" not in input_url:
                await asyncio.to_thread(probe_video, Path(input_url), service.inputs.file_limits())
            with service.jobs.reserved(body.input) as job:
                service.jobs.start(job, input_url, body.max_frames or max_frames)
        else:
            raise unsupported_type(kind, "send multipart/form-data with a file, or application/json")
        return JSONResponse(job.describe(), status_code=202)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str) -> dict[str, Any]:
        """State, progress, fps and ETA."""
        return service.jobs.get(job_id).describe()

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse)
    def job_result(job_id: str) -> FileResponse:
        """The annotated MP4 (range requests: browsers seek)."""
        return DownloadResponse(service.jobs.download(job_id, "result.mp4"), "video/mp4")

    @app.get("/v1/jobs/{job_id}/masks.zip", tags=["jobs"], response_class=FileResponse)
    def job_masks(job_id: str) -> FileResponse:
        return DownloadResponse(service.jobs.download(job_id, "masks.zip"), "application/zip", f"{job_id}-masks.zip")

    @app.get("/v1/jobs/{job_id}/stats.jsonl", tags=["jobs"], response_class=FileResponse)
    def job_stats(job_id: str) -> FileResponse:
        return DownloadResponse(service.jobs.download(job_id, "stats.jsonl"), "application/x-ndjson")

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    def delete_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (what it wrote stays playable); remove a finished one."""
        return service.jobs.delete(job_id).describe()

    @app.post("/v1/streams", tags=["streams"], status_code=201, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": StreamRequest.model_json_schema()}}}})
    async def add_stream(request: Request) -> dict[str, Any]:
        """Parse a live stream; watch it at ``preview``."""
        kind = request.headers.get("content-type", "").lower()
        if not kind.startswith("application/json"):
            raise unsupported_type(kind, "send application/json")
        body = validated(StreamRequest, await request.body(), 'send {"url": "rtsp://..."} and optionally "name"')
        url = await asyncio.to_thread(service.inputs.urls.check, body.url)  # resolves the host
        return (await asyncio.to_thread(service.streams.add, url, body.name)).describe()

    @app.get("/v1/streams", tags=["streams"])
    def list_streams() -> list[dict[str, Any]]:
        """fps, latency p50/p95, dropped frames, reconnects and state of every stream."""
        return [live.describe() for live in service.streams.list()]

    @app.delete("/v1/streams/{stream_id}", tags=["streams"])
    def delete_stream(stream_id: str) -> dict[str, Any]:
        return service.streams.remove(stream_id).describe()

    @app.get("/v1/streams/{stream_id}/snapshot.jpg", tags=["streams"], response_class=Response)
    def snapshot(stream_id: str) -> Response:
        live = service.streams.get(stream_id)
        refuse_if_failed(live)
        if live.jpeg is None:
            raise ApiError(503, "no frame yet", "the stream is connecting; retry shortly", headers={"Retry-After": "1"})
        return Response(live.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/v1/streams/{stream_id}/preview.mjpg", tags=["streams"], response_class=StreamingResponse)
    async def preview(stream_id: str, request: Request) -> StreamingResponse:
        """The live annotated stream as MJPEG (multipart/x-mixed-replace): each new frame once, sent when the
        stream's writer wakes the viewer. 429 past ``serve.max_viewers`` viewers of the stream."""
        live = service.streams.get(stream_id)
        refuse_if_failed(live)
        if request.method == "HEAD":  # a viewer's headers, then the end: it takes no viewer's place
            return StreamingResponse(iter(()), media_type=PREVIEW_TYPE, headers={"Cache-Control": "no-store"})
        woken = live.viewers.join(serve.max_viewers)

        async def parts() -> AsyncIterator[bytes]:
            sent = 0
            while live.active and not service.stopping.is_set():
                if live.version != sent and live.jpeg is not None:
                    sent, data = live.version, live.jpeg
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                           .encode() + data + b"\r\n")
                    continue
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), VIEWER_CHECK_S)
                woken.clear()

        return PreviewResponse(parts(), lambda: live.viewers.leave(woken))

    # FastAPI's GET routes answer HEAD with 405 (a video player's probe, curl -I): each answers it as GET does,
    # without the body, through a HEAD route of its own that the schema does not list (one operation a route).
    for route in [route for route in app.routes if isinstance(route, APIRoute)
                  and route.methods is not None and "GET" in route.methods]:
        app.add_api_route(route.path, route.endpoint, methods=["HEAD"], response_class=route.response_class,
                          include_in_schema=False)
    return app
