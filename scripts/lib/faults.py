#!/usr/bin/env python3
"""Fault-injection suite for Wharf (issue 9, item 2). Started by scripts/faults.sh.

Each scenario starts a real `wharf serve` on its own data directory, injects one kind of
fault while a request runs, recovers (frees the space, detaches strace, or restarts after a
kill), and then runs the same `check_invariants()`:

  * every acknowledged push (blob 201, manifest 201) reads back with the right digest, and
    every acknowledged delete stays deleted;
  * every tag in tags/list names a manifest that GETs 200;
  * every webhook event received names a change that is in the store (or may have been
    undone by a later delete request): no event for a change that did not commit;
  * every acknowledged push and delete has its event delivered at least once;
  * the server serves writes again (a fresh push) without a restart, and again after one;
  * no orphan upload file: each file under DATA/uploads/ has its row in the `uploads` table
    (read with sqlite3 from a copy, after a clean shutdown);
  * the server stops on SIGTERM.

Some steps add checks of their own: a failed upload chunk or finish leaves the session's
offset where it was, and a session survives a crash with its acknowledged bytes and can be
resumed and finished (README: upload sessions keep their offset across a restart).

Faults:
  disk-full   a 64 MiB tmpfs under the data directory, filled with a ballast file until
              ENOSPC, during manifest puts, blob pushes, deletes and webhook deliveries,
              with a kill -9 while full, a restart while full and reads after a garbage
              collection; once with the server's free-space floor on;
  io-error    strace attached to the running server fails the K-th write/pwrite64, fsync/
              fdatasync or rename of one step (blob publish, chunk append, manifest commit,
              group commit, delete, repository delete, WAL checkpoint, delivery recording)
              with EIO or ENOSPC;
  kill9       strace attached to the running server kills it with SIGKILL on entry to the
              K-th such call; the server is then restarted on the same data directory.
              Also during garbage collection (its link-removal commit and its file deletes,
              with a 1 s grace): after the restart a complete run must collect what the
              killed one left, and every acknowledged image must still read back.

strace counts calls per syscall and per thread, and only those that pass its filters
(`-P path`), so the suite confines each injection to the files of the step under test: the
database files for commits, the upload file and the blob's path and directory for a blob
publish. Without -P the K-th `write` would be a tokio eventfd wake-up, not I/O.

Standard library only. Environment: FAULTS_WHARF_BIN (the binary), FAULTS_WORK (a scratch
directory on a real disk), FAULTS_ONLY (a regex: run only matching scenarios),
FAULTS_EVENT_WAIT (seconds to wait for expected events, default 15), FAULTS_VERBOSE=1.
"""

import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback

BIN = os.environ["FAULTS_WHARF_BIN"]
WORK = os.environ["FAULTS_WORK"]
ONLY = re.compile(os.environ.get("FAULTS_ONLY", ""))
EVENT_WAIT = float(os.environ.get("FAULTS_EVENT_WAIT", "15"))
VERBOSE = os.environ.get("FAULTS_VERBOSE") == "1"
# PostgreSQL mode (FAULTS_DATABASE=postgres in faults.sh): the metadata of every scenario's
# server is a database of its own on this server (an admin URL).
PG_URL = os.environ.get("FAULTS_POSTGRES_URL")
PG_DATA = os.environ.get("FAULTS_POSTGRES_DATA")
PG_START = os.environ.get("FAULTS_POSTGRES_START")
# Every node over one database seals with one key: the scenarios' servers get this one.
PG_SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
REPO = "faults/app"
HOOK = "faulthook"  # webhook names are 5-50 letters and digits
TMPFS_SIZE = "64m"

# What this driver started, so that every exit path can undo it. faults.sh reads the pid
# file too, in case this process itself is killed.
PIDFILE = os.path.join(WORK, "pids")
STARTED = []  # Popen objects: a reaped one is never signalled, so a reused pid is safe
MOUNTS = []

# Faults injected over the whole run, by (kind, step).
FAULTS = collections.Counter()


def log(msg):
    if VERBOSE:
        print(f"    . {msg}", flush=True)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def track(proc):
    STARTED.append(proc)
    with open(PIDFILE, "a") as f:
        f.write(f"{proc.pid}\n")


