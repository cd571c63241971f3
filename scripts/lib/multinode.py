#!/usr/bin/env python3
"""Several Wharf nodes over one PostgreSQL database and one S3 prefix (issue 8, "Done when").
Started by scripts/multinode.sh, which provides the services (scripts/services.sh), the binary
and a scratch directory.

Three `wharf serve` processes (node ids n1, n2, n3; their own data directories; the same
secret key) share a database and a bucket prefix. A webhook receiver on loopback records every
delivery: event id, action, target repository/tag/digest, arrival time and the node that sent
it (each node has its own webhook User-Agent, `Wharf-<node id>`). The checks:

  1. webhook across nodes: a webhook created through node 1's management API (ARM) fires for
     pushes made on nodes 2 and 3 (their webhook snapshots are refreshed by NOTIFY); with
     `push` taken out of its actions through node 3, a push on node 2 raises no event, and
     once put back through node 1, it does;
  2. skopeo through different nodes: a round-robin HTTP proxy in front of the three nodes
     sends each request of an upload (POST, PATCHes, PUT) to another node than the request
     before it; skopeo pushes a multi-layer image through it, a chunked upload with several
     PATCHes is driven by hand through it too (skopeo streams each blob in one PATCH), and
     skopeo pulls both images from each node directly: digests must match. Node 3 answers
     blob GETs with redirects to the bucket (storage.redirect_downloads): its blob GET is a
     307 to a URL that is not the node's, and skopeo's pull from it follows them;
  3. kill -9 during 1,000 pushes: a driver pushes small images (a unique config blob and a
     manifest by tag; the shared layer HEADed first and uploaded if missing, as clients do;
     concurrency 8) spread over the nodes, SIGKILLs node 2 partway, keeps pushing to the live
     nodes (a push that failed on the dead node is retried on another), then checks
     3a. every acknowledged push (manifest PUT answered 201) reads back (manifest by tag,
         digest, blobs) from every live node and from node 2 once restarted;
     3b. every committed event (the database's events for the webhook, so also a push whose
         answer the kill cut off) reaches the receiver; an event id always carries the same
         change, and a push has two ids only if its manifest PUT was sent twice;
     3c. the deliveries node 2 held leases on when it died (read from the database at the
         kill) are resumed by the other nodes within the lease bound (3 x
         webhooks.timeout_secs after the last renewal; 0.5 s poll allowed on top). Node 2 is
         made to fall behind (one delivery at a time to a receiver that holds each of its
         deliveries 1 s) so that it holds parked and in-flight leases when it dies;
     3d. node 2 restarted while nodes 1 and 3 hold live leases (a burst of pushes whose
         deliveries the receiver holds) takes none of them and sends none of them;
  4. garbage collection (POST /wharf/v1/gc, [gc] grace_secs 1) runs on node 3 every 2 s
     during the pushes, with an unreferenced blob uploaded before each run (each must be
     collected, so the runs really remove blobs). Every other push references a blob that an
     earlier push left unreferenced past the grace (garbage taken back while GC runs: HEAD,
     upload if gone, manifest). Afterwards every acknowledged image's blobs still read back.

Standard library only (plus the skopeo and psql commands). Prints each check with its
figures, then `multinode: N passed, M failed`; exits non-zero on any failure.

Environment: MULTINODE_WHARF_BIN, MULTINODE_WORK; from services.env: WHARF_TEST_POSTGRES_URL,
SERVICES_BUCKET, AWS_*. Tunables: MULTINODE_PUSHES (1000), MULTINODE_CONCURRENCY (8),
MULTINODE_TIMEOUT (webhooks.timeout_secs, 2), MULTINODE_RECEIVER_DELAY (seconds the receiver
holds each delivery from node 2 in check 3 until the kill, 1.0: below the timeout),
MULTINODE_N2_CONCURRENCY (webhooks.per_webhook_concurrency of node 2, 1),
MULTINODE_KILL_AT (fraction of the pushes acknowledged before the kill, 0.4),
MULTINODE_EVENT_WAIT (seconds, 60), MULTINODE_GC_PAUSE (seconds between GC runs, 2).
"""

import base64
import collections
import concurrent.futures
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

BIN = os.environ["MULTINODE_WHARF_BIN"]
WORK = os.environ["MULTINODE_WORK"]
PG_URL = os.environ["WHARF_TEST_POSTGRES_URL"]
BUCKET = os.environ["SERVICES_BUCKET"]
PUSHES = int(os.environ.get("MULTINODE_PUSHES", "1000"))
CONCURRENCY = int(os.environ.get("MULTINODE_CONCURRENCY", "8"))
TIMEOUT = int(os.environ.get("MULTINODE_TIMEOUT", "2"))
RECEIVER_DELAY = float(os.environ.get("MULTINODE_RECEIVER_DELAY", "1.0"))
KILL_AT = float(os.environ.get("MULTINODE_KILL_AT", "0.4"))
EVENT_WAIT = float(os.environ.get("MULTINODE_EVENT_WAIT", "60"))
GC_PAUSE = float(os.environ.get("MULTINODE_GC_PAUSE", "2.0"))
N2_CONCURRENCY = int(os.environ.get("MULTINODE_N2_CONCURRENCY", "1"))

LEASE = 3 * TIMEOUT  # dispatcher.rs: LEASE_TIMEOUTS delivery timeouts
POLL_SLACK = 1.5  # the dispatcher's 500 ms poll, the claim and the send
GC_GRACE = 1

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HOOK = "multinodehook"
ARM = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/"
       "Microsoft.ContainerRegistry/registries/wharf")
API = "api-version=2023-07-01"

PIDFILE = os.path.join(WORK, "pids")
T0 = time.time()


