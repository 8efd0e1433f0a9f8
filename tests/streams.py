"""A local HTTP server on 127.0.0.1 that plays a live MPEG-TS stream, for testing stream reading
without the internet.

``GET /live.ts`` answers with an endless (close-delimited, HTTP/1.0) MPEG-TS stream: a short loop of
H.264 frames encoded once, re-muxed per connection with timestamps that keep increasing, paced at
``speed`` times real time after an initial burst (as live servers send the latest group of pictures at
once). Controls: :meth:`StreamServer.drop_after` closes connections mid-stream, :meth:`StreamServer.stall`
keeps them open but silent. Other paths serve fixed bodies (:meth:`StreamServer.add`): images, HTML
pages, files (with Range support), HTTP errors and slow ("dripping") bodies.

Every loop is bounded: a connection lasts at most ``max_seconds``, and closing the server ends them all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from media import encode_packets, pattern_frames


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    sized: bool = True  # False: no Content-Length, the body ends when the connection closes
    drip: float | None = None  # seconds between bytes (a slow server); None sends at once


class _SocketWriter:
    """The file-like object PyAV muxes into: writes go to the client's socket."""

    def __init__(self, wfile) -> None:
        self.wfile = wfile
        self.sent = 0

    def write(self, data) -> int:
        self.wfile.write(data)
        self.sent += len(data)
        return len(data)

    def flush(self) -> None:
        self.wfile.flush()


class StreamServer:
    """``with StreamServer() as server: server.url + "/live.ts"``.

    fps, loop_frames, gop: the looped H.264 material (``loop_frames`` frames of 160x120, a key frame
    every ``gop``). speed: pacing, times real time. burst: seconds of stream sent at once on connect.
    restart_timestamps: each connection starts its timestamps at 0 (like a new RTSP session) instead of
    continuing the server's live timeline. max_seconds: the longest any connection is served.
    """

    def __init__(self, *, fps: int = 10, loop_frames: int = 20, gop: int = 5, speed: float = 1.0,
                 burst: float = 0.5, restart_timestamps: bool = False, max_seconds: float = 30.0) -> None:
        self.fps, self.gop, self.speed, self.burst = fps, gop, speed, burst
        self.restart_timestamps = restart_timestamps
        self.max_seconds = max_seconds
        self.packets = encode_packets(pattern_frames(loop_frames), fps, gop)
        self.routes: dict[str, Route] = {}
        self.connections = 0  # GET /live.ts requests
        self.requests: list[str] = []
        self._drops: list[tuple[float | None, int | None]] = []
        self._generation = 0
        self._stalled = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._get(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def live_url(self) -> str:
        return self.url + "/live.ts"

    def __enter__(self):  # -> Self
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    # -- controls --------------------------------------------------------------------------------
    def add(self, path: str, body: bytes = b"", content_type: str = "application/octet-stream", *,
            status: int = 200, sized: bool = True, drip: float | None = None) -> str:
        """Serve ``body`` at ``path``; returns the full URL."""
        self.routes[path] = Route(status, body, content_type, sized, drip)
        return self.url + path

    def drop_after(self, seconds: float | None = None, nbytes: int | None = None, count: int = 1) -> None:
        """The next ``count`` connections to the stream are closed after ``seconds`` of streaming (wall
        time) or ``nbytes`` bytes; later connections are served normally."""
        with self._lock:
            self._drops.extend([(seconds, nbytes)] * count)

    def drop(self) -> None:
        """Close the stream connections open now (at their next packet); new ones are served."""
        with self._lock:
            self._generation += 1

    def stall(self) -> None:
        """From now on the stream sends nothing more (open connections stay open, new ones get the
        HTTP headers and then silence) until :meth:`resume`."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    # -- serving ---------------------------------------------------------------------------------
    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append(path)
        if path == "/live.ts":
            return self._stream(handler)
        route = self.routes.get(path)
        if route is None:
            route = Route(404, b"<html><body>Not Found</body></html>", "text/html")
        try:
            self._send(handler, route)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, handler: BaseHTTPRequestHandler, route: Route) -> None:
        body, status = route.body, route.status
        start = 0
        ranged = handler.headers.get("Range", "")
        if route.sized and status == 200 and ranged.startswith("bytes="):
            first = ranged[len("bytes="):].split("-", 1)[0]
            start = min(int(first or 0), len(body))
            status = 206
        handler.send_response(status)
        handler.send_header("Content-Type", route.content_type)
        if route.sized:
            handler.send_header("Content-Length", str(len(body) - start))
            handler.send_header("Accept-Ranges", "bytes")
            if status == 206:
                handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        handler.end_headers()
        if route.drip is None:
            handler.wfile.write(body[start:])
            return
        deadline = time.monotonic() + self.max_seconds
        for i in range(start, len(body)):
            if self._closing.is_set() or time.monotonic() > deadline:
                return
            handler.wfile.write(body[i:i + 1])
            handler.wfile.flush()
            self._closing.wait(route.drip)

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        import av

        with self._lock:
            self.connections += 1
            drop = self._drops.pop(0) if self._drops else (None, None)
            generation = self._generation
        handler.protocol_version = "HTTP/1.0"
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp2t")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.wfile.flush()
        writer = _SocketWriter(handler.wfile)
        began = time.monotonic()
        n = len(self.packets)
        # start at the key frame at or before the live position of the server's timeline
        live_frame = int((began - self._started) * self.fps * self.speed)
        first = 0 if self.restart_timestamps else live_frame - live_frame % self.gop
        tb = Fraction(1, self.fps)
        try:
            with av.open(writer, "w", format="mpegts", options={"flush_packets": "1"}) as out:
                stream = out.add_mux_stream("h264", rate=self.fps, width=160, height=120)
                stream.time_base = Fraction(1, 90000)
                for k in range(first, first + int(self.max_seconds * self.fps * self.speed) + 1):
                    elapsed = time.monotonic() - began
                    if self._closing.is_set() or elapsed > self.max_seconds:
                        return
                    if (drop[0] is not None and elapsed >= drop[0]) or (drop[1] is not None and writer.sent >= drop[1]) \
                            or generation != self._generation:
                        return
                    if self._stalled.is_set():
                        # silent but open: wait (bounded) for shutdown or resume
                        while self._stalled.is_set() and not self._closing.is_set() \
                                and time.monotonic() - began < self.max_seconds:
                            self._closing.wait(0.05)
                        continue
                    # pace: frame k goes out (k - first) / (fps * speed) seconds after connecting, minus the burst
                    due = (k - first) / (self.fps * self.speed) - self.burst
                    if due > elapsed:
                        self._closing.wait(due - elapsed)
                    data, _, key = self.packets[k % n]
                    packet = av.Packet(data)
                    packet.stream = stream
                    packet.time_base = tb
                    # no B-frames, so packets[i] has pts i; on the timeline frame k shows picture k % n
                    packet.pts = packet.dts = k
                    packet.is_keyframe = key
                    out.mux(packet)
        except Exception:  # noqa: BLE001 - the client went away (PyAV re-raises it from its write callback)
            return