def free_port():
    # Bind port 0 and release it: a race with other programs is possible but unlikely, and a
    # server that fails to bind is retried on another port (Wharf.start).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class Resp:
    def __init__(self, status=None, headers=None, body=b"", error=None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.error = error  # set when no response came (connection refused or reset)

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def __str__(self):
        if self.status is None:
            return "no response"  # the server died or dropped the connection
        return str(self.status)


def http_req(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    except (OSError, http.client.HTTPException) as e:
        return Resp(error=f"{type(e).__name__}: {e}")
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# Webhook receiver: answers 200 to every POST and records the JSON body, per path. A path can
# be held: its requests wait (up to a bound below the sender's 5 s timeout) until released,
# which keeps deliveries in flight while a fault is set up.
# ---------------------------------------------------------------------------------------------


class Receiver:
    HOLD_MAX = 4.0

    def __init__(self):
        self.lock = threading.Lock()
        self.events = collections.defaultdict(list)  # key -> [event dict]
        self.holds = {}  # key -> threading.Event (set = released)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                key = self.path.rsplit("/", 1)[-1]
                with receiver.lock:
                    gate = receiver.holds.get(key)
                if gate is not None:
                    gate.wait(Receiver.HOLD_MAX)
                try:
                    ev = json.loads(raw)
                except ValueError:
                    ev = {"unparsable": raw[:200].decode("latin-1")}
                with receiver.lock:
                    receiver.events[key].append(ev)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, key):
        return f"http://127.0.0.1:{self.port}/hook/{key}"

    def got(self, key):
        with self.lock:
            return list(self.events[key])

    def hold(self, key):
        with self.lock:
            self.holds[key] = threading.Event()

    def release(self, key):
        with self.lock:
            gate = self.holds.pop(key, None)
        if gate is not None:
            gate.set()

    def close(self):
        with self.lock:
            for g in self.holds.values():
                g.set()
        self.httpd.shutdown()
        self.httpd.server_close()


RECEIVER = None


# ---------------------------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------------------------


def floor_off_flags():
    """The flag that switches off the server's free-space floor, if the binary has one. The
    floor refuses writes before the disk is really full; the scenarios want the real ENOSPC
    (and the strace ones must not depend on how full the machine's disk is), so all but the
    scenario that tests the floor run with it off."""
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--(min-free[a-z-]*)", out)
    return [f"--{m.group(1)}", "0"] if m else []


FLOOR_OFF = []


class Wharf:
    def __init__(self, data_dir, log_path, flags, env=None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.flags = flags
        self.env = env or {}
        self.proc = None
        self.port = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        for _ in range(5):
            self.port = free_port()
            logf = open(self.log_path, "ab")
            logf.write(f"--- start on port {self.port}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--data-dir", self.data_dir, "--log-level", "info"] + self.flags,
                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env})
            logf.close()
            track(self.proc)
            deadline = time.time() + 20
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                if http_req(self.port, "GET", "/v2/", timeout=2).status == 200:
                    return
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError("server did not answer within 20 s")
            # Exited: most likely the port was taken meanwhile; try another.
        raise RuntimeError(f"server failed to start (exit {self.proc.returncode}); see {self.log_path}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=15):
        """SIGTERM and wait. Returns False if it had to be killed."""
        if not self.alive():
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def wait_dead(self, timeout):
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def req(self, method, path, body=None, headers=None, timeout=30):
        return http_req(self.port, method, path, body, headers, timeout)


# ---------------------------------------------------------------------------------------------
# strace: attach to the running server, inject into one syscall set, detach
# ---------------------------------------------------------------------------------------------


def short(path):
    """A file name for the report: upload ids and digests cut to 8 characters."""
    name = os.path.basename(path)
    return name[:8] + "…" if re.fullmatch(r"[0-9a-f]{32,}", name) else name


class Strace:
    """`strace -f -p PID -e trace=S -e inject=S:ACTION:when=W -P path...`, attached to every
    thread of the server. Only the syscalls on the given paths are counted and tampered."""

    def __init__(self, pid, syscalls, action, when, paths, out):
        self.out = out
        self.target = pid
        cmd = ["strace", "-f", "-qq", "-y", "-p", str(pid), "-o", out,
               "-e", f"trace={syscalls}",
               "-e", f"inject={syscalls}:{action}:when={when}"]
        for p in paths:
            cmd += ["-P", p]
        log(" ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        track(self.proc)
        # Wait until every thread is traced: a request sent earlier could run untraced.
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("strace exited: " + self.proc.stderr.read().decode()[-500:])
            if self._all_traced():
                return
            time.sleep(0.01)
        raise RuntimeError("strace did not attach within 10 s")

    def _all_traced(self):
        try:
            tasks = os.listdir(f"/proc/{self.target}/task")
            for t in tasks:
                with open(f"/proc/{self.target}/task/{t}/status") as f:
                    tracer = re.search(r"^TracerPid:\s*(\d+)", f.read(), re.M).group(1)
                if tracer != str(self.proc.pid):
                    return False
            return True
        except (OSError, AttributeError):
            return False

    def detach(self):
        """Stops strace (SIGTERM makes it detach cleanly) and returns the number of calls it
        tampered with."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            text = open(self.out, errors="replace").read()
        except OSError:
            text = ""
        return text.count("(INJECTED)")

    def trace_text(self):
        try:
            return open(self.out, errors="replace").read()
        except OSError:
            return ""

    def hit(self):
        """The first call that was tampered with (or that the kill interrupted), shortened to
        the syscall and the file names it touched, for the report."""
        try:
            lines = open(self.out, errors="replace").read().splitlines()
        except OSError:
            return None
        for i, line in enumerate(lines):
            if "(INJECTED)" not in line and not line.rstrip().endswith("= ?"):
                continue
            m = re.match(r"^(\d+)\s+<\.\.\. (\w+) resumed>", line)
            if m:
                # strace split the call: its arguments are on the `<unfinished ...>` line.
                pid, name = m.groups()
                for prev in reversed(lines[:i]):
                    if prev.startswith(pid + " ") and f" {name}(" in prev:
                        line = prev.replace(" <unfinished ...>", ") = ?")
                        break
            call = re.sub(r"^\d+\s+", "", line)
            call = re.sub(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?',
                          lambda g: short(g.group(1)) if g.group(1).startswith("/")
                          else '"..."', call)
            call = re.sub(r"<([^<>]*/)?([^/<>]+)>", lambda g: f"<{short(g.group(2))}>", call)
            call = re.sub(r"\s*\((Input/output error|No space left on device)\)", "", call)
            return re.sub(r"\s+", " ", call)[:100]
        return None


# ---------------------------------------------------------------------------------------------
# tmpfs and ballast
# ---------------------------------------------------------------------------------------------


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
    MOUNTS.append(path)


def umount(path):
    subprocess.run(["umount", path], check=False)
    if path in MOUNTS:
        MOUNTS.remove(path)


def fill(path, leave=0):
    """Writes zeros to `path` until the filesystem is full (ENOSPC), as `dd if=/dev/zero`
    would (tmpfs has no use for fallocate here: zeros must really be written), then frees
    `leave` bytes again. Returns the ballast size."""
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 4096, 512):
            buf = b"\0" * chunk
            while True:
                try:
                    n = os.write(fd, buf)
                except OSError as e:
                    if e.errno == 28:  # ENOSPC
                        break
                    raise
                size += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    if leave:
        size = max(0, size - leave)
        os.truncate(path, size)
    return size


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------------------------
# A scenario: one server, one data directory, the ledger of what was acknowledged
# ---------------------------------------------------------------------------------------------


class Scenario:
    def __init__(self, name, index, tmpfs=False, floor=False, env=None):
        self.name = name
        self.slug = f"{index:02d}-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
        self.key = self.slug  # the receiver path of this scenario's webhook
        self.dir = os.path.join(WORK, self.slug)
        os.makedirs(self.dir)
        self.mnt = None
        if tmpfs:
            self.mnt = os.path.join(self.dir, "mnt")
            mount_tmpfs(self.mnt, TMPFS_SIZE)
            self.data = os.path.join(self.mnt, "data")
        else:
            self.data = os.path.join(self.dir, "data")
        flags = [] if floor else list(FLOOR_OFF)
        env = dict(env or {})
        if PG_URL:
            self.pg_url = pg_create_database("faults_" + re.sub(r"[^a-z0-9]", "_",
                                                                self.slug.lower())[:50])
            flags += ["--database", self.pg_url]
            env["WHARF_SECRET_KEY"] = PG_SECRET_KEY
        self.server = Wharf(self.data, os.path.join(self.dir, "server.log"), flags, env)
        self.notes = []
        self.violations = []
        self.faults = 0  # faults this scenario injected
        self.not_reached = []  # planned faults that did not fire
        # The ledger.
        self.acked_blobs = {}  # (repo, digest) -> size
        self.manifests_acked = {}  # (repo, tag) -> digest, PUTs answered 201
        self.deletes_tried = set()  # (repo, digest)
        self.deletes_acked = set()
        self.repo_deletes_tried = set()  # repositories (their blob links go too)
        self.repos = set()
        self.cfg = None
        self.layer = None
        self.serial = 0

    # -- setup -----------------------------------------------------------------------------

    def start(self):
        self.server.start()
        r = self.server.req(
            "PUT", f"/wharf/v1/webhooks/{HOOK}",
            json.dumps({"properties": {"serviceUri": RECEIVER.url(self.key),
                                       "actions": ["push", "delete"]}}).encode(),
            {"Content-Type": "application/json"})
        if r.status != 201:
            raise RuntimeError(f"webhook create: {r} {r.body[:200]!r}")
        # The config and layer every manifest of the scenario references.
        self.cfg = json.dumps({"architecture": "amd64", "os": "linux",
                               "faults": self.slug}).encode()
        self.layer = os.urandom(256 * 1024)
        for blob in (self.cfg, self.layer):
            r = self.push_blob(blob)
            if r.status != 201:
                raise RuntimeError(f"setup blob push: {r}")

    def fault(self, kind, step, n=1):
        FAULTS[(kind, step)] += n
        self.faults += n

    def note(self, msg):
        self.notes.append(msg)

    def violate(self, what, detail=""):
        """`what` names the kind of violation (with the phase); `detail` the instance. The
        report groups violations by `what`: one lost commit rarely comes alone."""
        self.violations.append((what, detail))

    # -- requests that feed the ledger -------------------------------------------------------

    def push_blob(self, data, repo=REPO):
        """Monolithic upload: POST ?digest= with the body (201 when published)."""
        d = sha256(data)
        self.repos.add(repo)
        r = self.server.req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data,
                            {"Content-Type": "application/octet-stream"})
        if r.status == 201:
            self.acked_blobs[(repo, d)] = len(data)
        return r

    def start_session(self, repo=REPO):
        self.repos.add(repo)
        r = self.server.req("POST", f"/v2/{repo}/blobs/uploads/")
        if r.status != 202:
            return None, r
        return r.headers["location"], r

    def session_id(self, location):
        return location.split("?")[0].rstrip("/").rsplit("/", 1)[-1]

    def patch(self, location, data, start):
        return self.server.req("PATCH", location, data, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}"})

    def finish_session(self, location, data, digest, repo=REPO, size=None):
        """PUT ?digest= with the last bytes (possibly none)."""
        sep = "&" if "?" in location else "?"
        r = self.server.req("PUT", f"{location}{sep}digest={digest}", data,
                            {"Content-Type": "application/octet-stream"})
        if r.status == 201:
            self.acked_blobs[(repo, digest)] = size if size is not None else len(data)
        return r

    def manifest_body(self, note, layer=None, repo=REPO):
        layer = self.layer if layer is None else layer
        return json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(self.cfg), "size": len(self.cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256(layer), "size": len(layer)}],
            # Distinct bodies, so each tag has its own digest and a delete hits one tag.
            "annotations": {"faults.scenario": self.slug, "faults.note": note},
        }).encode()

    def put_manifest(self, tag, layer=None, repo=REPO):
        body = self.manifest_body(tag, layer, repo)
        d = sha256(body)
        self.repos.add(repo)
        r = self.server.req("PUT", f"/v2/{repo}/manifests/{tag}", body,
                            {"Content-Type": MANIFEST_TYPE})
        if r.status == 201:
            self.manifests_acked[(repo, tag)] = d
        return d, r

    def delete_manifest(self, digest, repo=REPO):
        self.deletes_tried.add((repo, digest))
        r = self.server.req("DELETE", f"/v2/{repo}/manifests/{digest}")
        if r.status == 202:
            self.deletes_acked.add((repo, digest))
        return r

    def delete_repository(self, repo):
        """ACR's repository delete: every manifest goes, with a delete event each."""
        digests = {d for (r, _), d in self.manifests_acked.items() if r == repo}
        self.repo_deletes_tried.add(repo)
        self.deletes_tried |= {(repo, d) for d in digests}
        r = self.server.req("DELETE", f"/acr/v1/{repo}")
        if r.status == 202:
            self.deletes_acked |= {(repo, d) for d in digests}
        return r

    def fresh_blob(self, size, avoid_prefixes=()):
        """Random bytes whose digest starts a new blobs/sha256/<2 hex>/ directory."""
        while True:
            data = os.urandom(size)
            h = hashlib.sha256(data).hexdigest()
            if h[:2] not in avoid_prefixes:
                return data

    def blob_prefixes(self):
        return {d.split(":")[1][:2] for (_, d) in self.acked_blobs}

    def blob_path(self, digest):
        h = digest.split(":")[1]
        return os.path.join(self.data, "blobs", "sha256", h[:2], h)

    def db_paths(self):
        return [os.path.join(self.data, "wharf.db"), os.path.join(self.data, "wharf.db-wal")]

    # -- teardown ------------------------------------------------------------------------------

    def close(self):
        RECEIVER.release(self.key)
        self.server.kill()
        if self.mnt:
            umount(self.mnt)

    def log_excerpt(self, n=6):
        """The server's distinct ERROR/WARN messages, first seen first (for the report)."""
        try:
            lines = open(self.server.log_path, errors="replace").read().splitlines()
        except OSError:
            return []
        out, seen = [], set()
        for line in lines:
            if " ERROR " not in line and " WARN " not in line and "panicked" not in line:
                continue
            # Same message modulo timestamp, ids, digests and timings: shown once.
            key = re.sub(r"^\S+\s+|[0-9a-f]{8}-[0-9a-f-]{27}|sha256:[0-9a-f]+|ms=\S+|"
                         r"path=\S+", "", line)
            if key not in seen:
                seen.add(key)
                out.append(line)
        return out[:n]


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------


def get_manifest(sc, repo, ref):
    return sc.server.req("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_TYPE})


def check_reads(sc, phase):
    """Acknowledged pushes read back; acknowledged deletes stay deleted; tags resolve."""
    for (repo, d), size in sorted(sc.acked_blobs.items()):
        if repo in sc.repo_deletes_tried:
            continue  # a repository delete unlinks its blobs
        r = sc.server.req("GET", f"/v2/{repo}/blobs/{d}")
        if r.status != 200:
            sc.violate(f"{phase}: acknowledged blob unreadable", f"{repo}@{d[:19]} GET -> {r}")
        elif sha256(r.body) != d or len(r.body) != size:
            sc.violate(f"{phase}: acknowledged blob reads back wrong bytes",
                       f"{repo}@{d[:19]}: {len(r.body)} bytes, digest {sha256(r.body)[:19]}")
    for (repo, tag), d in sorted(sc.manifests_acked.items()):
        if (repo, d) in sc.deletes_tried:
            continue  # a delete was sent later; it may have committed (checked below)
        r = get_manifest(sc, repo, tag)
        if r.status != 200:
            sc.violate(f"{phase}: acknowledged manifest lost", f"{repo}:{tag} ({d[:19]}) GET -> {r}")
            continue
        if sha256(r.body) != d:
            sc.violate(f"{phase}: acknowledged tag serves another manifest",
                       f"{repo}:{tag} body {sha256(r.body)[:19]}, acknowledged {d[:19]}")
        if r.headers.get("docker-content-digest") != d:
            sc.violate(f"{phase}: Docker-Content-Digest differs from the acknowledged digest",
                       f"{repo}:{tag}: {r.headers.get('docker-content-digest')}, "
                       f"acknowledged {d[:19]}")
    for repo, d in sorted(sc.deletes_acked):
        r = get_manifest(sc, repo, d)
        if r.status != 404:
            sc.violate(f"{phase}: acknowledged delete undone", f"{repo}@{d[:19]} GET -> {r}")
    for repo in sorted(sc.repos):
        r = sc.server.req("GET", f"/v2/{repo}/tags/list?n=10000")
        live = [k for k, d in sc.manifests_acked.items()
                if k[0] == repo and (repo, d) not in sc.deletes_tried]
        if r.status == 404 and not live:
            continue  # nothing acknowledged is left in it: an unknown repository is fine
        if r.status != 200:
            sc.violate(f"{phase}: tags/list fails", f"{repo} -> {r}")
            continue
        for tag in json.loads(r.body).get("tags") or []:
            m = get_manifest(sc, repo, tag)
            if m.status != 200:
                sc.violate(f"{phase}: listed tag does not resolve", f"{repo}:{tag} GET -> {m}")
            elif m.headers.get("docker-content-digest") != sha256(m.body):
                sc.violate(f"{phase}: listed tag serves a body that is not its digest",
                           f"{repo}:{tag}")


def serves_again(sc, phase):
    """A fresh blob and manifest push must succeed; both join the ledger, so the event check
    and the next restart hold them to their acknowledgement."""
    sc.serial += 1
    data = os.urandom(8 * 1024)
    r = sc.push_blob(data)
    if r.status != 201:
        sc.violate(f"{phase}: server does not serve writes",
                   f"fresh blob push -> {r} {r.body[:120]!r}")
        return
    tag = f"fresh-{sc.serial}"
    _, r = sc.put_manifest(tag, layer=data)
    if r.status != 201:
        sc.violate(f"{phase}: server does not serve writes",
                   f"fresh manifest PUT {tag} -> {r} {r.body[:120]!r}")


def event_key(ev):
    t = ev.get("target") or {}
    return ev.get("action"), t.get("repository"), t.get("tag"), t.get("digest")


def attempt_history(sc):
    """The webhook's delivery history as (entry text, (status or reason)) pairs; empty if it
    cannot be read."""
    r = sc.server.req("POST", f"/wharf/v1/webhooks/{HOOK}/listEvents?$top=1000",
                      headers={"Content-Type": "application/json"})
    if r.status != 200:
        return []
    out = []
    for e in json.loads(r.body).get("value", []):
        resp = e.get("eventResponseMessage") or {}
        out.append((json.dumps(e), resp.get("statusCode") or resp.get("reasonPhrase")))
    return out


def check_events(sc, phase):
    """Waits (bounded) for the event of every acknowledged change, then checks that every
    event received names a change that is in the store."""
    expected = {("push", repo, tag, d) for (repo, tag), d in sc.manifests_acked.items()}
    expected |= {("delete", repo, d) for repo, d in sc.deletes_acked}

    def missing():
        got = set()
        for ev in RECEIVER.got(sc.key):
            a, repo, tag, d = event_key(ev)
            got.add((a, repo, tag, d))
            got.add((a, repo, d))
        return expected - got

    deadline = time.time() + EVENT_WAIT
    while missing() and time.time() < deadline:
        time.sleep(0.1)
    lost = sorted(missing(), key=str)
    history = attempt_history(sc) if lost else []
    for m in lost:
        what = f"{m[1]}:{m[2]}@{m[3][:19]}" if m[0] == "push" else f"{m[1]}@{m[2][:19]}"
        # What the delivery history says of it, so a failure in CI can be diagnosed.
        tried = [a for (text, a) in history if m[-1] in text]
        what += f"; attempts recorded: {tried if tried else 'none'}"
        sc.violate(f"{phase}: acknowledged {m[0]} has no event after {EVENT_WAIT:.0f} s", what)

    seen = set()
    for ev in RECEIVER.got(sc.key):
        a, repo, tag, d = event_key(ev)
        if (a, repo, tag, d) in seen:
            continue  # at-least-once: duplicates are allowed
        seen.add((a, repo, tag, d))
        if a == "push":
            r = get_manifest(sc, repo, tag)
            if r.status == 200 and r.headers.get("docker-content-digest") == d:
                continue
            if (repo, d) in sc.deletes_tried and get_manifest(sc, repo, d).status == 404:
                continue  # pushed, then deleted by a request we sent
            sc.violate(f"{phase}: push event delivered for a change the store does not have",
                       f"event {ev.get('id')} {repo}:{tag}@{str(d)[:19]}, tag GET -> {r}")
        elif a == "delete":
            r = get_manifest(sc, repo, d)
            if r.status != 404:
                sc.violate(f"{phase}: delete event delivered but the manifest is still there",
                           f"event {ev.get('id')} {repo}@{str(d)[:19]}, GET -> {r}")


def check_uploads_dir(sc, phase):
    """Every file in DATA/uploads/ has its row in the uploads table. Reads a copy of the
    database (the server is stopped), so the check never disturbs the data directory."""
    updir = os.path.join(sc.data, "uploads")
    files = sorted(os.listdir(updir)) if os.path.isdir(updir) else []
    if not files:
        return
    if PG_URL:
        rows = set(pg_query(sc.pg_url, "SELECT id FROM uploads"))
        for f in files:
            if f not in rows:
                size = os.path.getsize(os.path.join(updir, f))
                sc.violate(f"{phase}: orphan upload file (no row in the uploads table)",
                           f"uploads/{f} ({size} bytes)")
        return
    copy = os.path.join(sc.dir, "dbcopy")
    shutil.rmtree(copy, ignore_errors=True)
    os.makedirs(copy)
    for suffix in ("", "-wal"):
        src = os.path.join(sc.data, "wharf.db" + suffix)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(copy, "wharf.db" + suffix))
    con = sqlite3.connect(os.path.join(copy, "wharf.db"))
    try:
        rows = {r[0] for r in con.execute("SELECT id FROM uploads")}
    finally:
        con.close()
    for f in files:
        if f not in rows:
            size = os.path.getsize(os.path.join(updir, f))
            sc.violate(f"{phase}: orphan upload file (no row in the uploads table)",
                       f"uploads/{f} ({size} bytes)")


def stop_cleanly(sc, phase):
    if not sc.server.stop(grace=15):
        sc.violate(f"{phase}: server did not exit within 15 s of SIGTERM (killed)")


def check_invariants(sc, restart=True):
    """Run once the fault is gone (space freed, strace detached, or server restarted after a
    kill). Checks the live server, stops it cleanly, checks the files, and (restart=True)
    starts it again on the same data directory and checks everything once more."""
    phases = ["after recovery"] + (["after restart"] if restart else [])
    for i, phase in enumerate(phases):
        if i > 0:
            sc.server.start()
        serves_again(sc, phase)
        check_reads(sc, phase)
        check_events(sc, phase)
        stop_cleanly(sc, phase)
        check_uploads_dir(sc, phase)


# ---------------------------------------------------------------------------------------------
# Scenarios: disk full (tmpfs)
# ---------------------------------------------------------------------------------------------

ENOSPC_TMPFS = "ENOSPC (tmpfs full)"


def acked(results):
    return sum(1 for r in results if r.ok)


def control(sc):
    """No fault: the same pushes, deletes and checks must pass, or the checks are wrong."""
    sc.start()
    digests = [sc.put_manifest(f"ctl-{i}")[0] for i in range(3)]
    sc.delete_manifest(digests[0])
    loc, _ = sc.start_session()  # an open session: its file and row must both be there
    sc.note(f"{len(sc.manifests_acked)} pushes, {len(sc.deletes_acked)} delete acked, "
            f"session {'open' if loc else 'not started'}")
    check_invariants(sc)


def disk_full_manifests(sc, leave=0):
    """The issue's reproduction: manifests (and a blob upload and a delete) on a full disk.
    With `leave`, that much space is left: the first puts fit and commit, later ones meet
    ENOSPC part-way through the WAL, and the ones that were acknowledged must stay."""
    sc.start()
    base = [sc.put_manifest(f"base-{i}")[0] for i in range(2)]
    quiesce(sc)  # their deliveries are recorded before the disk fills
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast, leave=leave)
    log(f"filled: {free_bytes(sc.mnt)} bytes free")
    puts = [sc.put_manifest(f"full-{i}")[1] for i in range(30)]
    sc.fault(ENOSPC_TMPFS, "manifest commit", len(puts))
    blobs = [sc.push_blob(os.urandom(64 * 1024)) for _ in range(3)]
    loc, start = sc.start_session()
    sc.fault(ENOSPC_TMPFS, "blob publish", len(blobs) + 1)
    dele = sc.delete_manifest(base[1])
    sc.fault(ENOSPC_TMPFS, "delete")
    os.unlink(ballast)
    sc.note(f"while full: manifests {acked(puts)}/30 acked, blob pushes {acked(blobs)}/3, "
            f"upload start {start}, delete {dele}")
    check_invariants(sc)


def disk_full_blobs(sc):
    """A blob that cannot fit: monolithic, and a chunked session whose second chunk fails.
    Once space returns, the session continues from the offset it reported."""
    sc.start()
    loc, r = sc.start_session()
    if loc is None:
        raise RuntimeError(f"upload start: {r}")
    first = os.urandom(1 << 20)
    r = sc.patch(loc, first, 0)
    if r.status != 202:
        raise RuntimeError(f"first chunk: {r}")
    loc = r.headers.get("location", loc)
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast, leave=2 << 20)
    big = os.urandom(8 << 20)
    mono = sc.push_blob(big)
    second = os.urandom(8 << 20)
    chunk = sc.patch(loc, second, len(first))
    sc.fault(ENOSPC_TMPFS, "blob publish", 2)
    # The session's offset must still be the one the client was last told (invariant 2).
    st = sc.server.req("GET", loc)
    if st.status == 204 and not chunk.ok:
        if st.headers.get("range") != f"0-{len(first) - 1}":
            sc.violate("while full: a failed chunk moved the upload offset",
                       f"Range {st.headers.get('range')}, expected 0-{len(first) - 1}")
    elif not chunk.ok:
        sc.violate("while full: upload session lost after a failed chunk", f"GET -> {st}")
    os.unlink(ballast)
    sc.note(f"while full: 8 MiB monolithic push {mono}, 8 MiB chunk {chunk}")
    # Space is back: the same session finishes from where it stood.
    if not chunk.ok:
        chunk = sc.patch(loc, second, len(first))
        if chunk.status != 202:
            sc.violate("after recovery: the failed chunk cannot be sent again",
                       f"PATCH -> {chunk} {chunk.body[:120]!r}")
    if chunk.ok:
        loc = chunk.headers.get("location", loc)
        whole = first + second
        r = sc.finish_session(loc, b"", sha256(whole), size=len(whole))
        if r.status != 201:
            sc.violate("after recovery: the session cannot be finished",
                       f"PUT -> {r} {r.body[:120]!r}")
    if not mono.ok:
        r = sc.push_blob(big)
        if r.status != 201:
            sc.violate("after recovery: server does not serve writes", f"8 MiB monolithic push -> {r}")
    check_invariants(sc)


