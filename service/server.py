"""`vidparse serve`: the app under a real uvicorn server. SIGINT and SIGTERM stop it: new requests are refused,
open previews get a short grace, then jobs finish the frames in flight and close their MP4s (playable), streams
stop, and the process exits."""

from __future__ import annotations

import uvicorn

from vidparse.service.app import ServeSettings, create_app

GRACEFUL_S = 2  # open connections (MJPEG viewers) get this long before they are closed


def serve(settings: ServeSettings, log_level: str = "warning") -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            timeout_graceful_shutdown=GRACEFUL_S, access_log=False)
    uvicorn.Server(config).run()
