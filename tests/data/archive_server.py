"""Test helpers: a loopback HTTP file server with Range support and fault switches, and tiny COCO dirs."""

from __future__ import annotations

import json
import random
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    """One request as the server saw it."""

    path: str
    range: str | None
    status: int
    bytes_sent: int


class ArchiveServer:
    """Serves the files under ``root`` on 127.0.0.1, recording every request.

    Fault switches (each applies to the next responses for that file name):
    ``cut_after[name] = n`` sends the full headers but only ``n`` body bytes, then drops the
    connection (once); ``corrupt[name] = k`` flips a byte in the next ``k`` bodies;
    ``unavailable[name] = k`` answers the next ``k`` requests with 503 Service Unavailable;
    ``ignore_range = True`` answers every request with 200 and the whole file, as some servers do.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.requests: list[Served] = []
        self.cut_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}
        self.ignore_range = False
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "ArchiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def requests_for(self, name: str) -> list[Served]:
        return [r for r in self.requests if r.path.rsplit("/", 1)[-1] == name]

    def record(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)

    def take(self, switches: dict[str, int], name: str) -> int | None:
        """The switch value for ``name`` (consuming a use of ``corrupt``/``cut_after``), or None."""
        with self._lock:
            value = switches.get(name)
            if value is None:
                return None
            if switches is self.cut_after:
                del switches[name]
            else:
                switches[name] = value - 1
                if switches[name] <= 0:
                    del switches[name]
            return value


def _handler_for(server: ArchiveServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            name = path.rsplit("/", 1)[-1]
            file = server.root / path.lstrip("/")
            range_header = self.headers.get("Range")
            if not file.is_file():
                self._reply(path, range_header, 404, b"not found")
                return
            if server.take(server.unavailable, name):
                self._reply(path, range_header, 503, b"busy")
                return
            data = file.read_bytes()
            if server.take(server.corrupt, name):
                data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
            start = _range_start(range_header) if range_header and not server.ignore_range else None
            if start is not None and start >= len(data):
                self._reply(path, range_header, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            headers = {"Content-Type": "application/zip", "Accept-Ranges": "bytes"}
            if start is not None:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start or 0:]
            self._reply(path, range_header, 206 if start is not None else 200, body, headers,
                        cut_after=server.take(server.cut_after, name))

        def _reply(self, path, range_header, status, body, headers=None, cut_after=None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))  # the full length, even when cut below
            self.end_headers()
            sent = body if cut_after is None else body[:cut_after]
            # Recorded before the body goes out: once the client has read it, the test may look at
            # the record straight away, before this handler thread would have got to it.
            server.record(Served(path, range_header, status, len(sent)))
            self.wfile.write(sent)
            self.wfile.flush()
            if cut_after is not None:
                self.close_connection = True

    return Handler


def _range_start(header: str) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", header.strip())
    return int(match.group(1)) if match else None


def make_coco_dir(root: str | os.PathLike, *, seed: int = 0, images_per_split: int = 3, image_bytes: int = 20_000) -> Path:
    """A tiny COCO-layout dir (random bytes stand in for JPEGs: the downloader never decodes them)."""
    root = Path(root)
    rng = random.Random(seed)
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True, exist_ok=True)
        images = []
        for i in range(images_per_split):
            file_name = f"{i + 1:012d}.jpg"
            (root / split / file_name).write_bytes(rng.randbytes(image_bytes))
            images.append({"id": i + 1, "file_name": file_name, "height": 8, "width": 8})
        (root / "annotations").mkdir(exist_ok=True)
        annotations = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(annotations))
    return root


def tree(root: str | os.PathLike) -> dict[str, bytes]:
    """``{relative path: content}`` of every file under ``root``, ignoring hidden top-level state."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).parts[0].startswith(".")}