def disk_full_deletes(sc):
    sc.start()
    digests = [sc.put_manifest(f"del-{i}")[0] for i in range(10)]
    quiesce(sc)
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast)
    dels = [sc.delete_manifest(d) for d in digests[:5]]
    sc.fault(ENOSPC_TMPFS, "delete", len(dels))
    os.unlink(ballast)
    sc.note(f"while full: deletes {acked(dels)}/5 acked")
    check_invariants(sc)


def disk_full_deliveries(sc):
    """Deliveries held in flight at the receiver while the disk fills, then released: the
    attempt records (history) cannot be written."""
    sc.start()
    RECEIVER.hold(sc.key)
    puts = [sc.put_manifest(f"dlv-{i}")[1] for i in range(10)]
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast)
    RECEIVER.release(sc.key)
    # Let the deliveries complete and the recorder hit ENOSPC (it retries with backoff).
    deadline = time.time() + 5
    while len(RECEIVER.got(sc.key)) < acked(puts) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    sc.fault(ENOSPC_TMPFS, "delivery recording", len(RECEIVER.got(sc.key)))
    os.unlink(ballast)
    sc.note(f"{acked(puts)} pushes acked, {len(RECEIVER.got(sc.key))} deliveries while full")
    check_invariants(sc)


def disk_full_kill(sc):
    """The process dies while the disk is full (requests failing, recorder retrying); it is
    restarted only after the space is back."""
    sc.start()
    for i in range(2):
        sc.put_manifest(f"base-{i}")
    quiesce(sc)
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast)
    puts = [sc.put_manifest(f"full-{i}")[1] for i in range(10)]
    blobs = [sc.push_blob(os.urandom(64 * 1024)) for _ in range(2)]
    sc.fault(ENOSPC_TMPFS, "manifest commit", len(puts))
    sc.fault(ENOSPC_TMPFS, "blob publish", len(blobs))
    sc.server.kill()
    sc.fault("SIGKILL (disk full)", "after failed writes")
    check_uploads_dir(sc, "after the kill")
    os.unlink(ballast)
    sc.server.start()
    sc.note(f"while full: manifests {acked(puts)}/10 acked, blob pushes {acked(blobs)}/2; "
            f"killed, restarted after freeing")
    check_invariants(sc)


