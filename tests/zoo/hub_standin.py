"""A local stand-in for the Hugging Face Hub (stdlib ThreadingHTTPServer on 127.0.0.1, port 0),
answering what ``huggingface_hub`` asks for downloads and publishing (docs/design.md section 6)."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict
from urllib.parse import unquote, urlparse


class HubStandIn:
    def __init__(self):
        # repo_id -> {"commits": {sha: {path: bytes}}, "refs": {name: sha}}
        self.repos: Dict[str, dict] = {}
        self.requests = []
        self.tags = []
        self.tamper: Dict[str, bytes] = {}  # path -> bytes served instead (same headers logic)
        self.require_token = False  # True: writes without "Authorization: Bearer" get HTTP 401
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def add_commit(self, repo_id: str, files: Dict[str, bytes]) -> str:
        repo = self.repos.setdefault(repo_id, {"commits": {}, "refs": {}})
        parent = repo["refs"].get("main")
        merged = dict(repo["commits"].get(parent, {})) if parent else {}
        merged.update(files)
        sha = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest())
                                       for k, v in merged.items())).encode()
                           + str(len(repo["commits"])).encode()).hexdigest()
        repo["commits"][sha] = merged
        repo["refs"]["main"] = sha
        return sha

    def _resolve(self, repo_id, rev):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, "RepoNotFound"
        sha = repo["refs"].get(rev, rev)
        if sha not in repo["commits"]:
            return None, "RevisionNotFound"
        return sha, None

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=None, ctype="application/json"):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, code, obj, headers=None):
                self._send(code, json.dumps(obj).encode(), headers)

            def _error(self, code, kind):
                self._json(code, {"error": kind}, {"X-Error-Code": kind})

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _file(self):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                m = re.match(r"^/(?:api/models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if not m:
                    return self._error(404, "EntryNotFound")
                repo_id, rev, fpath = m.groups()
                sha, err = hub._resolve(repo_id, rev)
                if err:
                    return self._error(404, err)
                files = hub.repos[repo_id]["commits"][sha]
                if fpath not in files:
                    return self._error(404, "EntryNotFound")
                data = hub.tamper.get(fpath, files[fpath])
                etag = hashlib.sha256(data).hexdigest()
                self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{etag}"'},
                           ctype="application/octet-stream")

            def do_HEAD(self):
                self._file()

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                m = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
                if not m:
                    return self._file()
                hub.requests.append(("GET", path))
                repo_id, kind, rev = m.groups()
                sha, err = hub._resolve(repo_id, rev)
                if err:
                    return self._error(404, err)
                files = hub.repos[repo_id]["commits"][sha]
                if kind == "revision":
                    return self._json(200, {"id": repo_id, "sha": sha, "siblings": [
                        {"rfilename": p} for p in sorted(files)]})
                return self._json(200, [{"type": "file", "path": p, "size": len(b),
                                         "oid": hashlib.sha1(b).hexdigest()}
                                        for p, b in sorted(files.items())])

            def do_POST(self):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(("POST", path))
                body = self._body()
                if hub.require_token and not (self.headers.get("Authorization") or "") \
                        .startswith("Bearer "):
                    return self._error(401, "Invalid credentials in Authorization header")
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") \
                        else req["name"]
                    if repo_id in hub.repos:
                        return self._json(409, {"error": "You already created this model repo",
                                                "url": f"{hub.endpoint}/{repo_id}"})
                    hub.repos[repo_id] = {"commits": {}, "refs": {}}
                    return self._json(200, {"url": f"{hub.endpoint}/{repo_id}"})
                if path == "/api/validate-yaml":
                    return self._json(200, {"errors": [], "warnings": []})
                m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|tag)/(.+)$", path)
                if not m:
                    return self._error(404, "EntryNotFound")
                repo_id, kind, rev = m.groups()
                if repo_id not in hub.repos:
                    return self._error(404, "RepoNotFound")
                if kind == "preupload":
                    req = json.loads(body)
                    return self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in req["files"]]})
                if kind == "commit":
                    files = {}
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(
                                item["value"]["content"])
                    sha = hub.add_commit(repo_id, files)
                    return self._json(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}",
                                            "commitOid": sha})
                req = json.loads(body)
                if any(t["tag"] == req["tag"] for t in hub.tags if t["repo"] == repo_id):
                    return self._json(409, {"error": "tag exists"})
                hub.tags.append({"repo": repo_id, "tag": req["tag"], "revision": rev})
                return self._json(200, {})

        return Handler