def say(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
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
        self.error = error

    def __str__(self):
        if self.status is None:
            return f"no response ({self.error})"
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


def follow(url, timeout=30):
    """GET of an absolute URL (a redirect's target: the bucket)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())
    except (OSError, http.client.HTTPException) as e:
        return Resp(error=f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# Webhook receiver
# ---------------------------------------------------------------------------------------------


class Receiver:
    """Answers 200 to every POST after `delay` seconds (more for the nodes in `slow`) and
    records each delivery at arrival
    (before the delay: a delivery whose sender dies while it is held still counts as
    received, as it would at a real receiver that did its work)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries = []  # dicts: t, id, action, repo, tag, digest, node
        self.delay = 0.0
        self.slow = {}  # sending node id -> seconds to hold its deliveries (beside `delay`)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                ua = self.headers.get("User-Agent") or ""
                node = ua.split("-", 1)[1] if ua.startswith("Wharf-") else ua
                try:
                    ev = json.loads(raw)
                except ValueError:
                    ev = {}
                tgt = ev.get("target") or {}
                rec = {"t": t, "id": ev.get("id"), "action": ev.get("action"),
                       "repo": tgt.get("repository"), "tag": tgt.get("tag"),
                       "digest": tgt.get("digest"), "node": node}
                with receiver.lock:
                    receiver.deliveries.append(rec)
                    delay = max(receiver.delay, receiver.slow.get(node, 0.0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender died meanwhile

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def got(self):
        with self.lock:
            return list(self.deliveries)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# The nodes
# ---------------------------------------------------------------------------------------------


class Node:
    def __init__(self, node_id, env):
        self.id = node_id
        self.data = os.path.join(WORK, node_id, "data")
        self.log_path = os.path.join(WORK, node_id, "server.log")
        os.makedirs(self.data, exist_ok=True)
        self.env = {**os.environ, **env, "WHARF_WEBHOOKS_USER_AGENT": f"Wharf-{node_id}"}
        if node_id == "n2":
            # The node to be killed delivers slowly (few at once to a slow receiver), so that
            # it holds many leases when it dies: parked in memory as well as in flight.
            self.env["WHARF_WEBHOOKS_PER_WEBHOOK_CONCURRENCY"] = str(N2_CONCURRENCY)
        if node_id == "n3":
            # Blob GETs redirect to the bucket: skopeo's pull from this node follows them.
            self.env["WHARF_STORAGE_REDIRECT_DOWNLOADS"] = "true"
        self.proc = None
        self.port = None

    def start(self):
        for _ in range(5):
            self.port = free_port()
            with open(self.log_path, "ab") as logf:
                logf.write(f"--- start on port {self.port}\n".encode())
                logf.flush()
                self.proc = subprocess.Popen(
                    [BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                     "--data-dir", self.data, "--node-id", self.id, "--log-level", "info"],
                    stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env)
            with open(PIDFILE, "a") as f:
                f.write(f"{self.proc.pid}\n")
            deadline = time.time() + 60
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                if http_req(self.port, "GET", "/v2/", timeout=2).status == 200:
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError(f"{self.id} did not answer within 60 s; see {self.log_path}")
        raise RuntimeError(f"{self.id} failed to start (exit {self.proc.returncode}); "
                           f"see {self.log_path}:\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def req(self, method, path, body=None, headers=None, timeout=30):
        """A request to this node; a GET answered with a redirect (node 3's blob GETs) is
        followed to where it points, without the node's headers, as clients do."""
        r = http_req(self.port, method, path, body, headers, timeout)
        if method == "GET" and r.status == 307 and r.headers.get("location"):
            return follow(r.headers["location"], timeout)
        return r

    def log_tail(self, n=15):
        try:
            return "\n".join(open(self.log_path, errors="replace").read().splitlines()[-n:])
        except OSError:
            return ""

    def log_problems(self, n=8):
        """Distinct ERROR/WARN/panic lines, first seen first."""
        try:
            lines = open(self.log_path, errors="replace").read().splitlines()
        except OSError:
            return []
        out, seen = [], set()
        for line in lines:
            if " ERROR " not in line and " WARN " not in line and "panicked" not in line:
                continue
            key = re.sub(r"^\S+\s+|[0-9a-f]{8}-[0-9a-f-]{27}|sha256:[0-9a-f]+|\d+", "", line)
            if key not in seen:
                seen.add(key)
                out.append(line[:300])
        return out[:n]


# ---------------------------------------------------------------------------------------------
# Round-robin proxy: consecutive requests of one upload session go to different nodes
# ---------------------------------------------------------------------------------------------

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection", "proxy-authorization", "proxy-authenticate", "content-length"}
UPLOAD_RE = re.compile(r"^/v2/(.+)/blobs/uploads/([^/?]+)")


class Proxy:
    def __init__(self, nodes):
        self.nodes = nodes
        self.lock = threading.Lock()
        self.rr = 0
        self.upload_last = {}  # session id -> index of the node of its last request
        self.trail = collections.defaultdict(list)  # session id -> [(method, node id, status)]
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._body()
                path = self.path
                m = UPLOAD_RE.match(path)
                with proxy.lock:
                    if m and m.group(2) in proxy.upload_last:
                        idx = (proxy.upload_last[m.group(2)] + 1) % len(proxy.nodes)
                    else:
                        idx = proxy.rr % len(proxy.nodes)
                        proxy.rr += 1
                node = proxy.nodes[idx]
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                if self.command not in ("GET", "HEAD", "DELETE") or body:
                    headers["Content-Length"] = str(len(body))
                c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
                try:
                    c.request(self.command, path, body=body if body else None, headers=headers)
                    r = c.getresponse()
                    data = r.read()
                    status, rh = r.status, r.getheaders()
                except (OSError, http.client.HTTPException) as e:
                    status, rh, data = 502, [], f"proxy: {node.id}: {e}".encode()
                finally:
                    c.close()
                sid = m.group(2) if m else None
                if sid is None and self.command == "POST" and "/blobs/uploads/" in path:
                    loc = dict((k.lower(), v) for k, v in rh).get("location") or ""
                    lm = UPLOAD_RE.match(urllib.parse.urlsplit(loc).path)
                    sid = lm.group(2) if lm else None
                if sid is not None:
                    with proxy.lock:
                        proxy.upload_last[sid] = idx
                        proxy.trail[sid].append((self.command, node.id, status))
                self.send_response(status)
                for k, v in rh:
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                if self.command == "HEAD":
                    cl = dict((k.lower(), v) for k, v in rh).get("content-length")
                    if cl is not None:
                        self.send_header("Content-Length", cl)
                    self.end_headers()
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


class Check:
    def __init__(self, title):
        self.title = title
        self.lines = []
        self.failures = []

    def info(self, msg):
        self.lines.append(msg)
        say(f"    {msg}")

    def fail(self, msg):
        self.failures.append(msg)
        say(f"    FAIL: {msg}")

    def expect(self, cond, ok_msg, fail_msg):
        if cond:
            self.info(ok_msg)
        else:
            self.fail(fail_msg)
        return cond


CHECKS = []


def checks(*titles):
    """A scenario that feeds several checks: the function gets one Check per title, in order.
    A crash fails every check that has not passed a line yet, and the one running."""
    def deco(fn):
        def run(ctx):
            cs = [Check(t) for t in titles]
            CHECKS.extend(cs)
            say("== " + " / ".join(t.split(" ", 1)[0] for t in titles) + " (one run)")
            try:
                fn(ctx, *cs)
            except Exception as e:
                for c in cs:
                    if not c.lines or c is ctx.get("stage"):
                        c.fail(f"not finished: {type(e).__name__}: {e}")
                if os.environ.get("MULTINODE_VERBOSE") == "1":
                    traceback.print_exc()
            for c in cs:
                say(f"== {'PASS' if not c.failures else 'FAIL'}: {c.title}")
        return run
    return deco


def check(title):
    def deco(fn):
        def run(ctx):
            c = Check(title)
            CHECKS.append(c)
            say(f"== {title}")
            try:
                fn(ctx, c)
            except Exception as e:  # a check that crashes fails; the others still run
                c.fail(f"{type(e).__name__}: {e}")
                if os.environ.get("MULTINODE_VERBOSE") == "1":
                    traceback.print_exc()
            say(f"== {'PASS' if not c.failures else 'FAIL'}: {title}")
        return run
    return deco


def push_blob(node, repo, data):
    return node.req("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data,
                    {"Content-Type": "application/octet-stream"})


def manifest_for(config, layers, annotations=None):
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(l), "size": len(l)}
                       for l in layers]}
    if annotations:
        body["annotations"] = annotations
    return json.dumps(body).encode()


def put_manifest(node, repo, ref, body):
    return node.req("PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": OCI_MANIFEST})


