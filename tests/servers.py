"""Local HTTP servers on 127.0.0.1 for exercising the real download code without the internet.

* :class:`HubServer` answers the Hugging Face Hub's file-resolve protocol that ``hf_hub_download`` uses:
  ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{filename}`` with the ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` headers, branch names resolved to commits, and the Hub's error codes for unknown
  repositories, revisions and files.
* :class:`ReleaseServer` serves release assets the way GitHub does: the asset URL redirects (302) to a
  storage URL that returns the bytes.

Both record every request, so tests can assert that a warm cache touches no network.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class _Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802
                outer.requests.append(("HEAD", self.path))
                outer.handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(("GET", self.path))
                outer.handle(self, head=False)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _ in self.requests if method is None or m == method)

    @staticmethod
    def send(handler, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, head: bool = False,
             sized: bool = True) -> None:
        """Answer with ``body``; ``sized=False`` leaves out Content-Length (the body ends when the
        connection closes, as HTTP/1.0 allows)."""
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        if sized:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def handle(self, handler, head: bool) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class HubServer(_Server):
    """repos: {repo_id: {commit_sha: {filename: bytes}}}; branches: {repo_id: {branch: commit_sha}}."""

    def __init__(self, repos: dict[str, dict[str, dict[str, bytes]]], branches: dict[str, dict[str, str]] | None = None):
        super().__init__()
        self.repos = repos
        self.branches = branches or {}

    def handle(self, handler, head: bool) -> None:
        parts = unquote(handler.path.split("?", 1)[0]).strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self.send(handler, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in self.repos:
            return self.send(handler, 404, b"Repository not found",
                             {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, head)
        commit = self.branches.get(repo_id, {}).get(revision, revision)
        files = self.repos[repo_id].get(commit)
        if files is None:
            return self.send(handler, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound",
                                                               "X-Error-Message": "Invalid rev id"}, head)
        if filename not in files:
            return self.send(handler, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound",
                                                                "X-Error-Message": "Entry not found",
                                                                "X-Repo-Commit": commit}, head)
        body = files[filename]
        etag = hashlib.sha256(body).hexdigest()
        self.send(handler, 200, body, {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                                       "Content-Type": "application/octet-stream"}, head)


class ReleaseServer(_Server):
    """assets: {"/owner/repo/releases/download/tag/name": bytes}; asset URLs redirect to /storage/...
    ``unsized``: asset paths whose bytes are sent without a Content-Length header. ``delay``: seconds
    the storage URL waits before answering (a slow server, so that concurrent downloads overlap)."""

    def __init__(self, assets: dict[str, bytes], unsized: frozenset[str] = frozenset(), delay: float = 0.0):
        super().__init__()
        self.assets = assets
        self.unsized = unsized
        self.delay = delay

    def handle(self, handler, head: bool) -> None:
        path = unquote(handler.path.split("?", 1)[0])
        if path.startswith("/storage/"):
            time.sleep(self.delay)
            body = self.assets.get(path[len("/storage"):])
            if body is None:
                return self.send(handler, 404, b"Not Found", head=head)
            return self.send(handler, 200, body, {"Content-Type": "application/octet-stream"}, head,
                             sized=path[len("/storage"):] not in self.unsized)
        if path in self.assets:
            return self.send(handler, 302, b"", {"Location": f"{self.url}/storage{path}"}, head)
        return self.send(handler, 404, b"Not Found", head=head)