def disk_full_reads_after_gc(sc):
    """A full disk after a garbage collection: acknowledged images read back (README: reads
    go on). A read records the blob's use for garbage collection; a run that removed links
    forgets what was recorded, so the next read writes the record, meets ENOSPC, and must
    still answer 200."""
    sc.start()
    prep_gc(sc)
    quiesce(sc)
    r = sc.server.req("POST", "/wharf/v1/gc")
    if r.status != 200:
        raise RuntimeError(f"collection before the fill: {r}")
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast)
    sc.fault(ENOSPC_TMPFS, "blob and manifest reads after a collection")
    check_reads(sc, "while full")
    os.unlink(ballast)
    check_invariants(sc)


def disk_full_restart(sc):
    """Restarted on a full disk: it starts (SQLite's shared-memory file needs room, which
    the data directory's 1 MiB reserve gives back) and acknowledged images read back."""
    sc.start()
    for i in range(2):
        sc.put_manifest(f"base-{i}")
    quiesce(sc)
    sc.server.stop()
    ballast = os.path.join(sc.mnt, "ballast")
    fill(ballast)
    sc.server.start()
    sc.fault(ENOSPC_TMPFS, "start-up, then reads")
    check_reads(sc, "restarted while full")
    os.unlink(ballast)
    check_invariants(sc)


