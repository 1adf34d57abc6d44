"""Join a video's segment files into one output without re-encoding: packets copied, shifted to the segment's
time, and the input's audio copied alongside, as `vidparse run` writes it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from vidparse.errors import BadOutputError
from vidparse.stages.sink import CONTAINERS, AudioCopy, container_options, move_packet


def join_segments(parts: list[tuple[Path, Fraction]], output: Path, audio_from: str | None,
                  origin: Fraction = Fraction(0)) -> None:
    """``parts``: each segment file and the time of its first frame from the first segment's, in order. Every
    segment starts with a keyframe (a fresh encoder), so the packets concatenate as they are. ``origin``: the first
    frame's time on the input's clock, where the joined video starts at 0 and the audio copied from ``audio_from``
    moves with it (a transport stream starts at 1.4 s or anywhere: its audio was that much late). Written beside
    ``output`` and renamed into place: a crash never leaves a half-joined file under the output's name."""
    staging = output.with_name(f".{output.name}.joining")
    fmt = CONTAINERS[output.suffix.lower()]
    try:
        with av.open(str(staging), "w", format=fmt, options=container_options(fmt, fragmented=False)) as target:
            video = None
            audio = None
            for path, offset in parts:
                with av.open(str(path)) as source:
                    stream = source.streams.video[0]
                    if video is None:
                        video = target.add_stream_from_template(stream)
                        audio = AudioCopy(audio_from, target, float(origin)) if audio_from else None
                    for packet in source.demux(stream):
                        if packet.dts is None:
                            continue
                        move_packet(packet, offset)
                        packet.stream = video
                        target.mux(packet)
                        if audio is not None:
                            audio.copy_until(float(Fraction(packet.pts) * packet.time_base + origin))
            if audio is not None:
                audio.finish(float("inf"))  # a re-encoded track's last samples are in its encoder until flushed
                audio.close()
        staging.replace(output)
    except (av.error.FFmpegError, OSError) as exc:
        staging.unlink(missing_ok=True)
        raise BadOutputError(f"joining the segments of {output} failed: {getattr(exc, 'strerror', None) or exc}",
                             hint="check free disk space and that the output folder is writable") from exc
