"""What a caller may ask the service to read: URLs to public hosts (or hosts the operator allowed), files under
--allow-dir folders, in allow-listed container formats, within a frame size."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from vidparse.service.errors import ApiError
from vidparse.stages.source import InputLimits, malformed_url

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
# FFmpeg demuxers a file, an upload or a URL may use: never hls or concat (a playlist names other files and
# hosts), nor image sequences or devices.
VIDEO_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "h264", "hevc")
URL_FORMATS = (*VIDEO_FORMATS, "rtsp", "mpjpeg")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]  # IPv4 or IPv6


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are an IPv4 address


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 (2002::/16)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_refusal(address: IpAddress) -> str | None:
    """Why a URL may not reach ``address`` without --allow-private (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address) and (inside := embedded_ipv4(address)) is not None:
        address = inside
    for refused, kind in ((address.is_loopback, "loopback"), (address.is_link_local, "link-local"),
                          (address.is_unspecified, "unspecified"), (address.is_multicast, "multicast"),
                          (address.is_private, "private"), (not address.is_global, "non-public")):
        if refused:
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
    return None


@dataclass(frozen=True)
class UrlPolicy:
    allow_hosts: frozenset[str] = frozenset()  # names or addresses URLs may name whatever they resolve to
    allow_private: bool = False  # any address, private, loopback and link-local included

    @classmethod
    def allowing(cls, hosts: Iterable[str], private: bool) -> UrlPolicy:
        """The policy of --allow-host (as a URL spells the host: ``[::1]`` or ``::1``, any case) and --allow-private."""
        return cls(frozenset(host.strip("[]").lower() for host in hosts), private)

    def check(self, url: str, resolver: Resolver = resolve) -> str:
        """``url``, when a job or stream may read it; else an `ApiError` that says why (400, or 403 for a host
        the policy refuses). Names are resolved, and every address they resolve to must be allowed."""
        if not url:
            raise ApiError(400, "no URL given", "give the stream's address, such as rtsp://camera.example/live")
        if any(not 0x21 <= ord(c) <= 0x7E for c in url):
            raise ApiError(400, "a URL must be printable ASCII without spaces", "percent-encode other characters")
        if malformed := malformed_url(url):
            raise ApiError(400, f"the URL is not well formed: {malformed}",
                           "scheme://host[:port]/path, IPv6 hosts in [brackets]")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ApiError(400, f"URL scheme '{scheme}' is not allowed", "use rtsp, rtsps, http or https")
        host, port = parts.hostname, parts.port
        assert host, "malformed_url refuses an rtsp or http URL that names no host"
        if self.allow_private or host in self.allow_hosts:
            return url
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            addresses = [literal] if literal else [ipaddress.ip_address(a.split("%")[0])
                                                   for a in resolver(host, port or 0)]
        except OSError as exc:
            raise ApiError(400, f"cannot resolve the host '{host}'", "check the URL") from exc
        for address in addresses:
            refusal = address_refusal(address)
            if refusal:
                raise ApiError(403, f"the host '{host}' is {refusal}", "start the server with --allow-host "
                               f"{host} (or --allow-private) to let jobs and streams reach it")
        return url


@dataclass(frozen=True)
class InputPolicy:
    urls: UrlPolicy
    allow_dirs: tuple[Path, ...] = field(default_factory=tuple)
    max_video_pixels: int | None = None

    def file_limits(self) -> InputLimits:
        return InputLimits(formats=VIDEO_FORMATS, protocols=("file",), max_pixels=self.max_video_pixels)

    def url_limits(self) -> InputLimits:
        """A URL's redirects are not followed: each host is checked before FFmpeg connects, a redirect's never."""
        return InputLimits(formats=URL_FORMATS, max_pixels=self.max_video_pixels, follow_redirects=False)

    def limits_for(self, input_url: str) -> InputLimits:
        return self.url_limits() if "://" in input_url else self.file_limits()

    def check(self, text: str) -> str:
        """A URL the policy allows, or a file inside an --allow-dir folder (resolved, links followed)."""
        if "\x00" in text:
            raise ApiError(400, "the input holds a NUL character", "give a path or a URL")
        if "://" in text:
            return self.urls.check(text)
        path = Path(text).resolve()
        if not any(path.is_relative_to(folder.resolve()) for folder in self.allow_dirs):
            raise ApiError(403, "that path is outside the allowed folders",
                           "start the server with --allow-dir FOLDER, or upload the file")
        try:
            found, folder = path.is_file(), path.is_dir()
        except OSError:  # a name too long, say
            found = folder = False
        if folder:
            raise ApiError(400, "that path is a folder", "give one video file in it")
        if not found:
            raise ApiError(400, "no such file in the allowed folders", "check the path")
        return str(path)
