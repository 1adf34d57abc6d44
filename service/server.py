"""`vidparse serve`: the app under a real uvicorn server. SIGINT and SIGTERM stop it: new requests are refused,
open previews get a short grace, then jobs finish the frames in flight and close their MP4s (playable), streams
stop, and the process exits. No log line shows a URL's credentials."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from vidparse.service.app import ServeSettings, Service, create_app
from vidparse.stages.source import without_credentials

GRACEFUL_S = 2  # open connections (MJPEG viewers) get this long before they are closed
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")  # those with handlers: the root (the CLI's), uvicorn's


class HideCredentials(logging.Filter):
    """Takes ``user:password@`` out of every URL in a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = without_credentials(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


class _Server(uvicorn.Server):
    """uvicorn's server, telling the service as soon as a signal asks it to stop (open previews end then)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.stopping_soon()
        super().handle_exit(sig, frame)


def serve(settings: ServeSettings, log_level: str = "warning") -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=GRACEFUL_S, access_log=False)  # configures uvicorn's logging
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(HideCredentials())
    # A client's malformed multipart body is its 400 (service/errors.py), not a warning without the request in it
    for name in ("python_multipart", "multipart"):  # its name from 0.0.13 on, and before
        logging.getLogger(name).setLevel(logging.ERROR)
    server = _Server(config, app.state.service)
    # uvicorn handles SIGINT and SIGTERM; a closed terminal's SIGHUP drains and cleans up as SIGTERM does
    signal.signal(signal.SIGHUP, lambda signum, frame: server.handle_exit(signal.SIGTERM, frame))
    server.run()