# ---------------------------------------------------------------------------------------------
# Scenarios: strace injections (I/O errors and kill -9) at one step
# ---------------------------------------------------------------------------------------------

# A step prepares the server (`prep` returns a context), names the paths strace is confined
# to, and runs the request(s) under the fault (`act`).


class Step:
    def __init__(self, name, prep, paths, act, hold_delivery=False, after=None):
        self.name = name
        self.prep = prep
        self.paths = paths  # paths(sc, ctx, target), target "file", "db", "dbfile" or "any"
        self.act = act
        self.hold_delivery = hold_delivery
        # after(sc, ctx, killed): step-specific checks once the fault is gone (strace
        # detached, or the server restarted), before check_invariants().
        self.after = after


def prep_session(sc):
    loc, r = sc.start_session()
    if loc is None:
        raise RuntimeError(f"upload start: {r}")
    data = sc.fresh_blob(2 << 20, sc.blob_prefixes())
    return {"loc": loc, "data": data, "digest": sha256(data), "id": sc.session_id(loc)}


def paths_blob(sc, ctx, target):
    if target == "db":
        return sc.db_paths()
    if target == "any":
        # No path filter. strace 6.1's -P matches rename by its source only, and a monolithic
        # upload's file name is not known before the request; the server makes no rename
        # and no fdatasync other than a blob publish's (SQLite syncs with fsync), and the
        # report shows the file each fault hit.
        return []
    p = sc.blob_path(ctx["digest"])
    paths = [p, os.path.dirname(p), os.path.dirname(os.path.dirname(p))]
    if "id" in ctx:
        paths.append(os.path.join(sc.data, "uploads", ctx["id"]))
    return paths


def act_session(sc, ctx):
    r = sc.finish_session(ctx["loc"], ctx["data"], ctx["digest"])
    if r.status is None or r.ok:
        return f"PUT session -> {r}"
    # A failed finish either ends the session or leaves its offset where it was (0 here):
    # never a session whose offset counts bytes the client was not told about (invariant 2).
    st = sc.server.req("GET", ctx["loc"])
    if st.status == 204 and st.headers.get("range") != "0-0":
        sc.violate("a failed upload moved the session's offset",
                   f"Range {st.headers.get('range')} after a failed PUT, expected 0-0")
    return f"PUT session -> {r}, session status -> {st}"


def prep_patch(sc):
    """A session with 1 MiB acknowledged; the step under test appends 2 MiB more."""
    loc, r = sc.start_session()
    if loc is None:
        raise RuntimeError(f"upload start: {r}")
    first = os.urandom(1 << 20)
    r = sc.patch(loc, first, 0)
    if r.status != 202:
        raise RuntimeError(f"first chunk: {r}")
    return {"loc": r.headers.get("location", loc), "id": sc.session_id(loc),
            "first": first, "second": os.urandom(2 << 20), "digest": "sha256:" + "0" * 64}


def act_patch(sc, ctx):
    r = sc.patch(ctx["loc"], ctx["second"], len(ctx["first"]))
    return f"PATCH -> {r}"


def after_patch(sc, ctx, killed):
    """The client resumes as the protocol says: ask for the offset, send the rest, finish.
    A crash must not lose the acknowledged first chunk (the README: sessions keep their
    offset across a restart); a failed chunk must leave the offset where it was."""
    first, whole = len(ctx["first"]), ctx["first"] + ctx["second"]
    st = sc.server.req("GET", ctx["loc"])
    if st.status == 404 and not killed:
        sc.note("session ended by the failure")
        return
    if st.status != 204:
        sc.violate("upload session lost" + (" across a restart" if killed else ""),
                   f"GET status -> {st}")
        return
    m = re.fullmatch(r"0-(\d+)", st.headers.get("range", ""))
    offset = int(m.group(1)) + 1 if m else -1
    if not killed and offset != first:
        sc.violate("a failed chunk moved the session's offset",
                   f"Range {st.headers.get('range')}, expected 0-{first - 1}")
        return
    if not first <= offset <= len(whole):
        sc.violate("session offset outside what the client sent after a restart",
                   f"Range {st.headers.get('range')}, acknowledged 0-{first - 1}")
        return
    r = sc.patch(ctx["loc"], whole[offset:], offset) if offset < len(whole) else st
    if r.status not in (202, 204):
        sc.violate("upload session cannot be resumed", f"PATCH from {offset} -> {r}")
        return
    r = sc.finish_session(r.headers.get("location", ctx["loc"]), b"", sha256(whole),
                          size=len(whole))
    if r.status != 201:
        sc.violate("upload session cannot be finished", f"PUT ?digest= -> {r} {r.body[:120]!r}")
    else:
        sc.note(f"resumed at {offset} and finished")


def prep_mono(sc):
    data = sc.fresh_blob(2 << 20, sc.blob_prefixes())
    return {"data": data, "digest": sha256(data)}


def act_mono(sc, ctx):
    r = sc.push_blob(ctx["data"])
    return f"POST ?digest= -> {r}"


def prep_nothing(sc):
    return {}


def paths_db(sc, ctx, target):
    return sc.db_paths()