def get_manifest(node, repo, ref):
    return node.req("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})


def wait_for(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def psql(sql):
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                          DB_URL, "-c", sql], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()[:300]}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


DB_URL = None  # this run's database (set in main)


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


def make_image(tag_note, sizes):
    """An OCI image with one layer per size (random file contents, so incompressible)."""
    layers, diff_ids = [], []
    for i, size in enumerate(sizes):
        raw, gz = tar_gz([(f"multinode/{tag_note}/file{i}", os.urandom(size))])
        layers.append(gz)
        diff_ids.append(sha256(raw))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": {"multinode": tag_note}},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    return config, layers, manifest_for(config, layers)


def write_layout(path, tag, config, layers, manifest):
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)
    for b in [config, manifest] + layers:
        with open(os.path.join(blobs, sha256(b).split(":")[1]), "wb") as f:
            f.write(b)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)


def skopeo(*args, timeout=180):
    cmd = ["skopeo", "--insecure-policy", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r


def pulled_ok(out_dir, tag, want_manifest, blobs):
    """Compares an OCI layout skopeo wrote with what was pushed."""
    with open(os.path.join(out_dir, "index.json")) as f:
        idx = json.load(f)
    digests = [m["digest"] for m in idx.get("manifests", [])
               if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if digests != [sha256(want_manifest)]:
        return f"index.json names {digests}, pushed {sha256(want_manifest)}"
    for b in [want_manifest] + blobs:
        p = os.path.join(out_dir, "blobs", "sha256", sha256(b).split(":")[1])
        try:
            got = open(p, "rb").read()
        except OSError:
            return f"blob {sha256(b)[:19]} missing from the pulled layout"
        if got != b:
            return f"blob {sha256(b)[:19]} differs ({len(got)} bytes, pushed {len(b)})"
    return None


# -- 1 ----------------------------------------------------------------------------------------


@check("1. a webhook created through node 1 fires for pushes on nodes 2 and 3; an update "
       "through another node reaches node 2 (NOTIFY)")
def check_webhook(ctx, c):
    n1, n2, n3 = ctx["nodes"]
    rcv = ctx["receiver"]
    body = json.dumps({"location": "local", "properties": {
        "serviceUri": rcv.url(), "actions": ["push", "delete"], "status": "enabled"}}).encode()
    r = n1.req("PUT", f"{ARM}/webhooks/{HOOK}?{API}", body, {"Content-Type": "application/json"})
    if r.status not in (200, 201):
        c.fail(f"PUT webhook on n1 (ARM) -> {r} {r.body[:200]!r}")
        return
    created = time.time()
    c.info(f"PUT {HOOK} through n1's ARM API -> {r.status}")
    g = n3.req("GET", f"{ARM}/webhooks/{HOOK}?{API}")
    c.expect(g.status == 200, "GET of the webhook through n3 -> 200",
             f"GET of the webhook through n3 -> {g} {g.body[:200]!r}")
    layer = os.urandom(512)
    for node in (n2, n3):
        repo = f"multinode/notify-{node.id}"
        cfg = json.dumps({"note": f"notify via {node.id}"}).encode()
        for blob in (cfg, layer):
            b = push_blob(node, repo, blob)
            if b.status != 201:
                c.fail(f"blob push on {node.id} -> {b} {b.body[:200]!r}")
                return
        m = manifest_for(cfg, [layer])
        t_put = time.time()
        p = put_manifest(node, repo, "v1", m)
        if p.status != 201:
            c.fail(f"manifest PUT on {node.id} -> {p} {p.body[:200]!r}")
            continue
        d = sha256(m)

        def arrived(repo=repo, d=d):
            return [x for x in rcv.got() if x["action"] == "push" and x["repo"] == repo
                    and x["tag"] == "v1" and x["digest"] == d]

        got = wait_for(arrived, 15)
        if got:
            c.info(f"push of {repo}:v1 on {node.id} ({time.time() - created:.2f} s after the "
                   f"webhook was created) -> event {got[0]['id']} delivered by "
                   f"{got[0]['node']} {got[0]['t'] - t_put:.3f} s after the PUT")
        else:
            c.fail(f"no push event within 15 s for {repo}:v1 pushed on {node.id}")

    # An update made on another node reaches n2's snapshot too: with `push` taken out of the
    # actions (through n3), a push on n2 must raise no event; put back (through n1), it must.
    repo = "multinode/notify-n2"
    cfg = json.dumps({"note": "notify via n2, again"}).encode()
    if push_blob(n2, repo, cfg).status != 201:
        c.fail("config blob push on n2 failed")
        return
    for via, actions, tag, want in ((n3, ["delete"], "v2", False),
                                    (n1, ["push", "delete"], "v3", True)):
        u = via.req("PATCH", f"{ARM}/webhooks/{HOOK}?{API}",
                    json.dumps({"properties": {"actions": actions}}).encode(),
                    {"Content-Type": "application/json"})
        if u.status != 200:
            c.fail(f"PATCH webhook actions={actions} on {via.id} -> {u} {u.body[:200]!r}")
            return
        time.sleep(1.0)  # NOTIFY is asynchronous: a moment for it to reach n2
        m = manifest_for(cfg, [layer], {"multinode.note": tag})
        p = put_manifest(n2, repo, tag, m)
        if p.status != 201:
            c.fail(f"manifest PUT {repo}:{tag} on n2 -> {p}")
            return

        def arrived(tag=tag):
            return [x for x in rcv.got() if x["repo"] == repo and x["tag"] == tag]

        got = wait_for(arrived, 15 if want else 3)
        c.expect(bool(got) == want,
                 f"actions set to {actions} through {via.id}: push of {repo}:{tag} on n2 "
                 + ("delivered" if want else "raised no event (3 s)"),
                 f"actions set to {actions} through {via.id}: push of {repo}:{tag} on n2 "
                 + ("raised no event within 15 s" if want else
                    f"was delivered anyway (n2's snapshot kept the old actions): {got[:1]}"))


# -- 2 ----------------------------------------------------------------------------------------


def chunked_upload(c, proxy, repo, data, chunk):
    """POST, PATCHes of `chunk` bytes, PUT: each through the proxy, which sends every request
    of the session to another node than the one before. Returns the session id, or None."""
    r = http_req(proxy.port, "POST", f"/v2/{repo}/blobs/uploads/")
    if r.status != 202:
        c.fail(f"chunked upload POST -> {r} {r.body[:200]!r}")
        return None
    loc = r.headers["location"]
    sid = UPLOAD_RE.match(urllib.parse.urlsplit(loc).path).group(2)
    off = 0
    while off < len(data):
        part = data[off:off + chunk]
        r = http_req(proxy.port, "PATCH", loc, part, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{off}-{off + len(part) - 1}"})
        if r.status != 202:
            c.fail(f"PATCH {off}-{off + len(part) - 1} -> {r} {r.body[:200]!r}")
            return None
        want = f"0-{off + len(part) - 1}"
        if r.headers.get("range") != want:
            c.fail(f"PATCH answered Range {r.headers.get('range')}, want {want}")
            return None
        loc = r.headers.get("location", loc)
        off += len(part)
    sep = "&" if "?" in loc else "?"
    r = http_req(proxy.port, "PUT", f"{loc}{sep}digest={sha256(data)}", b"",
                 {"Content-Type": "application/octet-stream"})
    if r.status != 201:
        c.fail(f"chunked upload PUT -> {r} {r.body[:200]!r}")
        return None
    return sid


@check("2. skopeo pushes through a round-robin proxy (uploads spread across nodes) and pulls "
       "from each node")
def check_skopeo(ctx, c):
    nodes = ctx["nodes"]
    proxy = Proxy(nodes)
    ctx["proxy"] = proxy
    work = os.path.join(WORK, "skopeo")
    os.makedirs(work)
    images = {}

    # (a) skopeo push of a 4-layer image through the proxy.
    config, layers, manifest = make_image("skopeo", [3 << 20, 1 << 20, 200 << 10, 8 << 10])
    src = os.path.join(work, "src")
    write_layout(src, "v1", config, layers, manifest)
    before = set(proxy.trail)
    t = time.time()
    r = skopeo("copy", "--dest-tls-verify=false", f"oci:{src}:v1",
               f"docker://127.0.0.1:{proxy.port}/multinode/skopeo:v1")
    if r.returncode != 0:
        c.fail(f"skopeo copy to the proxy failed: {r.stderr.strip()[-400:]}")
    else:
        c.info(f"skopeo copy oci: -> proxy: 4 layers "
               f"({sum(map(len, layers)) / 1048576:.1f} MiB) in {time.time() - t:.1f} s")
        images["multinode/skopeo"] = (manifest, [config] + layers)
    sessions = {s: proxy.trail[s] for s in set(proxy.trail) - before}
    patches = [sum(1 for m, _, _ in tr if m == "PATCH") for tr in sessions.values()]
    spread = [len({n for _, n, _ in tr}) for tr in sessions.values()]
    for sid, tr in sorted(sessions.items()):
        c.info(f"session {sid[:8]}: " + " -> ".join(f"{m} {n} {s}" for m, n, s in tr))
    if sessions:
        c.expect(all(s >= 2 for s in spread),
                 f"{len(sessions)} skopeo upload sessions, each over 2+ nodes",
                 f"an upload session stayed on one node: {spread}")
    else:
        c.fail("skopeo made no upload session through the proxy")
    chunky = max(patches, default=0) > 1
    c.info(f"skopeo PATCHes per session: {patches} "
           + ("(chunked)" if chunky else "(one streamed PATCH each: driving chunks by hand)"))

    # (b) a chunked upload by hand: POST, several PATCHes, PUT, each on another node; then an
    # image around it (config and manifest pushed through the proxy too).
    raw, gz = tar_gz([("multinode/chunked/file", os.urandom(3 << 20))])
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]}}).encode()
    chunk = 700 << 10  # not a multiple of anything; 5 PATCHes
    sid = chunked_upload(c, proxy, "multinode/chunked", gz, chunk)
    if sid:
        tr = proxy.trail[sid]
        npatch = sum(1 for m, _, _ in tr if m == "PATCH")
        c.info(f"chunked session {sid[:8]} ({len(gz)} bytes): "
               + " -> ".join(f"{m} {n}" for m, n, _ in tr))
        c.expect(npatch >= 3 and all(tr[i][1] != tr[i + 1][1] for i in range(len(tr) - 1)),
                 f"{npatch} PATCHes, every request on another node than the one before",
                 f"the session did not alternate nodes: {tr}")
        for node in nodes:
            g = node.req("GET", f"/v2/multinode/chunked/blobs/{sha256(gz)}")
            c.expect(g.status == 200 and g.body == gz,
                     f"blob GET from {node.id}: {len(g.body)} bytes, digest matches",
                     f"blob GET from {node.id} -> {g}, {len(g.body)} bytes "
                     f"{sha256(g.body)[:19]} (want {sha256(gz)[:19]})")
        m = manifest_for(cfg, [gz])
        ok = http_req(proxy.port, "POST",
                      f"/v2/multinode/chunked/blobs/uploads/?digest={sha256(cfg)}", cfg,
                      {"Content-Type": "application/octet-stream"}).status == 201
        p = http_req(proxy.port, "PUT", "/v2/multinode/chunked/manifests/v1", m,
                     {"Content-Type": OCI_MANIFEST})
        if ok and p.status == 201:
            images["multinode/chunked"] = (m, [cfg, gz])
        else:
            c.fail(f"config or manifest push for the chunked image -> {p}")

    # (c) skopeo pulls of both images from each node directly; node 3 redirects blob GETs.
    for repo, (man, blobs) in sorted(images.items()):
        g = http_req(nodes[2].port, "GET", f"/v2/{repo}/blobs/{sha256(blobs[0])}")
        to = g.headers.get("location", "") if g.status == 307 else ""
        c.expect(to.startswith("http") and f":{nodes[2].port}/" not in to,
                 f"{nodes[2].id} answers a blob GET of {repo} with a redirect to the bucket",
                 f"{nodes[2].id} blob GET of {repo}: {g} (wanted 307 to the bucket)")
        for node in nodes:
            out = os.path.join(work, f"pull-{repo.rsplit('/', 1)[1]}-{node.id}")
            r = skopeo("copy", "--src-tls-verify=false",
                       f"docker://127.0.0.1:{node.port}/{repo}:v1", f"oci:{out}:v1")
            if r.returncode != 0:
                c.fail(f"skopeo copy {repo}:v1 from {node.id} failed: {r.stderr.strip()[-300:]}")
                continue
            bad = pulled_ok(out, "v1", man, blobs)
            c.expect(bad is None,
                     f"skopeo pull of {repo}:v1 from {node.id}: manifest {sha256(man)[:19]} "
                     f"and {len(blobs)} blobs match",
                     f"skopeo pull of {repo}:v1 from {node.id}: {bad}")


