"""A small Hugging Face Hub look-alike for tests: the endpoints `huggingface_hub` calls to push and download a repo.

It runs a standard-library `ThreadingHTTPServer` on 127.0.0.1 (a free port) in a daemon thread and keeps every repo in
memory: branches pointing at commits, commits holding a full file listing (path -> bytes and oids). It serves

- `POST /api/repos/create`, `POST /api/validate-yaml`, `POST /api/{type}s/{repo}/branch/{branch}`;
- `POST /api/{type}s/{repo}/preupload/{rev}`: files matching `lfs_patterns` get `uploadMode: "lfs"`;
- the legacy LFS protocol: `POST /{repo}.git/info/lfs/objects/batch`, then `PUT` to a signed URL and a verify call;
- the Xet protocol: `GET /api/{type}s/{repo}/xet-write-token/{rev}` answers a `local://` CAS folder, where `hf_xet`
  writes xorbs and shards itself. At commit time the server reads the shards (their file entries carry each file's
  Xet hash and sha256), maps the commit's `lfsFile` oids to Xet hashes, rebuilds the files from the CAS with `hf_xet`
  and checks their sha256. Downloads of those files then answer `X-Xet-Hash` and a `xet-auth` link, so the client
  downloads them through `hf_xet` from the same CAS (`GET .../xet-read-token/{rev}`), as it does from the real Hub;
- `POST /api/{type}s/{repo}/commit/{rev}` (NDJSON: `header`, `file`, `lfsFile`, `deletedFile`, `deletedFolder`);
- `GET /api/{type}s/{repo}[/revision/{rev}]`, `.../tree/{rev}[/{path}]`, `.../refs`, `.../commits/{rev}`,
  `POST .../paths-info/{rev}`, and `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with `ETag` and `X-Repo-Commit`.

Auth: one valid token (`HubServer.token`). A request with any other `Authorization: Bearer` token gets 401, as does a
write without a token; a private repo reads as "not found" without the token. Faults: `fail_next("commit", 500)`
makes the next request of that kind fail once. `requests` logs `(method, path)` of every request; `unhandled` the ones
that matched no route (a test can assert it stays empty); `bodies` the raw body of every request.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces"}
_TYPE_OF_PLURAL = {plural: singular for singular, plural in REPO_TYPES.items()}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
_TOKEN_LIFETIME_S = 3600


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    path: str
    data: bytes | None  # None until a Xet file has been rebuilt from the CAS
    size: int
    sha256: str
    lfs: bool
    xet_hash: str | None = None

    @property
    def oid(self) -> str:
        """The git oid: of the content for a regular file, of the LFS pointer for an LFS file."""
        if self.lfs:
            return git_blob_oid(lfs_pointer(self.sha256, self.size))
        return git_blob_oid(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    description: str
    files: dict[str, StoredFile]
    date: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _COMMIT_RE.match(revision):
            return self.commits.get(revision)
        return None


class HubError(Exception):
    """An error answer: HTTP status, message, and the `X-Error-Code` the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _xet_hex(raw: bytes) -> str:
    """A 32-byte Xet hash as Xet prints it: four little-endian u64 words, each as 16 hex digits."""
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


# MDB shard layout (xet-core `mdb_shard`): a 48-byte header (32-byte magic, u64 version, u64 footer size), then the
# file-info section: per file a 48-byte header (file hash, u32 flags, u32 number of segments, 8 spare bytes), one
# 48-byte entry per segment (xorb hash, u32 flags, u32 unpacked bytes, u32 chunk start, u32 chunk end), one 48-byte
# verification entry per segment when flag bit 31 is set, one 48-byte metadata extension (the sha256) when bit 30 is
# set. A file hash of all 0xFF bytes ends the section.
_SHARD_RECORD = 48
_FLAG_VERIFICATION = 1 << 31
_FLAG_METADATA_EXT = 1 << 30