def act_manifests(sc, ctx):
    # The second PUT is a later commit on the same connection: it must really commit.
    _, a = sc.put_manifest("under-fault")
    if a.status is None:
        return f"PUT -> {a}"
    _, b = sc.put_manifest("next")
    return f"PUT -> {a}, next PUT -> {b}"


def act_group(sc, ctx):
    """Rounds of eight PUTs at once: the server commits waiting puts together in one
    transaction, so one fault hits a whole group; each must still get an answer that matches
    the store. How the eight are grouped depends on timing (all in one commit, or the first
    alone and the rest together), so three rounds make sure the counted fsync or pwrite64 is
    reached: every round commits at least once."""
    results = [None] * 24

    def put(i):
        results[i] = sc.put_manifest(f"group-{i}")[1]

    for r in range(3):
        threads = [threading.Thread(target=put, args=(i,)) for i in range(8 * r, 8 * r + 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return f"3 x 8 concurrent PUTs: {acked(results)} acked"


def prep_deletes(sc):
    return {"digests": [sc.put_manifest(f"victim-{i}")[0] for i in range(2)]}


def act_deletes(sc, ctx):
    a = sc.delete_manifest(ctx["digests"][0])
    if a.status is None:
        return f"DELETE -> {a}"
    b = sc.delete_manifest(ctx["digests"][1])
    return f"DELETE -> {a}, next DELETE -> {b}"


VICTIM = "faults/victim"


def prep_repo(sc):
    for blob in (sc.cfg, sc.layer):
        if sc.push_blob(blob, repo=VICTIM).status != 201:
            raise RuntimeError("setup blob push to the victim repository failed")
    for i in range(3):
        if sc.put_manifest(f"v-{i}", repo=VICTIM)[1].status != 201:
            raise RuntimeError("setup manifest push to the victim repository failed")
    return {}


def act_repo(sc, ctx):
    return f"DELETE /acr/v1/{VICTIM} -> {sc.delete_repository(VICTIM)}"


def paths_dbfile(sc, ctx, target):
    # The main database file only: SQLite writes it only when it checkpoints the WAL.
    return [os.path.join(sc.data, "wharf.db")]


def act_checkpoint(sc, ctx):
    """Pushes manifests, four at a time, until the WAL grows past SQLite's auto-checkpoint
    threshold (1000 pages) and the checkpoint meets the fault."""
    st = ctx["strace"]
    n = 0
    while n < 2000:
        if not sc.server.alive() or "(INJECTED)" in st.trace_text():
            break
        threads = [threading.Thread(target=sc.put_manifest, args=(f"cp-{n + i}",))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n += 4
    return f"{n} PUTs ({len(sc.manifests_acked)} acked) until the checkpoint met the fault"


def prep_delivery(sc):
    # The push commits before strace attaches; its delivery waits at the receiver.
    RECEIVER.hold(sc.key)
    _, r = sc.put_manifest("delivered")
    if r.status != 201:
        raise RuntimeError(f"push: {r}")
    return {}


def act_delivery(sc, ctx):
    RECEIVER.release(sc.key)
    deadline = time.time() + 5
    while not RECEIVER.got(sc.key) and time.time() < deadline:
        time.sleep(0.02)
    # The recorder writes within a few ms; under a repeating fault it retries after 100,
    # 200, 400, 800 ms: give it those rounds.
    time.sleep(1.6)
    return f"{len(RECEIVER.got(sc.key))} delivered"


GC_GRACE_SECS = 1
# Garbage collection's scenarios: a 1 s grace (so that the garbage set up is collectable a
# moment later) and no scheduled run (only the one under the fault, and the one after it).
GC_ENV = {"WHARF_GC_GRACE_SECS": str(GC_GRACE_SECS), "WHARF_GC_INTERVAL_SECS": "0"}


def prep_gc(sc):
    """Referenced images (in the ledger: they must survive) and garbage (outside the ledger:
    unreferenced uploads, and the layer of an image pushed and then deleted). Every blob the
    ledger holds is referenced by an acknowledged manifest, since a run may collect the rest."""
    if sc.put_manifest("kept")[1].status != 201:
        raise RuntimeError("setup manifest push failed")
    for i in range(3):
        layer = os.urandom(64 * 1024)
        if sc.push_blob(layer).status != 201 or \
                sc.put_manifest(f"kept-{i}", layer=layer)[1].status != 201:
            raise RuntimeError("setup image push failed")
    garbage = []
    for i in range(5):
        junk = os.urandom(32 * 1024)
        d = sha256(junk)
        r = sc.server.req("POST", f"/v2/{REPO}/blobs/uploads/?digest={d}", junk,
                          {"Content-Type": "application/octet-stream"})
        if r.status != 201:
            raise RuntimeError(f"setup garbage push: {r}")
        garbage.append(d)
    # An image pushed and deleted: its own layer (the last junk) becomes garbage, the shared
    # config does not.
    digest, r = sc.put_manifest("doomed", layer=junk)
    if r.status != 201 or sc.delete_manifest(digest).status != 202:
        raise RuntimeError("setup push and delete of the doomed image failed")
    # Past the grace: everything outside the ledger is now collectable.
    time.sleep(GC_GRACE_SECS + 0.2)
    return {"garbage": garbage}


def paths_gc(sc, ctx, target):
    if target == "db":
        return sc.db_paths()
    if target == "one":
        # strace counts per thread, and each delete may run on another blocking thread: to
        # kill part-way through the files, trace one of them (whichever order the run takes,
        # some may be gone before it, some after).
        return [sc.blob_path(ctx["garbage"][2])]
    return [sc.blob_path(d) for d in ctx["garbage"]]


def act_gc(sc, ctx):
    r = sc.server.req("POST", "/wharf/v1/gc")
    return f"POST /wharf/v1/gc -> {r}"


def after_gc(sc, ctx, killed):
    """Once the server is back, a complete run collects what the interrupted one left, and
    nothing referenced (check_invariants reads every acknowledged blob and manifest)."""
    r = sc.server.req("POST", "/wharf/v1/gc")
    if r.status != 200:
        sc.violate("a run after the fault fails", f"POST /wharf/v1/gc -> {r} {r.body[:120]!r}")
        return
    left = [d for d in ctx["garbage"] if os.path.exists(sc.blob_path(d))]
    if left:
        sc.violate("garbage survives a complete run after the fault",
                   f"{len(left)} of {len(ctx['garbage'])}, e.g. {left[0][:19]}")
    for d in ctx["garbage"]:
        g = sc.server.req("GET", f"/v2/{REPO}/blobs/{d}")
        if g.status != 404:
            sc.violate("a collected blob is still served", f"{d[:19]} GET -> {g}")
    sc.note(f"then a complete run: {json.loads(r.body)}")


STEPS = {
    "blob publish (session PUT)": Step("blob publish", prep_session, paths_blob, act_session),
    "blob publish (monolithic)": Step("blob publish", prep_mono, paths_blob, act_mono),
    "chunk append (PATCH)": Step("chunk append", prep_patch, paths_blob, act_patch,
                                 after=after_patch),
    "manifest commit": Step("manifest commit", prep_nothing, paths_db, act_manifests),
    "manifest group commit": Step("manifest commit", prep_nothing, paths_db, act_group),
    "delete": Step("delete", prep_deletes, paths_db, act_deletes),
    "repository delete": Step("delete", prep_repo, paths_db, act_repo),
    "WAL checkpoint": Step("WAL checkpoint", prep_nothing, paths_dbfile, act_checkpoint),
    "delivery recording": Step("delivery recording", prep_delivery, paths_db, act_delivery,
                               hold_delivery=True),
    "garbage collection": Step("garbage collection", prep_gc, paths_gc, act_gc,
                               after=after_gc),
}


def quiesce(sc, timeout=5):
    """Waits until every acknowledged change's event has been delivered and its attempt
    recorded (listEvents has one entry per attempt)."""
    want = len(sc.manifests_acked) + len(sc.deletes_acked)
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = len(RECEIVER.got(sc.key))
        if got >= want:
            r = sc.server.req("POST", f"/wharf/v1/webhooks/{HOOK}/listEvents?$top=1000",
                              headers={"Content-Type": "application/json"})
            if r.status == 200 and len(json.loads(r.body).get("value", [])) >= got:
                return
        time.sleep(0.02)
    raise RuntimeError("setup did not settle: deliveries not all recorded within 5 s")


def strace_scenario(sc, step_key, syscalls, target, action, when):
    """One injection: `action` is error=EIO, error=ENOSPC or signal=SIGKILL."""
    step = STEPS[step_key]
    sc.start()
    ctx = step.prep(sc)
    if not step.hold_delivery:
        # The setup's own deliveries are recorded in the database shortly after the pushes:
        # let that finish, or the K-th call counted would be the recorder's, not the step's.
        quiesce(sc)
    paths = step.paths(sc, ctx, target)
    st = Strace(sc.server.pid, syscalls, action, when, paths,
                os.path.join(sc.dir, "strace.out"))
    ctx["strace"] = st
    kill = action.startswith("signal=")
    outcome = step.act(sc, ctx)
    if kill:
        died = sc.server.wait_dead(10)
        st.detach()
        if died:
            sc.fault(f"SIGKILL at {syscalls.split(',')[0]}", step.name)
            sc.note(f"{outcome}; killed at {st.hit()}")
        else:
            sc.not_reached.append(f"{syscalls} #{when}: server not killed")
            sc.note(outcome)
        sc.server.kill()
        RECEIVER.release(sc.key)
        # The files as the crash left them, before start-up can tidy anything.
        check_uploads_dir(sc, "after the kill")
        # Recovery is a plain restart on the same data directory.
        sc.server.start()
    else:
        n = st.detach()
        RECEIVER.release(sc.key)
        errno = action.split("=", 1)[1]
        if n:
            sc.fault(f"{errno} on {syscalls.split(',')[0]}", step.name, n)
        else:
            sc.not_reached.append(f"{syscalls} #{when}: no call was tampered with")
        sc.note(f"{outcome}; {n} injected, first: {st.hit()}")
        if not sc.server.alive():
            sc.violate(f"server exited after an injected {errno}",
                       f"exit {sc.server.proc.returncode}")
            sc.server.start()
    if step.after:
        step.after(sc, ctx, kill)
    check_invariants(sc)


# The injection matrix: (step, syscall set, which files, action, when). K values are chosen
# from the calls each step makes (see the comments), so that each one fires.
#   blob publish: write (the upload file), fdatasync (it), rename (into blobs/), fsync (the
#     blob's directory, then its parent when the directory is new); then a database commit.
#   chunk append (PATCH): write of the upload file, about 1 MiB per call (the server's
#     write buffer); the chunk is 2 MiB.
#   manifest commit / delete: SQLite appends frames with pwrite64 (a 24-byte header and a
#     4 KiB page each, 6-8 calls per commit) and fsyncs the WAL once (synchronous=FULL).
#   manifest group commit: three rounds of eight concurrent PUTs, each round one commit or
#     more (the first put may commit alone, the others together): fsync #2 and pwrite64 #12
#     land in a shared commit of the first or second round.
#   repository delete: one transaction for every manifest and its delete event.
#   WAL checkpoint: once the WAL passes 1000 pages, SQLite copies it into wharf.db
#     (pwrite64 on wharf.db, then fsync of it) at the end of a commit.
#   delivery recording: pwrite64 of the attempt records, no fsync (synchronous=NORMAL).
#     Each failed write closes the connection and the next opens a new one on a new thread,
#     so a "#1" fault fires once per retry until strace detaches.
IO_MATRIX = [
    ("blob publish (session PUT)", "write", "file", "EIO", "1"),
    ("blob publish (session PUT)", "write", "file", "EIO", "2"),
    ("blob publish (session PUT)", "write", "file", "ENOSPC", "1"),
    ("blob publish (session PUT)", "fdatasync", "file", "EIO", "1"),
    ("blob publish (session PUT)", "rename,renameat,renameat2", "file", "EIO", "1"),
    ("blob publish (session PUT)", "fsync", "file", "EIO", "1"),
    ("blob publish (session PUT)", "fsync", "file", "EIO", "2"),
    ("blob publish (session PUT)", "pwrite64", "db", "EIO", "1"),
    ("blob publish (session PUT)", "fsync", "db", "EIO", "1"),
    ("chunk append (PATCH)", "write", "file", "EIO", "1"),
    ("chunk append (PATCH)", "write", "file", "ENOSPC", "2"),
    ("blob publish (monolithic)", "fdatasync", "any", "EIO", "1"),
    ("blob publish (monolithic)", "rename,renameat,renameat2", "any", "EIO", "1"),
    ("blob publish (monolithic)", "fsync", "file", "EIO", "1"),
    ("blob publish (monolithic)", "pwrite64", "db", "ENOSPC", "1"),
    ("blob publish (monolithic)", "pwrite64", "db", "EIO", "1+"),
    ("manifest commit", "pwrite64", "db", "EIO", "1"),
    ("manifest commit", "pwrite64", "db", "EIO", "4"),
    ("manifest commit", "pwrite64", "db", "ENOSPC", "1"),
    ("manifest commit", "pwrite64", "db", "ENOSPC", "1+"),
    ("manifest commit", "pwrite64", "db", "EIO", "8"),
    ("manifest commit", "fsync", "db", "EIO", "1"),
    ("manifest group commit", "pwrite64", "db", "EIO", "12"),
    ("manifest group commit", "fsync", "db", "EIO", "2"),
    ("delete", "pwrite64", "db", "EIO", "1"),
    ("delete", "pwrite64", "db", "ENOSPC", "1"),
    ("delete", "fsync", "db", "EIO", "1"),
    ("repository delete", "pwrite64", "db", "EIO", "1"),
    ("repository delete", "fsync", "db", "EIO", "1"),
    ("WAL checkpoint", "pwrite64", "dbfile", "EIO", "1"),
    ("WAL checkpoint", "fsync", "dbfile", "EIO", "1"),
    ("delivery recording", "pwrite64", "db", "EIO", "1"),
    ("delivery recording", "pwrite64", "db", "EIO", "2"),
    ("delivery recording", "pwrite64", "db", "ENOSPC", "1+"),
]

KILL_MATRIX = [
    ("blob publish (session PUT)", "fdatasync", "file", "1"),
    ("blob publish (session PUT)", "rename,renameat,renameat2", "file", "1"),
    ("blob publish (session PUT)", "fsync", "file", "1"),
    ("blob publish (session PUT)", "pwrite64", "db", "1"),
    ("blob publish (session PUT)", "fsync", "db", "1"),
    ("chunk append (PATCH)", "write", "file", "1"),
    ("chunk append (PATCH)", "write", "file", "2"),
    ("blob publish (monolithic)", "pwrite64", "db", "1"),
    ("blob publish (monolithic)", "fdatasync", "any", "1"),
    ("blob publish (monolithic)", "rename,renameat,renameat2", "any", "1"),
    ("manifest commit", "pwrite64", "db", "1"),
    ("manifest commit", "pwrite64", "db", "4"),
    ("manifest commit", "pwrite64", "db", "8"),
    ("manifest commit", "fsync", "db", "1"),
    ("manifest group commit", "fsync", "db", "2"),
    ("delete", "pwrite64", "db", "1"),
    ("delete", "fsync", "db", "1"),
    ("repository delete", "pwrite64", "db", "1"),
    ("repository delete", "fsync", "db", "1"),
    ("WAL checkpoint", "pwrite64", "dbfile", "1"),
    ("WAL checkpoint", "fsync", "dbfile", "1"),
    ("delivery recording", "pwrite64", "db", "1"),
    # A run removes the unreferenced links in one commit (pwrite64, fsync of the WAL), then
    # deletes each unlinked file after checking, under the writer, that no link names it.
    ("garbage collection", "pwrite64", "db", "1"),
    ("garbage collection", "fsync", "db", "1"),
    ("garbage collection", "unlink,unlinkat", "file", "1"),
    ("garbage collection", "unlink,unlinkat", "one", "1"),
]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the database server itself fails (FAULTS_DATABASE=postgres)
# ---------------------------------------------------------------------------------------------


def pg_query(url, sql):
    out = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()[:200]}")
    return [line for line in out.stdout.splitlines() if line]


def pg_create_database(name):
    pg_query(PG_URL, f"DROP DATABASE IF EXISTS {name}")
    pg_query(PG_URL, f"CREATE DATABASE {name}")
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def pg_kill9():
    """SIGKILL to the postmaster and every backend: a crash of the database server."""
    with open(os.path.join(PG_DATA, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True).stdout.split()
    for pid in [postmaster] + [int(c) for c in children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 20
    while time.time() < deadline:
        if subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True).returncode:
            break
        time.sleep(0.1)


def pg_start():
    """Starts the database server again (crash recovery replays its WAL)."""
    pidfile = os.path.join(PG_DATA, "postmaster.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)  # a stale one from the kill: pg_ctl would refuse to start
    out = subprocess.run(["bash", PG_START], capture_output=True, text=True, timeout=90)
    if out.returncode != 0:
        raise RuntimeError(f"restarting PostgreSQL failed: {out.stderr.strip()[:300]}")


def pg_killed_during_pushes(sc):
    """The database server is killed -9 while manifests are pushed eight at a time: pushes in
    flight fail (503) or were acknowledged, and every acknowledged one survives the database's
    crash recovery, with its event; the server serves again without a restart of its own."""
    sc.start()
    quiesce(sc)
    results = []
    stop = threading.Event()

    def pusher(w):
        i = 0
        while not stop.is_set():
            results.append(sc.put_manifest(f"pg-{w}-{i}")[1])
            i += 1

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    pg_kill9()
    sc.fault("SIGKILL of PostgreSQL", "manifest commit")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    statuses = collections.Counter(r.status for r in results)
    bad = {s: n for s, n in statuses.items() if s not in (201, 503)}
    if bad:
        sc.violate("a push during the database crash answered neither 201 nor 503",
                   f"statuses {dict(statuses)}")
    pg_start()
    sc.note(f"{statuses.get(201, 0)} pushes acked, {statuses.get(503, 0)} answered 503 "
            f"around the kill")
    check_invariants(sc)


def pg_down_then_back(sc):
    """The database server is stopped: reads and writes answer 503 (nothing acknowledged,
    no 500), webhook management too; once it is back the same server serves again."""
    sc.start()
    sc.put_manifest("before")
    quiesce(sc)
    pg_kill9()
    sc.fault("PostgreSQL down", "requests")
    push = sc.put_manifest("while-down")[1]
    blob = sc.push_blob(os.urandom(4096))
    read = get_manifest(sc, REPO, "before")
    hook = sc.server.req("GET", f"/wharf/v1/webhooks/{HOOK}")
    for what, r in [("manifest PUT", push), ("blob push", blob), ("manifest GET", read),
                    ("webhook GET", hook)]:
        if r.status != 503:
            sc.violate("while the database is down, a request answered other than 503",
                       f"{what} -> {r}")
    pg_start()
    sc.note(f"while down: PUT {push.status}, blob {blob.status}, GET {read.status}, "
            f"webhook GET {hook.status}")
    check_invariants(sc)


def pg_applicable(name):
    """Scenarios that inject into SQLite's own files have no PostgreSQL counterpart here
    (the database's files belong to another process: its faults are the scenarios above)."""
    return not re.search(r"\((db|dbfile)\)|WAL checkpoint", name)


def scenarios():
    """(name, Scenario options, function), in the order they run."""
    if PG_URL:
        pg = [("postgres: killed -9 during pushes, restarted", {}, pg_killed_during_pushes),
              ("postgres: down, then back", {}, pg_down_then_back)]
        return pg + [s for s in sqlite_scenarios() if pg_applicable(s[0])]
    return sqlite_scenarios()


def sqlite_scenarios():
    """(name, Scenario options, function), in the order they run."""
    tmpfs = {"tmpfs": True}
    out = [
        ("control: no fault", {}, control),
        ("disk-full: 30 manifests, blob uploads, delete", tmpfs, disk_full_manifests),
        ("disk-full: 30 manifests with 128 KiB left", tmpfs,
         lambda sc: disk_full_manifests(sc, leave=128 << 10)),
        ("disk-full: blob larger than the free space", tmpfs, disk_full_blobs),
        ("disk-full: deletes", tmpfs, disk_full_deletes),
        ("disk-full: webhook deliveries", tmpfs, disk_full_deliveries),
        ("disk-full: kill -9 while full, restart once space is back", tmpfs, disk_full_kill),
        ("disk-full: restarted while full, reads go on", tmpfs, disk_full_restart),
        ("disk-full: reads after a garbage collection", {"tmpfs": True, "env": GC_ENV},
         disk_full_reads_after_gc),
    ]
    if FLOOR_OFF:
        # The same reproduction with the server's default free-space floor: writes must be
        # refused before the disk is touched, and everything else must hold as well.
        out.append(("disk-full: 30 manifests, blob uploads, delete (default free-space floor)",
                    {"tmpfs": True, "floor": True}, disk_full_manifests))
    for step, sys_, target, errno, when in IO_MATRIX:
        name = f"io-error: {step}: {sys_.split(',')[0]}({target}) #{when} {errno}"
        out.append((name, {}, lambda sc, a=(step, sys_, target, f"error={errno}", when):
                    strace_scenario(sc, *a)))
    for step, sys_, target, when in KILL_MATRIX:
        name = f"kill9: {step}: {sys_.split(',')[0]}({target}) #{when}"
        opts = {"env": GC_ENV} if step == "garbage collection" else {}
        out.append((name, opts, lambda sc, a=(step, sys_, target, "signal=SIGKILL", when):
                    strace_scenario(sc, *a)))
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def cleanup():
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for m in reversed(list(MOUNTS)):
        umount(m)
    if RECEIVER is not None:
        RECEIVER.close()


def main():
    global RECEIVER, FLOOR_OFF
    # SIGTERM from faults.sh's trap: unwind through `finally` so mounts and processes go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.time()
    FLOOR_OFF = floor_off_flags()
    if FLOOR_OFF:
        print(f"faults: free-space floor off except where noted ({' '.join(FLOOR_OFF)})")
    RECEIVER = Receiver()
    passed = failed = 0
    violations = 0
    failures = []
    try:
        for index, (name, options, fn) in enumerate(scenarios()):
            if not ONLY.search(name):
                continue
            t0 = time.time()
            sc = Scenario(name, index, **options)
            error = None
            try:
                fn(sc)
            except Exception as e:  # a broken setup is a failed scenario, not a crash
                error = f"{type(e).__name__}: {e}"
                if VERBOSE:
                    traceback.print_exc()
            finally:
                sc.close()
            dt = time.time() - t0
            ok = not sc.violations and not sc.not_reached and error is None
            violations += len(sc.violations)
            status = "PASS" if ok else "FAIL"
            passed += ok
            failed += not ok
            detail = "; ".join(sc.notes)
            print(f"{status} {name} ({dt:.1f}s){': ' + detail if detail else ''}", flush=True)
            if not ok:
                groups = collections.OrderedDict()
                for what, detail in sc.violations:
                    groups.setdefault(what, []).append(detail)
                for what, details in groups.items():
                    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
                    print(f"    | violation x{len(details)}: {what}: e.g. {details[0]}{more}")
                for n in sc.not_reached:
                    print(f"    | fault not injected: {n}")
                if error:
                    print(f"    | error: {error}")
                for line in sc.log_excerpt():
                    print(f"    | log: {line[:300]}")
                print(f"    | server log: {sc.server.log_path} (FAULTS_KEEP=1 keeps it)",
                      flush=True)
                failures.append(name)
    finally:
        cleanup()
    print()
    print("faults injected (kind / step / count):")
    for (kind, step), n in sorted(FAULTS.items()):
        print(f"  {kind:<28} {step:<20} {n}")
    print(f"  total {sum(FAULTS.values())}")
    for name in failures:
        print(f"failed: {name}")
    print(f"invariant violations: {violations}")
    print(f"time: {time.time() - t_start:.0f}s")
    print(f"faults: {passed} passed, {failed} failed")
    return 1 if failed or violations else 0


if __name__ == "__main__":
    sys.exit(main())
