"""A real RTSP server for tests: loops an H.264 clip forever at its frame rate, on 127.0.0.1 only.

Run with the system Python (GStreamer's GObject bindings are not in the venv):

    /usr/bin/python3 tests/rtsp_server.py CLIP.mp4 --port 0 --fps 25

The clip's H.264 access units are read once, then pushed into an RTSP media in a loop, timestamped by the
running time they are due at (like a camera). Prints ``READY rtsp://127.0.0.1:PORT/PATH`` once listening;
``--port 0`` picks a free port. Packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}.

Faults of real cameras, for connection tests:
``--join-at N`` starts each new session at access unit N, like a camera joined between keyframes: the SDP then
carries no SPS/PPS (the frame size comes with the next keyframe); add ``--sps-on-join`` to send the parameter sets
first (the size is known, the picture waits for the keyframe). ``--user NAME:PASSWORD`` asks for Basic
credentials (401 without them or with wrong ones). ``--audio-only`` serves a stream without video.
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


def parameter_sets(unit: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex B access unit, with their start codes."""
    nals = [nal for nal in unit.split(b"\x00\x00\x01") if nal]
    return b"".join(b"\x00\x00\x00\x01" + nal.rstrip(b"\x00") for nal in nals if nal[0] & 0x1F in (7, 8))


class LoopingFeed:
    """Pushes the access units into one media's appsrc at ``fps``, from the ``join_at``-th, forever.

    Starts when the media first asks for data (the client pressed play), so nothing queues up before and
    leaves in a burst; each unit is stamped with the running time it is due at, as a camera stamps frames.
    """

    def __init__(self, appsrc: Gst.Element, units: list[bytes], fps: int, join_at: int, sps_on_join: bool) -> None:
        self.appsrc = appsrc
        self.units = units[join_at:] + units[:join_at]
        if sps_on_join:
            self.units[0] = parameter_sets(units[0]) + self.units[0]
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


def require_credentials(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory,
                        user: str) -> None:
    """Basic authentication: ``user`` (NAME:PASSWORD) may play; anyone else gets 401 (so does a user without
    permission: gst-rtsp-server answers no 403)."""
    auth = GstRtspServer.RTSPAuth()
    name, password = user.split(":", 1)
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(name, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    for permission in (GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT):
        permissions.add_permission_for_role("viewer", permission, True)
    factory.set_permissions(permissions)


def serve(units: list[bytes], args: argparse.Namespace) -> None:
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.audio_only:
        factory.set_launch("( audiotestsrc is-live=true ! audioconvert ! rtpL16pay name=pay0 pt=96 )")
    else:  # no parser before the payloader: the SDP carries the parameter sets only if the first unit does
        factory.set_launch(f"( appsrc name=src is-live=true format=time caps={AU_CAPS},framerate={args.fps}/1 "
                           "! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(True)

    def configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        feed = LoopingFeed(media.get_element().get_by_name("src"), units, args.fps, args.join_at, args.sps_on_join)
        media.connect("unprepared", lambda _media: feed.stopped.set())

    if not args.audio_only:
        factory.connect("media-configure", configure)
    if args.user:
        require_credentials(server, factory, args.user)
    server.get_mount_points().add_factory(f"/{args.path}", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on {HOST}:{args.port}")
    print(f"READY rtsp://{HOST}:{server.get_bound_port()}/{args.path}", flush=True)
    GLib.MainLoop().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a video file holding H.264")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--fps", type=int, default=25, help="frames sent per second")
    parser.add_argument("--path", default="live", help="mount point: rtsp://127.0.0.1:PORT/PATH")
    parser.add_argument("--join-at", type=int, default=0, help="access unit each new session starts at")
    parser.add_argument("--sps-on-join", action="store_true", help="send the SPS/PPS before the first unit")
    parser.add_argument("--user", help="NAME:PASSWORD that may play (Basic authentication)")
    parser.add_argument("--audio-only", action="store_true", help="serve a stream without video")
    args = parser.parse_args()
    Gst.init(None)
    serve(read_access_units(args.clip), args)


if __name__ == "__main__":
    main()
