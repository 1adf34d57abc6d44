"""The FastAPI app: routes, the bearer token, upload limits and the lifespan of the engine and the photo parser."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from fastapi import APIRouter, Body, Depends, FastAPI, File, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as FormFile

from vidparse.config import Config
from vidparse.errors import ConfigError
from vidparse.jobs import ParserSpec, ResolvedModels
from vidparse.service.engine import EngineHost
from vidparse.service.errors import ApiError, error_response, install_handlers
from vidparse.service.job_manager import JobManager
from vidparse.service.metrics import Metrics
from vidparse.service.photos import PhotoParser
from vidparse.service.streams import StreamManager
from vidparse.service.uploads import MB, probe_video, read_photo, save_upload, too_large

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
UPLOAD_ROUTES = ("/v1/images", "/v1/jobs")
PREVIEW_POLL_S = 0.02
BOUNDARY = "vidparse-frame"


@dataclass
class ServeSettings:
    config: Config
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    data_dir: Path | None = None  # jobs' files; None: a temporary folder removed at exit
    allow_dirs: list[Path] = field(default_factory=list)  # folders JSON job inputs may name

    def check(self) -> None:
        if not self.token and not is_loopback(self.host):
            raise ConfigError(f"refusing to serve on {self.host} without a token",
                              hint="pass --token (clients send 'Authorization: Bearer TOKEN'), or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JobRequest(BaseModel):
    input: str = Field(description="A file under an --allow-dir folder, or an rtsp/rtsps/http/https URL")
    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames")


class StreamRequest(BaseModel):
    url: str = Field(description="rtsp, rtsps, http or https URL")
    name: str = Field("", max_length=100)


class Service:
    """What the routes share: the engine, the photo parser, jobs, streams and metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        config = settings.config
        self._temporary = None if settings.data_dir else tempfile.TemporaryDirectory(prefix="vidparse-serve-")
        self.data_dir = settings.data_dir or Path(self._temporary.name)
        self.uploads = self.data_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        models = ResolvedModels.for_config(config)
        self.metrics = Metrics()
        self.engines = EngineHost(config, ParserSpec(config, models))
        self.photos = PhotoParser(config, self.engines.threads)
        self.jobs = JobManager(config, self.engines, self.data_dir, self.metrics)
        self.streams = StreamManager(config, self.engines, self.metrics)
        self.stopping = threading.Event()

    def start(self) -> None:
        self.engines.start()
        threading.Thread(target=self.photos.open, name="vidparse-photo-model", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.engines.stop()
        self.photos.close()
        if self._temporary:
            self._temporary.cleanup()

    @property
    def ready(self) -> bool:
        return self.photos.ready and self.engines.running

    def allowed_input(self, text: str) -> str:
        """A URL of an allowed scheme, or a file inside an --allow-dir folder (resolved, links followed)."""
        scheme = urlparse(text).scheme.lower()
        if "://" in text:
            if scheme not in URL_SCHEMES:
                raise ApiError(400, f"URL scheme '{scheme}' is not allowed", "use rtsp, rtsps, http or https")
            return text
        path = Path(text).resolve()
        if not any(path.is_relative_to(folder.resolve()) for folder in self.settings.allow_dirs):
            raise ApiError(403, "that path is outside the allowed folders",
                           "start the server with --allow-dir FOLDER, or upload the file")
        if not path.is_file():
            raise ApiError(400, "no such file in the allowed folders", "check the path")
        return str(path)


def _token_check(expected: str | None):
    def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "missing or wrong token", "send 'Authorization: Bearer TOKEN' (or ?token= for "
                           "the page, previews and videos)", headers={"WWW-Authenticate": "Bearer"})
    return check