# -- 3 and 4 ----------------------------------------------------------------------------------


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # (repo, tag) -> {digest, config, node, t}
        self.attempts = collections.Counter()  # (repo, tag) -> manifest PUTs sent
        self.failed_on = collections.Counter()  # node id -> failed push attempts
        self.reasons = collections.Counter()  # what the failed attempts got
        self.layer_uploads = 0  # shared layer uploads (HEAD said 404)
        self.secs = []  # duration of each acknowledged push's last attempt
        self.aged = collections.defaultdict(collections.deque)  # repo -> (blob, uploaded at)
        self.aged_heads = collections.Counter()  # HEAD status of aged blobs
        self.aged_acked = 0  # acknowledged pushes that reference an aged blob
        self.gave_up = []  # (repo, tag, last error)
        self.done = 0


AGED_EVERY = 2  # every other push also references a blob left unreferenced past the grace


def one_push(ctx, ledger, i, layer):
    """One image: its config blob (monolithic POST) and its manifest by tag, on node i % 3.
    Every other push also leaves an unreferenced blob behind for a later push, and
    references the oldest one an earlier push left in its repository once that is past the
    GC grace: garbage that a push takes back while GC runs, the window the issue says must
    not lose a blob. Each layer is HEADed first and uploaded only if missing, as clients do
    (the HEAD refreshes its last use). A failed attempt is retried on the next live node, the
    whole push again (a 4xx too: a blob collected between its HEAD and the manifest makes
    the manifest 400 MANIFEST_BLOB_UNKNOWN, which acknowledges nothing)."""
    nodes = ctx["nodes"]
    repo = f"multinode/load{i % 4}"
    tag = f"t{i:04d}"
    start = i % len(nodes)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "multinode": i,
                      "nonce": base64.b64encode(os.urandom(12)).decode()}).encode()
    extra = []
    if i % AGED_EVERY == 0:
        with ledger.lock:
            q = ledger.aged[repo]
            if q and time.time() - q[0][1] >= GC_GRACE + 0.3:
                extra.append(q.popleft()[0])
        left = os.urandom(600)
        for k in range(len(nodes)):
            node = nodes[(start + k) % len(nodes)]
            if node.alive() and push_blob(node, repo, left).status == 201:
                with ledger.lock:
                    ledger.aged[repo].append((left, time.time()))
                break
    body = manifest_for(cfg, [layer] + extra, {"multinode.index": str(i)})
    last = None
    for k in range(12):
        node = nodes[(start + k) % len(nodes)]
        if not node.alive():
            continue
        bad = None
        for blob in [layer] + extra:
            h = node.req("HEAD", f"/v2/{repo}/blobs/{sha256(blob)}")
            if blob is not layer:
                with ledger.lock:
                    ledger.aged_heads[h.status] += 1
            if h.status == 404:
                h = push_blob(node, repo, blob)
                if blob is layer:
                    with ledger.lock:
                        ledger.layer_uploads += 1
            if h.status not in (200, 201):
                bad = h
                break
        if bad is not None:
            last = f"layer on {node.id}: {bad}"
            with ledger.lock:
                ledger.failed_on[node.id] += 1
                ledger.reasons[f"layer HEAD/POST {bad.status}"] += 1
            time.sleep(0.05)
            continue
        t0 = time.time()
        b = push_blob(node, repo, cfg)
        if b.status != 201:
            last = f"blob on {node.id}: {b} {b.body[:120]!r}"
            with ledger.lock:
                ledger.failed_on[node.id] += 1
                ledger.reasons[f"blob POST {b.status}"] += 1
            time.sleep(0.05)
            continue
        with ledger.lock:
            ledger.attempts[(repo, tag)] += 1
        r = put_manifest(node, repo, tag, body)
        if r.status == 201:
            with ledger.lock:
                ledger.acked[(repo, tag)] = {"digest": sha256(body), "blobs": [cfg] + extra,
                                             "node": node.id, "t": time.time()}
                if extra:
                    ledger.aged_acked += 1
                ledger.done += 1
                ledger.secs.append(time.time() - t0)
            return
        last = f"manifest on {node.id}: {r} {r.body[:120]!r}"
        code = ""
        try:
            code = json.loads(r.body)["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        with ledger.lock:
            ledger.failed_on[node.id] += 1
            ledger.reasons[f"manifest PUT {r.status} {code}".strip()] += 1
        time.sleep(0.05)
    with ledger.lock:
        ledger.gave_up.append((repo, tag, last))


def gc_loop(ctx, stop, stats):
    """POST /wharf/v1/gc on n3 back to back while the pushes run. Before each run an
    unreferenced blob is uploaded (older than the grace by the next run but one): these must
    be collected, which shows that the runs really remove things while pushes go on."""
    n3 = ctx["nodes"][2]
    while not stop.is_set():
        junk = os.urandom(1024)
        if push_blob(n3, "multinode/junk", junk).status == 201:
            stats["junk"].append((sha256(junk), time.time()))
        r = n3.req("POST", "/wharf/v1/gc", headers={"Content-Type": "application/json"},
                   timeout=120)
        if r.status == 200:
            stats["runs"] += 1
            try:
                rep = json.loads(r.body)
                for k, v in rep.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        stats["figures"][k] += v
            except ValueError:
                pass
        else:
            stats["errors"].append(f"{r} {r.body[:200]!r}")
            time.sleep(0.5)
        stop.wait(GC_PAUSE)


@checks("3a. kill -9 during the pushes: every acknowledged push is retrievable from every "
        "live node and from the killed node after its restart",
        "3b. every committed event is delivered; duplicates only under the same event id",
        "3c. deliveries the killed node had leased are resumed by the others within the lease "
        "bound",
        "3d. the killed node, restarted, does not seize the live leases of the others",
        "4. no blob lost to garbage collection running during the pushes")
def check_kill(ctx, c3a, c3b, c3c, c3d, c4):
    nodes = ctx["nodes"]
    n1, n2, n3 = nodes
    rcv = ctx["receiver"]
    ledger = Ledger()
    layer = os.urandom(2048)
    with rcv.lock:
        rcv.slow = {n2.id: RECEIVER_DELAY}
    gc_stop = threading.Event()
    gc_stats = {"runs": 0, "errors": [], "junk": [], "figures": collections.Counter()}
    gct = threading.Thread(target=gc_loop, args=(ctx, gc_stop, gc_stats), daemon=True)
    gct.start()

    kill = {}

    def killer():
        wait_for(lambda: ledger.done >= int(PUSHES * KILL_AT), 900, 0.01)
        n2.kill()
        kill["t"] = time.time()
        # The slow receiver has done its job (n2 held leases): from now on deliveries are
        # quick, so an arrival time measures when a delivery was resumed, not a queue.
        with rcv.lock:
            rcv.slow = {}
        kill["acked"] = ledger.done
        now_ms = int(kill["t"] * 1000)
        rows = psql("SELECT event_id, lease_until FROM deliveries "
                    f"WHERE lease_owner = '{n2.id}' AND state = 'pending'")
        kill["leased"] = {eid: int(lu) for eid, lu in rows if lu and int(lu) >= now_ms}
        kill["rows"] = len(rows)

    kt = threading.Thread(target=killer, daemon=True)
    kt.start()
    ctx["stage"] = c3a
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as ex:
        list(ex.map(lambda i: one_push(ctx, ledger, i, layer), range(PUSHES)))
    push_secs = time.time() - t
    kt.join(30)
    gc_stop.set()
    gct.join(120)
    c3a.info(f"{PUSHES} pushes in {push_secs:.1f} s ({PUSHES / push_secs:.0f}/s), concurrency "
             f"{CONCURRENCY}: {len(ledger.acked)} acknowledged, {len(ledger.gave_up)} given up; "
             f"failed attempts by node {dict(ledger.failed_on)}, by answer "
             f"{dict(ledger.reasons)}; manifest PUT sent more than once for "
             f"{sum(1 for v in ledger.attempts.values() if v > 1)} tags; shared layer uploaded "
             f"{ledger.layer_uploads} times")
    if ledger.secs:
        q = sorted(ledger.secs)
        c3a.info(f"config POST + manifest PUT: p50 {q[len(q) // 2] * 1000:.0f} ms, p95 "
                 f"{q[int(len(q) * 0.95)] * 1000:.0f} ms, max {q[-1] * 1000:.0f} ms")
    if "t" not in kill:
        c3a.fail("node 2 was never killed")
        return
    c3a.info(f"n2 SIGKILLed {kill['t'] - t:.1f} s into the pushes, after {kill['acked']} "
             f"acknowledged; it then held {len(kill['leased'])} live delivery leases")
    for repo, tag, err in ledger.gave_up[:5]:
        c3a.fail(f"push {repo}:{tag} never acknowledged (last: {err})")

    def readback(node):
        def one(item):
            (repo, tag), a = item
            r = get_manifest(node, repo, tag)
            if r.status != 200 or sha256(r.body) != a["digest"] \
                    or r.headers.get("docker-content-digest") != a["digest"]:
                return f"{repo}:{tag} manifest GET on {node.id} -> {r} " \
                       f"(digest {sha256(r.body)[:19]}, acknowledged {a['digest'][:19]})"
            for blob in a["blobs"]:
                b = node.req("GET", f"/v2/{repo}/blobs/{sha256(blob)}")
                if b.status != 200 or b.body != blob:
                    return f"{repo}:{tag} blob {sha256(blob)[:19]} GET on {node.id} -> {b}"
            return None

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            bad = [x for x in ex.map(one, sorted(ledger.acked.items())) if x]
        for repo in sorted({repo for repo, _ in ledger.acked}):
            r = node.req("GET", f"/v2/{repo}/blobs/{sha256(layer)}")
            if r.status != 200 or r.body != layer:
                bad.append(f"shared layer GET in {repo} on {node.id} -> {r}")
        return bad

    def check_readback(c, node, when):
        t = time.time()
        bad = readback(node)
        c.expect(not bad,
                 f"{when}: all {len(ledger.acked)} acknowledged images (manifest by tag and "
                 f"digest, config and layers) read back from {node.id} "
                 f"({time.time() - t:.1f} s)",
                 f"{when}: {len(bad)} acknowledged images unreadable from {node.id}, e.g. "
                 + "; ".join(bad[:3]))

    # -- 3b: events ----------------------------------------------------------------------------
    ctx["stage"] = c3b

    def missing():
        got = {(x["repo"], x["tag"], x["digest"]) for x in rcv.got() if x["action"] == "push"}
        return [k for k, a in ledger.acked.items() if (k[0], k[1], a["digest"]) not in got]

    t = time.time()
    wait_for(lambda: not missing(), EVENT_WAIT, 0.2)
    left = missing()
    c3b.expect(not left,
               f"every acknowledged push has its push event ({len(ledger.acked)}; all in "
               f"{time.time() - t:.1f} s after the pushes ended)",
               f"{len(left)} acknowledged pushes have no event after {EVENT_WAIT:.0f} s, e.g. "
               + ", ".join(f"{r}:{g}" for r, g in left[:5]))
    # Committed events, as the database has them (the acknowledged pushes' and any whose
    # commit the kill left unanswered): each must reach the receiver.
    committed = {r[0] for r in psql(
        "SELECT DISTINCT d.event_id FROM deliveries d JOIN events e ON e.id = d.event_id "
        f"WHERE d.webhook = '{HOOK}'")}

    def undelivered():
        return committed - {x["id"] for x in rcv.got()}

    wait_for(lambda: not undelivered(), max(5.0, t + EVENT_WAIT - time.time()), 0.2)
    left = undelivered()
    c3b.expect(not left,
               f"every committed event in the database ({len(committed)}, this run's and checks "
               "1-2's) reached the receiver",
               f"{len(left)} of {len(committed)} committed events never reached the receiver, "
               f"e.g. {sorted(left)[:3]}")
    rcv.delay = 0.0
    dl = [x for x in rcv.got() if x["repo"] and x["repo"].startswith("multinode/load")]
    by_id = collections.defaultdict(list)
    for x in dl:
        by_id[x["id"]].append(x)
    mixed = [i for i, xs in by_id.items()
             if len({(x["action"], x["repo"], x["tag"], x["digest"]) for x in xs}) > 1]
    c3b.expect(not mixed,
               f"{len(dl)} deliveries of {len(by_id)} event ids ({len(dl) - len(by_id)} "
               f"duplicates); an id always names the same change",
               f"{len(mixed)} event ids delivered with different contents, e.g. {mixed[:3]}")
    ids_of = collections.defaultdict(set)
    for x in dl:
        if x["action"] == "push":
            ids_of[(x["repo"], x["tag"], x["digest"])].add(x["id"])
    over = [(k, ids) for k, ids in ids_of.items()
            if len(ids) > ledger.attempts.get((k[0], k[1]), 0)]
    c3b.expect(not over,
               "no push delivered under two ids unless its manifest PUT was sent twice "
               f"({sum(1 for ids in ids_of.values() if len(ids) > 1)} pushes have two ids, "
               "each sent twice)",
               f"{len(over)} pushes delivered under more event ids than PUTs were sent, e.g. "
               + "; ".join(f"{k[0]}:{k[1]} ids {sorted(v)}" for k, v in over[:3]))
    phantom = []
    for (repo, tag, d), ids in ids_of.items():
        if (repo, tag) not in ledger.acked or ledger.acked[(repo, tag)]["digest"] != d:
            if get_manifest(n1, repo, d).status != 200:
                phantom.append(f"{repo}:{tag}@{d[:19]}")
    c3b.expect(not phantom,
               f"every push event names a manifest in the store ({len(ids_of)} distinct pushes "
               f"delivered for {len(ledger.acked)} acknowledged)",
               f"{len(phantom)} push events for manifests not in the store, e.g. {phantom[:3]}")
    by_node = collections.Counter(x["node"] for x in dl)
    c3b.info(f"deliveries by sending node: {dict(sorted(by_node.items()))}")

    # -- 3c: n2's leases resumed -----------------------------------------------------------------
    ctx["stage"] = c3c
    leased = kill["leased"]

    def unresumed():
        got = {x["id"] for x in rcv.got() if x["node"] != n2.id and x["t"] >= kill["t"]}
        return [eid for eid in leased if eid not in got]

    # Late is measured, not cut off: wait up to three lease bounds past the kill.
    wait_for(lambda: not unresumed(), max(0.0, kill["t"] + 3 * LEASE - time.time()), 0.1)
    every_id = collections.defaultdict(list)
    for x in rcv.got():
        every_id[x["id"]].append(x)
    if not leased:
        c3c.fail("n2 held no delivery lease at the kill: resumption not exercised "
                 "(raise MULTINODE_RECEIVER_DELAY)")
    else:
        resumed, never = [], []
        for eid, lease_until in leased.items():
            after = sorted(x["t"] for x in every_id.get(eid, [])
                           if x["node"] != n2.id and x["t"] >= kill["t"])
            if not after:
                never.append(eid)
                continue
            resumed.append((after[0] - kill["t"], after[0] - lease_until / 1000.0))
        sent_before = sum(1 for eid in leased
                          if any(x["node"] == n2.id for x in every_id.get(eid, [])))
        worst = max((r[0] for r in resumed), default=0.0)
        first = min((r[0] for r in resumed), default=0.0)
        past_lease = max((r[1] for r in resumed), default=0.0)
        c3c.info(f"{len(leased)} deliveries leased by n2 at the kill ({sent_before} of them had "
                 "already reached the receiver from n2: these arrive twice, same id)")
        c3c.expect(not never, f"all {len(leased)} resumed by n1/n3",
                   f"{len(never)} of {len(leased)} deliveries leased by n2 never arrived from "
                   f"another node, e.g. {never[:3]}")
        bound = LEASE + POLL_SLACK
        c3c.expect(worst <= bound,
                   f"kill -> first resumed delivery {first:.2f} s, last {worst:.2f} s; lease "
                   f"bound {LEASE} s (3 x webhooks.timeout_secs {TIMEOUT}) + {POLL_SLACK} s "
                   f"for the 0.5 s poll = {bound:.1f} s; latest {past_lease:+.2f} s after its "
                   "own lease ran out",
                   f"kill -> last resumed delivery {worst:.2f} s > {bound:.1f} s (lease "
                   f"{LEASE} s + {POLL_SLACK} s poll slack); latest {past_lease:+.2f} s after "
                   "its own lease ran out")

    # -- 4: GC -------------------------------------------------------------------------------------
    ctx["stage"] = c4
    figs = ", ".join(f"{k} {v}" for k, v in sorted(gc_stats["figures"].items()))
    c4.info(f"GC on n3: {gc_stats['runs']} runs during the pushes (totals: {figs})")
    c4.info(f"{ledger.aged_acked} acknowledged pushes reference a blob left unreferenced past "
            f"the grace; HEADs of such blobs: {dict(ledger.aged_heads)} (404: collected "
            "before the push came back to it, so uploaded again); manifests refused because "
            "a blob went between HEAD and PUT: "
            f"{ledger.reasons.get('manifest PUT 400 MANIFEST_BLOB_UNKNOWN', 0)}")
    if gc_stats["errors"]:
        c4.fail(f"{len(gc_stats['errors'])} GC requests failed, e.g. {gc_stats['errors'][:2]}")
    c4.expect(gc_stats["runs"] >= 3, f"{gc_stats['runs']} GC runs overlapped the pushes",
              f"only {gc_stats['runs']} GC runs during the pushes")
    # One more run once the grace has passed: the junk must be gone, the images not.
    time.sleep(GC_GRACE + 0.5)
    r = n3.req("POST", "/wharf/v1/gc", headers={"Content-Type": "application/json"},
               timeout=120)
    c4.info(f"a last GC run after the pushes -> {r} {r.body[:300].decode(errors='replace')}")
    junk_left = [d for d, _ in gc_stats["junk"]
                 if n1.req("GET", f"/v2/multinode/junk/blobs/{d}").status != 404]
    c4.expect(not junk_left,
              f"all {len(gc_stats['junk'])} unreferenced blobs uploaded between runs were "
              "collected (the runs really removed blobs)",
              f"{len(junk_left)} of {len(gc_stats['junk'])} unreferenced blobs survive GC")
    check_readback(c4, n3, "after every GC run")

    # -- 3d: n2 restarts while n1 and n3 hold live leases ---------------------------------------
    # A burst of pushes whose deliveries the receiver holds (below the timeout): n1 and n3
    # lease them, and n2 starts meanwhile. Its start-up takes back its own leases and expired
    # ones only: none of theirs may become n2's, and n2 must not send any of them.
    ctx["stage"] = c3d
    with rcv.lock:
        rcv.slow = {n1.id: 1.5, n3.id: 1.5}
    burst = range(PUSHES, PUSHES + 24)
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as ex:
        list(ex.map(lambda i: one_push(ctx, ledger, i, layer), burst))
    time.sleep(0.2)
    now_ms = int(time.time() * 1000)
    held = {r[0]: (r[1], r[2]) for r in psql(
        "SELECT id, lease_owner, event_id FROM deliveries WHERE state = 'pending' "
        f"AND lease_owner IN ('{n1.id}', '{n3.id}') AND lease_until > {now_ms}")}
    t_restart = time.time()
    n2.start()
    c3a.info(f"n2 restarted on port {n2.port}")
    seized = set()
    for _ in range(5):  # the dispatcher's start-up recovery runs just after the listener
        if held:
            seized |= {r[0] for r in psql(
                f"SELECT id FROM deliveries WHERE lease_owner = '{n2.id}' "
                f"AND id IN ({', '.join(held)})")}
        time.sleep(0.1)
    with rcv.lock:
        rcv.slow = {}
    held_events = {ev for _, ev in held.values()}
    wait_for(lambda: held_events <= {x["id"] for x in rcv.got()}, 15)
    sent_by_n2 = {x["id"] for x in rcv.got()
                  if x["node"] == n2.id and x["t"] >= t_restart and x["id"] in held_events}
    if not held:
        c3d.fail("n1 and n3 held no live lease when n2 restarted: not exercised")
    else:
        c3d.expect(not seized and not sent_by_n2,
                   f"{len(held)} deliveries leased by n1/n3 at n2's restart: none became n2's, "
                   "none sent by n2",
                   f"n2's start-up seized {len(seized)} of the {len(held)} live leases of n1/n3 "
                   f"and sent {len(sent_by_n2)} of them")
    burst_acked = [(f"multinode/load{i % 4}", f"t{i:04d}") for i in burst]
    got = {(x["repo"], x["tag"]) for x in rcv.got() if x["action"] == "push"}
    c3d.expect(all(k in got for k in burst_acked if k in ledger.acked),
               "the burst's pushes were all delivered",
               "a push of the burst was not delivered")

    # -- 3a: readback from the live nodes and the restarted one ---------------------------------
    ctx["stage"] = c3a
    check_readback(c3a, n1, "live node")
    check_readback(c3a, n2, "restarted node")


# ---------------------------------------------------------------------------------------------


def main():
    global DB_URL
    dbname = f"wharf_multinode_{os.getpid()}"
    r = subprocess.run(["psql", "-X", "-q", PG_URL, "-c", f"CREATE DATABASE {dbname}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"multinode: CREATE DATABASE failed: {r.stderr.strip()}", file=sys.stderr)
        return 1
    u = urllib.parse.urlsplit(PG_URL)
    DB_URL = urllib.parse.urlunsplit(u._replace(path=f"/{dbname}"))
    prefix = f"multinode-{int(time.time())}-{os.getpid()}"
    env = {
        "WHARF_DATABASE": DB_URL,
        "WHARF_STORAGE_BLOB_STORE": f"s3://{BUCKET}/{prefix}",
        "WHARF_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "WHARF_WEBHOOKS_TIMEOUT_SECS": str(TIMEOUT),
        "WHARF_GC_GRACE_SECS": str(GC_GRACE),
        "WHARF_GC_INTERVAL_SECS": "0",
    }
    receiver = Receiver()
    nodes = [Node(f"n{i}", env) for i in (1, 2, 3)]
    ctx = {"nodes": nodes, "receiver": receiver}
    say(f"database {dbname}, blobs s3://{BUCKET}/{prefix}, webhooks.timeout_secs {TIMEOUT} "
        f"(lease {LEASE} s), gc.grace_secs {GC_GRACE}, receiver on 127.0.0.1:{receiver.port}")
    try:
        try:
            nodes[0].start()  # the first one runs the migrations
            for n in nodes[1:]:
                n.start()
        except RuntimeError as e:
            print(f"multinode: {e}", file=sys.stderr)
            return 1
        say("nodes: " + ", ".join(f"{n.id} on 127.0.0.1:{n.port} (pid {n.proc.pid})"
                                  for n in nodes))
        check_webhook(ctx)
        check_skopeo(ctx)
        check_kill(ctx)
    finally:
        for n in nodes:
            n.stop()
        receiver.close()
        if "proxy" in ctx:
            ctx["proxy"].close()
    problems = [(n.id, p) for n in nodes for p in n.log_problems()]
    if problems:
        say("server log warnings/errors (distinct, first seen first):")
        for nid, p in problems:
            say(f"  {nid}: {p}")
    passed = sum(1 for c in CHECKS if not c.failures)
    failed = len(CHECKS) - passed
    print()
    for c in CHECKS:
        print(f"{'PASS' if not c.failures else 'FAIL'}: {c.title}")
        for f in c.failures:
            print(f"      - {f}")
    print(f"multinode: {passed} passed, {failed} failed (total {time.time() - T0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
