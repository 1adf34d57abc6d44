"""A real RTSP server for tests: loops an H.264 clip forever at its frame rate, on 127.0.0.1 only.

Run with the system Python (GStreamer's GObject bindings are not in the venv):

    /usr/bin/python3 tests/rtsp_server.py CLIP.mp4 --port 0 --fps 25

The clip's H.264 access units are read once, then pushed into an RTSP media in a loop, timestamped by the
running time they are due at (like a camera). Prints ``READY rtsp://127.0.0.1:PORT/PATH`` once listening;
``--port 0`` picks a free port. Packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
AU_CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"


def read_access_units(clip: str) -> list[bytes]:
    """Every H.264 access unit of ``clip`` (any container GStreamer demuxes), in Annex B with SPS/PPS inline."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{clip}" ! parsebin ! h264parse config-interval=-1 ! {AU_CAPS} '
        "! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units = []
    while (sample := sink.emit("pull-sample")) is not None:
        buffer = sample.get_buffer()
        units.append(buffer.extract_dup(0, buffer.get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not units:
        sys.exit(f"rtsp_server: no H.264 video in {clip}")
    return units


class LoopingFeed:
    """Pushes the access units into one media's appsrc at ``fps``, from the first (a keyframe), forever.

    Starts when the media first asks for data (the client pressed play), so nothing queues up before and
    leaves in a burst; each unit is stamped with the running time it is due at, as a camera stamps frames.
    """

    def __init__(self, appsrc: Gst.Element, units: list[bytes], fps: int) -> None:
        self.appsrc = appsrc
        self.units = units
        self.period_ns = Gst.SECOND // fps
        self.stopped = threading.Event()
        self._handler = appsrc.connect("need-data", self._start)

    def _start(self, _appsrc: Gst.Element, _length: int) -> None:
        self.appsrc.disconnect(self._handler)
        threading.Thread(target=self._run, daemon=True).start()

    def _running_time(self) -> int:
        return self.appsrc.get_clock().get_time() - self.appsrc.get_base_time()

    def _run(self) -> None:
        start = self._running_time()
        count = 0
        while not self.stopped.is_set():
            buffer = Gst.Buffer.new_wrapped(self.units[count % len(self.units)])
            buffer.pts = buffer.dts = start + count * self.period_ns
            buffer.duration = self.period_ns
            if self.appsrc.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
                return
            count += 1
            self.stopped.wait(max(0, start + count * self.period_ns - self._running_time()) / Gst.SECOND)


def serve(units: list[bytes], fps: int, port: int, path: str) -> None:
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time caps={AU_CAPS},framerate={fps}/1 "
        "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)

    def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        feed = LoopingFeed(media.get_element().get_by_name("src"), units, fps)
        media.connect("unprepared", lambda _media: feed.stopped.set())

    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on {HOST}:{port}")
    print(f"READY rtsp://{HOST}:{server.get_bound_port()}/{path}", flush=True)
    GLib.MainLoop().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a video file holding H.264")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--fps", type=int, default=25, help="frames sent per second")
    parser.add_argument("--path", default="live", help="mount point: rtsp://127.0.0.1:PORT/PATH")
    args = parser.parse_args()
    Gst.init(None)
    serve(read_access_units(args.clip), args.fps, args.port, args.path)


if __name__ == "__main__":
    main()