def create_app(settings: ServeSettings) -> FastAPI:
    settings.check()
    service = Service(settings)
    limit_mb = settings.config.serve.max_upload_mb

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="vidparse", description="Human parsing for photos, videos and live cameras.",
                  lifespan=lifespan)
    app.state.service = service
    install_handlers(app)

    @app.middleware("http")
    async def upload_limit(request: Request, call_next: Any) -> Response:
        """Refuse a declared size past the limit before reading the body (a chunked body is counted as saved)."""
        length = request.headers.get("content-length")
        if request.method == "POST" and request.url.path in UPLOAD_ROUTES and length and length.isdigit():
            if int(length) > limit_mb * MB + 64 * 1024:  # room for the multipart headers
                error = too_large(limit_mb)
                return error_response(error.status, error.error, error.hint, {"Connection": "close"})
        return await call_next(request)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is alive (no token needed)."""
        return {"status": "ok"}

    api = APIRouter(dependencies=[Depends(_token_check(settings.token))])

    @api.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Models are loaded and the engine runs (its workers start with the first job or stream)."""
        ready = service.ready
        return JSONResponse({"ready": ready, "photo_model": service.photos.ready, "engine": service.engines.running},
                            status_code=200 if ready else 503)

    @api.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((resources.files("vidparse.service") / "static" / "index.html").read_text())

    @api.post("/v1/images", tags=["photos"], responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    def parse_image(file: Annotated[UploadFile, File(description="jpg, png, webp, bmp or tiff")],
                    format: Literal["json", "labels", "overlay"] = "json",
                    overlay: Annotated[bool, Query(description="json: also the overlay JPEG, base64")] = False
                    ) -> Response:
        """Parse one photo: persons, boxes and part pixels (json), the label PNG (labels) or an overlay JPEG."""
        if not service.photos.ready:
            raise ApiError(503, "the photo model is still loading", "retry in a few seconds (GET /readyz)",
                           headers={"Retry-After": "2"})
        with tempfile.NamedTemporaryFile(dir=service.uploads) as spool:
            image = read_photo(save_upload(file, Path(spool.name), limit_mb))
        parsed = service.photos.parse(image)
        service.metrics.photos.observe(parsed.seconds)
        if format == "labels":
            return Response(service.photos.labels_png(parsed), media_type="image/png")
        if format == "overlay":
            return Response(service.photos.overlay_jpeg(parsed), media_type="image/jpeg")
        return JSONResponse(service.photos.summary(parsed, with_overlay=overlay))

    @api.post("/v1/jobs", tags=["jobs"], status_code=202, openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                      "format": "binary"}}}},
        "application/json": {"schema": JobRequest.model_json_schema()}}}})
    async def create_job(request: Request, max_frames: Annotated[int | None, Query(ge=1)] = None) -> JSONResponse:
        """Parse a video: a multipart upload (field ``file``), or JSON ``{"input": path-or-url}``."""
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if not isinstance(upload, FormFile):
                raise ApiError(400, "no file in the upload", "send the video as the multipart field 'file'")
            job = service.jobs.reserve("upload")
            try:
                target = await asyncio.to_thread(save_upload, upload, job.directory / "input", limit_mb)
                await asyncio.to_thread(probe_video, target)
            except ApiError:
                service.jobs.forget(job)
                raise
            input_url = str(target)
        elif kind.startswith("application/json"):
            try:
                body = JobRequest.model_validate_json(await request.body())
            except ValueError as exc:
                raise ApiError(422, "invalid JSON body", 'send {"input": "path-or-url"}') from exc
            input_url = service.allowed_input(body.input)
            if "://" not in input_url:
                await asyncio.to_thread(probe_video, Path(input_url))
            max_frames = body.max_frames or max_frames
            job = service.jobs.reserve(body.input)
        else:
            raise ApiError(415, f"unsupported content type '{kind or 'none'}'",
                           "send multipart/form-data with a file, or application/json")
        service.jobs.start(job, input_url, max_frames)
        return JSONResponse(job.describe(), status_code=202)

    @api.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str) -> dict[str, Any]:
        """State, progress, fps and ETA."""
        return service.jobs.get(job_id).describe()

    @api.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse)
    def job_result(job_id: str) -> FileResponse:
        """The annotated MP4 (range requests: browsers seek)."""
        return FileResponse(service.jobs.finished_file(job_id, "result.mp4"), media_type="video/mp4")

    @api.get("/v1/jobs/{job_id}/masks.zip", tags=["jobs"], response_class=FileResponse)
    def job_masks(job_id: str) -> FileResponse:
        return FileResponse(service.jobs.finished_file(job_id, "masks.zip"), media_type="application/zip",
                            filename=f"{job_id}-masks.zip")

    @api.get("/v1/jobs/{job_id}/stats.jsonl", tags=["jobs"], response_class=FileResponse)
    def job_stats(job_id: str) -> FileResponse:
        return FileResponse(service.jobs.finished_file(job_id, "stats.jsonl"), media_type="application/x-ndjson")

    @api.delete("/v1/jobs/{job_id}", tags=["jobs"])
    def delete_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (what it wrote stays playable); remove a finished one."""
        return service.jobs.delete(job_id).describe()

    @api.post("/v1/streams", tags=["streams"], status_code=201)
    def add_stream(body: Annotated[StreamRequest, Body()]) -> dict[str, Any]:
        """Parse a live stream; watch it at ``preview``."""
        scheme = urlparse(body.url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ApiError(400, f"'{body.url}' is not a stream URL", "use rtsp, rtsps, http or https")
        return service.streams.add(body.url, body.name).describe()

    @api.get("/v1/streams", tags=["streams"])
    def list_streams() -> list[dict[str, Any]]:
        """fps, latency p50/p95, dropped frames, reconnects and state of every stream."""
        return [live.describe() for live in service.streams.list()]

    @api.delete("/v1/streams/{stream_id}", tags=["streams"])
    def delete_stream(stream_id: str) -> dict[str, Any]:
        return service.streams.remove(stream_id).describe()

    @api.get("/v1/streams/{stream_id}/snapshot.jpg", tags=["streams"], response_class=Response)
    def snapshot(stream_id: str) -> Response:
        live = service.streams.get(stream_id)
        if live.jpeg is None:
            raise ApiError(503, "no frame yet", "the stream is connecting; retry shortly", headers={"Retry-After": "1"})
        return Response(live.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @api.get("/v1/streams/{stream_id}/preview.mjpg", tags=["streams"], response_class=StreamingResponse)
    async def preview(stream_id: str) -> StreamingResponse:
        """The live annotated stream as MJPEG (multipart/x-mixed-replace): each new frame once."""
        live = service.streams.get(stream_id)

        async def parts() -> AsyncIterator[bytes]:
            sent = 0
            while live.active and not service.stopping.is_set():
                if live.version != sent and live.jpeg is not None:
                    sent, data = live.version, live.jpeg
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                           .encode() + data + b"\r\n")
                else:
                    await asyncio.sleep(PREVIEW_POLL_S)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    app.include_router(api)
    return app