def read_shard_file_index(shard: bytes) -> dict[str, tuple[str, int]]:
    """Maps the sha256 of every file a shard describes to `(xet_hash, size)`."""
    index: dict[str, tuple[str, int]] = {}
    pos = _SHARD_RECORD
    while pos + _SHARD_RECORD <= len(shard):
        file_hash = shard[pos : pos + 32]
        if file_hash == b"\xff" * 32:
            break
        flags, num_entries = struct.unpack_from("<II", shard, pos + 32)
        pos += _SHARD_RECORD
        size = sum(struct.unpack_from("<I", shard, pos + i * _SHARD_RECORD + 36)[0] for i in range(num_entries))
        pos += num_entries * _SHARD_RECORD
        if flags & _FLAG_VERIFICATION:
            pos += num_entries * _SHARD_RECORD
        if flags & _FLAG_METADATA_EXT:
            index[_xet_hex(shard[pos : pos + 32])] = (_xet_hex(file_hash), size)
            pos += _SHARD_RECORD
    return index


class HubServer:
    """The server and its state; use as a context manager or call `start()` / `stop()`."""

    def __init__(
        self,
        token: str = "hf_test_valid_token",
        user: str = "test-user",
        lfs_patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.model", "*.png"),
        serve_xet: bool = True,
        cas_dir: str | None = None,
    ):
        self.token = token
        self.user = user
        self.lfs_patterns = tuple(lfs_patterns)
        self.serve_xet = serve_xet
        self._tmp = None
        if cas_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hub-server-cas-")
            cas_dir = self._tmp.name
        self.cas_dir = Path(cas_dir)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, bytes]] = []  # (method, path, raw body) of every request
        self.unhandled: list[tuple[str, str]] = []
        self.xet_tokens_issued: list[str] = []  # "read" / "write", in order
        self._faults: dict[str, list[int]] = {}
        self._upload_sigs: dict[str, str] = {}  # signature -> oid of an accepted LFS PUT
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle ---------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test helpers -------------------------------------------------------------------------------------------
    def fail_next(self, kind: str, status: int = 500, times: int = 1) -> None:
        """Make the next `times` requests of `kind` fail with `status`. Kinds: create, branch, preupload, lfs-batch,
        lfs-upload, xet-token, commit, resolve, tree, info."""
        with self._lock:
            self._faults.setdefault(kind, []).extend([status] * times)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Every file of a revision, path -> bytes (Xet files rebuilt from the CAS)."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return {path: self._content(stored) for path, stored in commit.files.items()}

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Commit:
        return self.repo(repo_id, repo_type).resolve(revision)

    def every_file_ever(self) -> dict[str, bytes]:
        """Every file of every commit of every repo, `"repo_id:path"` -> bytes (the last version of each path):
        what a push published at any time, not only what the head holds."""
        found: dict[str, bytes] = {}
        for (_, repo_id), repo in self.repos.items():
            for commit in repo.commits.values():
                for path, stored in commit.files.items():
                    found[f"{repo_id}:{path}"] = self._content(stored)
        return found

    # ---- internals ----------------------------------------------------------------------------------------------
    def _take_fault(self, kind: str) -> None:
        with self._lock:
            pending = self._faults.get(kind)
            status = pending.pop(0) if pending else None
        if status is not None:
            raise HubError(status, f"Injected failure of {kind} (HTTP {status})")

    def _xet_index(self) -> dict[str, tuple[str, int]]:
        index: dict[str, tuple[str, int]] = {}
        for shard in sorted(self.cas_dir.rglob("*.mdb")):
            index.update(read_shard_file_index(shard.read_bytes()))
        return index

    def _rebuild_from_cas(self, xet_hash: str, size: int) -> bytes:
        import hf_xet

        with tempfile.TemporaryDirectory(prefix="hub-server-xet-") as tmp:
            target = Path(tmp) / "file"
            session = hf_xet.XetSession()
            with session.new_file_download_group(
                endpoint=f"local://{self.cas_dir}", token="server", token_expiry_unix_secs=int(time.time()) + 600
            ) as group:
                group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), str(target))
            return target.read_bytes()

    def _content(self, stored: StoredFile) -> bytes:
        if stored.data is None:
            stored.data = self._rebuild_from_cas(stored.xet_hash, stored.size)
        return stored.data

    def _new_commit(self, repo: Repo, parent: str | None, summary: str, description: str, files) -> Commit:
        digest = hashlib.sha1()
        digest.update(json.dumps([parent, summary, description, len(repo.commits), time.time_ns()]).encode())
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].oid}\n".encode())
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        commit = Commit(digest.hexdigest(), parent, summary, description, dict(files), date)
        repo.commits[commit.oid] = commit
        return commit


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    # ---- plumbing -----------------------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.url_path, self.query = split.path, parse_qs(split.query)
        self.hub.requests.append((method, self.url_path))
        try:
            self.body = self._read_body()
            self.hub.bodies.append((method, self.url_path, self.body))
            for route_method, pattern, handler in _ROUTES:
                match = pattern.match(self.url_path)
                if match and (route_method == method or (route_method == "GET" and method == "HEAD")):
                    handler(self, method, **match.groupdict())
                    return
            self.hub.unhandled.append((method, self.url_path))
            raise HubError(404, f"No route for {method} {self.url_path}")
        except HubError as err:
            self._send_json({"error": err.message}, status=err.status, headers=_error_headers(err), method=method)
        except Exception as err:  # a bug here must surface as a 500, not a hung client
            self._send_json({"error": f"server error: {err!r}"}, status=500, method=method)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None, method: str = "GET"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", secrets.token_hex(8))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict | None = None, method: str = "GET"):
        self._send(status, json.dumps(payload).encode(), "application/json", headers, method)

    # ---- auth and lookups ---------------------------------------------------------------------------------------
    def _auth(self, write: bool) -> bool:
        """True when the request carries the valid token; 401 for a wrong one, or for a write without one."""
        header = self.headers.get("Authorization")
        if header is not None:
            if header != f"Bearer {self.hub.token}":
                raise HubError(401, "Invalid credentials in Authorization header")
            return True
        if write:
            raise HubError(401, "You must be authenticated to do this (no token)")
        return False

    def _repo(self, plural: str, repo_id: str, write: bool = False) -> Repo:
        authed = self._auth(write)
        repo = self.hub.repos.get((_TYPE_OF_PLURAL.get(plural, plural), repo_id))
        if repo is None or (repo.private and not authed):
            raise HubError(404, f"Repository {repo_id} not found", code="RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", code="RevisionNotFound")
        return commit

    def _base(self) -> str:
        return self.hub.endpoint

    # ---- repos and branches -------------------------------------------------------------------------------------
    def create_repo(self, method):
        self._auth(write=True)
        self.hub._take_fault("create")
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        name, organization = payload["name"], payload.get("organization")
        repo_id = f"{organization or self.hub.user}/{name}"
        url = f"{self._base()}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                self._send_json({"error": "You already created this model repo", "url": url}, status=409)
                return
            # huggingface_hub 2.x sends `visibility` ("public" / "private"); older clients sent `private`.
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, repo_type, private)
            gitattributes = StoredFile(".gitattributes", _GITATTRIBUTES, len(_GITATTRIBUTES), "", lfs=False)
            gitattributes.sha256 = hashlib.sha256(_GITATTRIBUTES).hexdigest()
            first = self.hub._new_commit(repo, None, "initial commit", "", {".gitattributes": gitattributes})
            repo.branches["main"] = first.oid
            self.hub.repos[(repo_type, repo_id)] = repo
        self._send_json({"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def create_branch(self, method, plural, repo_id, branch):
        repo = self._repo(plural, repo_id, write=True)
        self.hub._take_fault("branch")
        branch = unquote(branch)
        start = self._json_body().get("startingPoint") or "main"
        with self.hub._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = self._commit(repo, start).oid
        self._send_json({})

    def validate_yaml(self, method):
        self._auth(write=False)
        content = self._json_body().get("content", "")
        errors = []
        if content.startswith("---"):
            front = content.split("\n---", 1)[0][3:]
            try:
                metadata = yaml.safe_load(front)
            except yaml.YAMLError as err:
                metadata, errors = None, [{"message": f"Invalid YAML: {err}"}]
            if not errors and not isinstance(metadata, dict):
                errors.append({"message": "metadata must be a mapping"})
            for key in ("tags", "datasets", "language", "base_model"):
                value = (metadata or {}).get(key) if isinstance(metadata, dict) else None
                if value is not None and not isinstance(value, (str, list)):
                    errors.append({"message": f'"{key}" must be a string or a list of strings'})
        self._send_json({"errors": errors, "warnings": []}, status=400 if errors else 200)

    def agent_harnesses(self, method):
        # The client's best-effort agent-detection registry: an empty one.
        self._send_json({"standardEnvVars": [], "harnesses": {}}, method=method)

    def repo_info(self, method, plural, repo_id, revision="main"):
        repo = self._repo(plural, repo_id)
        self.hub._take_fault("info")
        commit = self._commit(repo, revision)
        self._send_json(
            {
                "id": repo.repo_id,
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "tags": [],
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            },
            method=method,
        )

    def list_refs(self, method, plural, repo_id):
        repo = self._repo(plural, repo_id)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in repo.branches.items()
            if not name.startswith("refs/pr/")
        ]
        prs = [
            {"name": name, "ref": name, "targetCommit": oid}
            for name, oid in repo.branches.items()
            if name.startswith("refs/pr/")
        ]
        payload = {"branches": branches, "tags": [], "converts": []}
        if "include_prs" in self.query:
            payload["pullRequests"] = prs
        self._send_json(payload, method=method)

    def list_commits(self, method, plural, repo_id, revision):
        repo = self._repo(plural, repo_id)
        commit, history = self._commit(repo, revision), []
        while commit is not None:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.summary,
                    "message": commit.description,
                    "authors": [{"user": self.hub.user}],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send_json(history, method=method)

    # ---- listing ------------------------------------------------------------------------------------------------
    def _entry(self, stored: StoredFile) -> dict:
        entry = {"type": "file", "oid": stored.oid, "size": stored.size, "path": stored.path}
        if stored.lfs:
            pointer = lfs_pointer(stored.sha256, stored.size)
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(pointer)}
        if stored.xet_hash is not None and self.hub.serve_xet:
            entry["xetHash"] = stored.xet_hash
        return entry

    def tree(self, method, plural, repo_id, revision, path=""):
        repo = self._repo(plural, repo_id)
        self.hub._take_fault("tree")
        commit = self._commit(repo, revision)
        prefix = unquote(path or "").strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = f"{prefix}/" if prefix else ""
        if prefix and prefix not in _folders(commit.files) and prefix not in commit.files:
            raise HubError(404, f"{prefix} does not exist", code="EntryNotFound")
        entries, folders = [], set()
        for file_path in sorted(commit.files):
            if not file_path.startswith(base):
                continue
            rest = file_path[len(base) :]
            parts = rest.split("/")
            if len(parts) > 1:
                depth = len(parts) - 1 if recursive else 1
                for i in range(1, depth + 1):
                    folders.add(base + "/".join(parts[:i]))
                if not recursive:
                    continue
            entries.append(self._entry(commit.files[file_path]))
        for folder in sorted(folders):
            entries.append(_folder_entry(folder))
        self._send_json(entries, method=method)

    def paths_info(self, method, plural, repo_id, revision):
        repo = self._repo(plural, repo_id)
        commit = self._commit(repo, revision)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = self._json_body().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        if isinstance(paths, str):
            paths = [paths]
        entries = [self._entry(commit.files[p]) for p in paths if p in commit.files]
        entries += [_folder_entry(p) for p in paths if p in _folders(commit.files)]
        self._send_json(entries)

    # ---- uploads ------------------------------------------------------------------------------------------------
    def preupload(self, method, plural, repo_id, revision):
        repo = self._repo(plural, repo_id, write=True)
        self.hub._take_fault("preupload")
        commit = repo.resolve(unquote(revision))
        files = []
        for item in self._json_body().get("files", []):
            path = item["path"]
            lfs = item.get("size", 0) > 0 and any(fnmatch.fnmatch(path, p) for p in self.hub.lfs_patterns)
            existing = commit.files.get(path) if commit is not None else None
            remote_oid = None
            if existing is not None:
                remote_oid = existing.sha256 if existing.lfs else existing.oid
            files.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote_oid}
            )
        self._send_json({"files": files, "commitOid": commit.oid if commit else None})

    def lfs_batch(self, method, prefix, repo_id):
        plural = (prefix or "models/").rstrip("/")
        self._repo(plural, repo_id, write=True)
        self.hub._take_fault("lfs-batch")
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            if oid in self.hub.lfs_objects:
                objects.append({"oid": oid, "size": size})  # already present upstream: no actions
                continue
            sig = secrets.token_hex(16)
            self.hub._upload_sigs[sig] = oid
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{self._base()}/lfs-storage/{oid}?sig={sig}"},
                        "verify": {"href": f"{self._base()}/{prefix or ''}{repo_id}.git/info/lfs/objects/verify"},
                    },
                }
            )
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, method, oid):
        # A signed URL: no Authorization header, like a pre-signed storage URL.
        self.hub._take_fault("lfs-upload")
        sig = self.query.get("sig", [""])[0]
        if self.hub._upload_sigs.get(sig) != oid:
            raise HubError(403, "bad or expired upload signature")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "content does not match its oid")
        self.hub.lfs_objects[oid] = self.body
        self._send(200, b"", "text/plain", headers={"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def lfs_verify(self, method, prefix, repo_id):
        self._repo((prefix or "models/").rstrip("/"), repo_id, write=True)
        payload = self._json_body()
        data = self.hub.lfs_objects.get(payload.get("oid"))
        if data is None or len(data) != payload.get("size"):
            raise HubError(422, f"LFS object {payload.get('oid')} is missing or has the wrong size")
        self._send_json({"success": True})

    def xet_token(self, method, plural, repo_id, kind, revision=None):
        self._repo(plural, repo_id, write=(kind == "write"))
        self.hub._take_fault("xet-token")
        self.hub.xet_tokens_issued.append(kind)
        token, expiry = f"xet-{kind}-{secrets.token_hex(8)}", int(time.time()) + _TOKEN_LIFETIME_S
        cas_url = f"local://{self.hub.cas_dir}"
        headers = {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(expiry)}
        self._send_json({"accessToken": token, "exp": expiry, "casUrl": cas_url}, headers=headers, method=method)

    def commit(self, method, plural, repo_id, revision):
        repo = self._repo(plural, repo_id, write=True)
        self.hub._take_fault("commit")
        revision = unquote(revision)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        with self.hub._lock:
            create_pr = self.query.get("create_pr", ["0"])[0] == "1"
            parent = self._commit(repo, revision)
            if revision not in repo.branches and not create_pr:
                raise HubError(400, f"Cannot commit to {revision}: not a branch")
            if header.get("parentCommit") and header["parentCommit"] != parent.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            xet_index = None
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[path] = StoredFile(path, data, len(data), hashlib.sha256(data).hexdigest(), lfs=False)
                elif key == "lfsFile":
                    oid = value["oid"]
                    if oid in self.hub.lfs_objects:
                        data = self.hub.lfs_objects[oid]
                        files[path] = StoredFile(path, data, len(data), oid, lfs=True)
                        continue
                    xet_index = self.hub._xet_index() if xet_index is None else xet_index
                    if oid not in xet_index:
                        raise HubError(422, f"{path}: LFS/Xet object {oid} was never uploaded")
                    xet_hash, size = xet_index[oid]
                    if value.get("size") is not None and value["size"] != size:
                        raise HubError(422, f"{path}: size {value['size']} does not match the uploaded {size}")
                    stored = StoredFile(path, None, size, oid, lfs=True, xet_hash=xet_hash)
                    if hashlib.sha256(self.hub._content(stored)).hexdigest() != oid:
                        raise HubError(422, f"{path}: the file rebuilt from Xet storage does not match sha256 {oid}")
                    files[path] = stored
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                elif key == "deletedFolder":
                    for file_path in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                        del files[file_path]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = self.hub._new_commit(
                repo, parent.oid, header.get("summary", ""), header.get("description", ""), files
            )
            pr_url = None
            if create_pr:
                repo.num_prs += 1
                repo.branches[f"refs/pr/{repo.num_prs}"] = commit.oid
                pr_url = f"{self._base()}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/discussions/{repo.num_prs}"
            else:
                repo.branches[revision] = commit.oid
        self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._base()}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
            }
        )

    # ---- downloads ----------------------------------------------------------------------------------------------
    def resolve(self, method, prefix, repo_id, revision, path):
        repo = self._repo((prefix or "models/").rstrip("/"), repo_id)
        self.hub._take_fault("resolve")
        commit = self._commit(repo, revision)
        path = unquote(path)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(
                404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        if stored.xet_hash is not None and self.hub.serve_xet:
            refresh = f"{self._base()}/api/{REPO_TYPES[repo.repo_type]}/{repo.repo_id}/xet-read-token/{commit.oid}"
            headers.update({"X-Xet-Hash": stored.xet_hash, "Link": f'<{refresh}>; rel="xet-auth"'})
        if method == "HEAD":
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(stored.size)}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        data = self.hub._content(stored)
        status, ranged = 200, self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start_s, _, end_s = ranged[len("bytes=") :].partition("-")
            start, end = int(start_s or 0), int(end_s) if end_s else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, "application/octet-stream", headers=headers, method=method)


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _folders(files: dict) -> set[str]:
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def _error_headers(err: HubError) -> dict:
    headers = {"X-Error-Message": err.message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return headers


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_PLURAL = r"(?P<plural>models|datasets|spaces)"
_PREFIX = r"(?P<prefix>datasets/|spaces/)?"
_ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("GET", r"/api/agent-harnesses", _Handler.agent_harnesses),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/branch/(?P<branch>.+)", _Handler.create_branch),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/preupload/(?P<revision>[^/]+)", _Handler.preupload),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/commit/(?P<revision>[^/]+)", _Handler.commit),
    ("POST", rf"/api/{_PLURAL}/{_REPO}/paths-info/(?P<revision>[^/]+)", _Handler.paths_info),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/xet-(?P<kind>read|write)-token(?:/(?P<revision>[^/]+))?", _Handler.xet_token),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/revision/(?P<revision>[^/]+)", _Handler.repo_info),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/refs", _Handler.list_refs),
    ("GET", rf"/api/{_PLURAL}/{_REPO}/commits/(?P<revision>[^/]+)", _Handler.list_commits),
    ("GET", rf"/api/{_PLURAL}/{_REPO}", _Handler.repo_info),
    ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/verify", _Handler.lfs_verify),
    ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    ("GET", rf"/{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", _Handler.resolve),
]
_ROUTES = [(method, re.compile(f"^{pattern}$"), handler) for method, pattern, handler in _ROUTES]

__all__ = ["HubServer", "git_blob_oid", "read_shard_file_index"]
