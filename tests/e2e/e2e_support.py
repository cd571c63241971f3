"""Helpers of the end-to-end suite: running client commands, the servers under test, the test
image, the webhook receiver. Fixtures live in conftest.py; test files import what they need
from here (`from e2e_support import ...`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ORAS_DRIVER = HERE / "oras_driver.py"

# Every client command runs under this timeout (seconds): a hung client fails its test
# instead of the whole run.
CMD_TIMEOUT = int(os.environ.get("E2E_CMD_TIMEOUT", "60"))
# How long asynchronous outcomes (webhook deliveries, their history, a certificate reload)
# may take to show.
EVENTUALLY = float(os.environ.get("E2E_EVENTUALLY_SECS", "30"))
MODE = os.environ.get("E2E_REGISTRY", "wharf")

# What the suite runs, each checked at the start of the session: a missing tool is an error,
# never a reason to skip.
TOOLS = ["skopeo", "podman", "buildah", "umoci", "openssl", "tar", "curl"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def clean_env(extra: dict | None = None) -> dict:
    """The environment for a child: ours, without Wharf's own variables (a WHARF_* set for the
    runner must not change what a server or a CLI call under test does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    env.update(extra or {})
    return env


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def run(argv, *, env=None, cwd=None, timeout=CMD_TIMEOUT, check=True, input=None):
    """Runs a command with a timeout and captured output; with check, a non-zero exit is an
    assertion error that shows the command and the end of its output."""
    argv = [str(a) for a in argv]
    try:
        p = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {timeout}s: {' '.join(argv)}\n{e.stderr or ''}")
    if check and p.returncode != 0:
        raise AssertionError(
            f"exit {p.returncode}: {' '.join(argv)}\n--- stdout\n{_tail(p.stdout)}"
            f"\n--- stderr\n{_tail(p.stderr)}"
        )
    return p


def eventually(check, timeout: float = EVENTUALLY, interval: float = 0.3):
    """Calls `check` until it returns without an AssertionError (events are delivered
    asynchronously) and returns its value; after `timeout`, raises its last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def sha256_bytes(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def load_json(path):
    with open(path) as f:
        return json.load(f)


def layer_cat(layer: Path, want: str) -> str:
    """The file `want` from a gzipped tar layer. A lenient reader: umoci 0.4.7 writes layers
    that stop right after the last file's data (no padding, no end-of-archive blocks), which
    GNU tar and tarfile reject."""
    data = gzip.open(layer).read()
    want = want.lstrip("./")
    off = 0
    while off + 512 <= len(data):
        h = data[off : off + 512]
        if h == bytes(512):
            break
        name = h[0:100].rstrip(b"\0").decode()
        prefix = h[345:500].rstrip(b"\0").decode() if h[257:262] == b"ustar" else ""
        if prefix:
            name = prefix + "/" + name
        size = int(h[124:136].rstrip(b"\0 ").decode() or "0", 8)
        off += 512
        if name.lstrip("./") == want and h[156:157] in (b"0", b"\0"):
            return data[off : off + size].decode()
        off += (size + 511) // 512 * 512
    raise AssertionError(f"{want} not found in {layer}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# clients, with configuration and storage of their own (nothing under /etc or ~ is used)
# ---------------------------------------------------------------------------------------------
class Clients:
    """skopeo, podman, buildah, umoci, the oras-py driver and the wharf CLI, run through
    subprocess with isolated configuration and storage under `work`."""

    def __init__(self, work: Path, runroot: Path):
        """`runroot`: a short path (podman refuses a runroot longer than 50 characters)."""
        self.work = work
        self.runroot = runroot
        cfg = work / "cfg"
        for d in ("cfg", "podman/root", "podman/tmp", "buildah/root"):
            (work / d).mkdir(parents=True, exist_ok=True)
        for d in ("p", "b"):
            (runroot / d).mkdir(parents=True, exist_ok=True)
        self.policy = cfg / "policy.json"
        self.policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        (cfg / "registries.conf").write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
        )
        (cfg / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{work}/podman/root"\n'
            f'runroot = "{runroot}/p"\n'
        )
        (cfg / "containers.conf").write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'[network]\nnetwork_config_dir = "{work}/podman/networks"\n'
        )
        auth = cfg / "auth.json"
        auth.write_text("{}")
        self.env = clean_env(
            {
                "CONTAINERS_REGISTRIES_CONF": str(cfg / "registries.conf"),
                "CONTAINERS_STORAGE_CONF": str(cfg / "storage.conf"),
                "CONTAINERS_CONF": str(cfg / "containers.conf"),
                "REGISTRY_AUTH_FILE": str(auth),
            }
        )

    def skopeo(self, *args, **kw):
        return run(["skopeo", "--policy", self.policy, *args], env=self.env, **kw)

    def podman(self, *args, **kw):
        w = self.work / "podman"
        return run(
            ["podman", "--root", w / "root", "--runroot", self.runroot / "p",
             "--tmpdir", w / "tmp", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
             "--events-backend", "file", *args],
            env=self.env,
            **kw,
        )

    def buildah(self, *args, **kw):
        w = self.work / "buildah"
        return run(
            ["buildah", "--root", w / "root", "--runroot", self.runroot / "b",
             "--storage-driver", "vfs", *args],
            env=self.env,
            **kw,
        )

    def oras(self, *args, cwd=None, auth=None, ca_file=None, **kw):
        """The oras-py driver (oras_driver.py), in this interpreter (the suite's venv). oras-py
        insists that pushed files sit under the current directory: give `cwd`."""
        env = dict(self.env)
        if auth:
            env["ORAS_AUTH"] = auth
        pre = ["--ca-file", ca_file] if ca_file else []
        return run([sys.executable, ORAS_DRIVER, *pre, *args], env=env, cwd=cwd, **kw)


# ---------------------------------------------------------------------------------------------
# the test image, built with umoci
# ---------------------------------------------------------------------------------------------
@dataclass
class SampleImage:
    """A 3-layer OCI layout made with umoci: tag v1, and v3 with the same layers and another
    config (hence another manifest)."""

    layout: Path
    run_id: str
    v1: str = ""
    v3: str = ""
    layers: list = field(default_factory=list)
    config: str = ""
    diff_ids: list = field(default_factory=list)

    def blob(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    @property
    def hello(self) -> str:
        return f"hello from the wharf e2e test {self.run_id}\n"


def build_test_image(work: Path, run_id: str) -> SampleImage:
    src = work / "src"
    (src / "app").mkdir(parents=True)
    (src / "share").mkdir()
    img = SampleImage(layout=work / "layout", run_id=run_id)
    (src / "hello.txt").write_text(img.hello)
    (src / "app" / "run.sh").write_text(f"#!/bin/sh\necho app {run_id}\n")
    (src / "app" / "run.sh").chmod(0o755)
    (src / "app" / "data.bin").write_bytes(os.urandom(262144))
    (src / "share" / "notes.txt").write_text(f"third layer {run_id}\n")
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    L = img.layout
    run(["umoci", "init", "--layout", L])
    run(["umoci", "new", "--image", f"{L}:v1"])
    run(["umoci", "insert", *rootless, "--image", f"{L}:v1", src / "hello.txt", "/etc/hello.txt"])
    run(["umoci", "insert", *rootless, "--image", f"{L}:v1", src / "app", "/opt/app"])
    run(["umoci", "insert", *rootless, "--image", f"{L}:v1", src / "share", "/usr/share/e2e"])
    run(["umoci", "config", "--image", f"{L}:v1", "--config.cmd", "/opt/app/run.sh",
         "--config.label", f"org.example.e2e.run={run_id}", "--architecture", "amd64",
         "--os", "linux"])
    run(["umoci", "config", "--image", f"{L}:v1", "--tag", "v3",
         "--config.label", "org.example.e2e.variant=v3"])
    index = load_json(L / "index.json")
    refs = {
        m.get("annotations", {}).get("org.opencontainers.image.ref.name"): m["digest"]
        for m in index["manifests"]
    }
    img.v1, img.v3 = refs["v1"], refs["v3"]
    m = load_json(img.blob(img.v1))
    img.layers = [layer["digest"] for layer in m["layers"]]
    img.config = m["config"]["digest"]
    img.diff_ids = load_json(img.blob(img.config))["rootfs"]["diff_ids"]
    return img


def write_chart(d: Path, version: str, run_id: str) -> tuple[Path, Path]:
    """A tiny Helm chart `webapp` at `version`: (webapp-VERSION.tgz, its config JSON), in d."""
    d.mkdir(parents=True, exist_ok=True)
    chart = d / "webapp"
    shutil.rmtree(chart, ignore_errors=True)
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: webapp\ndescription: A tiny chart for the wharf e2e test\n"
        f'type: application\nversion: {version}\nappVersion: "1.0.0"\n'
    )
    (chart / "values.yaml").write_text(f'replicaCount: 1\nmessage: "{run_id}"\n')
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-webapp\n"
        "data:\n  message: {{ .Values.message | quote }}\n"
    )
    tgz = d / f"webapp-{version}.tgz"
    run(["tar", "czf", tgz.name, "webapp"], cwd=d)
    cfg = d / f"chart-{version}.json"
    cfg.write_text(json.dumps({
        "apiVersion": "v2", "name": "webapp", "version": version,
        "description": "A tiny chart for the wharf e2e test", "type": "application",
        "appVersion": "1.0.0",
    }, separators=(",", ":")))
    return tgz, cfg


def push_small_image(url: str, repo: str, tag: str, salt: str, auth=None, verify=True) -> str:
    """A one-layer image uploaded monolithically over HTTP (what e2e.sh did with curl);
    returns the manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": salt}).encode()
    layer = gzip.compress(f"layer {salt}\n".encode(), mtime=0)
    for blob in (config, layer):
        r = requests.post(
            f"{url}/v2/{repo}/blobs/uploads/?digest={sha256_bytes(blob)}",
            data=blob, headers={"Content-Type": "application/octet-stream"},
            auth=auth, verify=verify, timeout=CMD_TIMEOUT,
        )
        assert r.status_code == 201, f"blob upload: {r.status_code} {r.text}"
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_bytes(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256_bytes(layer), "size": len(layer)}],
    }).encode()
    r = requests.put(
        f"{url}/v2/{repo}/manifests/{tag}", data=manifest,
        headers={"Content-Type": OCI_MANIFEST}, auth=auth, verify=verify, timeout=CMD_TIMEOUT,
    )
    assert r.status_code == 201, f"manifest push: {r.status_code} {r.text}"
    return sha256_bytes(manifest)


# ---------------------------------------------------------------------------------------------
# servers under test
# ---------------------------------------------------------------------------------------------
LISTENING = re.compile(r"wharf listening addr=(\S+)")
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "wharf"
DEFAULT_REGISTRY_NAME = "wharf"
# The api-version azure-mgmt-containerregistry (pinned in requirements.txt) sends, and the one
# of azure-mgmt-resource's SubscriptionClient for `GET /subscriptions`.
ARM_API_VERSION = "2025-11-01"
SUBSCRIPTIONS_API_VERSION = "2022-12-01"


class ServerError(Exception):
    pass


class WharfServer:
    """`wharf serve` as a child process on 127.0.0.1 (port 0, then the same port on restart),
    with its own data directory; stderr (the log) goes to log_path, stdout (where the first
    start prints the credentials, which must never reach the log) to stdout_path."""

    def __init__(self, bin: Path, work: Path, *, auth=True, config: str | None = None,
                 tls: tuple[Path, Path] | None = None, ca: Path | None = None,
                 log_level="info", start_timeout=30.0):
        self.bin = Path(bin)
        self.work = work
        self.auth = auth
        self.data_dir = work / "data"
        self.log_path = work / "server.log"
        self.stdout_path = work / "server.out"
        self.tls = tls
        self.ca = ca
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.config_path = None
        if config is not None:
            self.config_path = work / "wharf.toml"
            self.config_path.write_text(config)
        self.proc = None
        self.port = 0
        self.host = self.url = ""
        self.mgmt_token = self.admin_user = self.admin_password = None
        self.subscription = DEFAULT_SUBSCRIPTION
        self.resource_group = DEFAULT_RESOURCE_GROUP
        self.registry_name = DEFAULT_REGISTRY_NAME
        self._named = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.bin, "serve", "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", self.data_dir]
        if self.auth:
            argv.append("--auth")
        if self.config_path:
            argv += ["--config", self.config_path]
        if self.tls:
            argv += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=clean_env({"WHARF_LOG": self.log_level}),
            )
        deadline = time.monotonic() + self.start_timeout
        addr = None
        while addr is None:
            with open(self.log_path, "rb") as f:
                f.seek(log_from)
                m = LISTENING.search(f.read().decode(errors="replace"))
            if m:
                addr = m.group(1)
                break
            self._alive_or_raise("during startup")
            if time.monotonic() > deadline:
                raise ServerError(f"wharf did not log its address; log:\n{self.log_tail()}")
            time.sleep(0.05)
        self.host = addr
        self.port = int(addr.rsplit(":", 1)[1])
        self.url = f"{'https' if self.tls else 'http'}://{self.host}"
        want = 401 if self.auth else 200
        while True:
            try:
                code = requests.get(f"{self.url}/v2/", timeout=5, verify=self.verify).status_code
            except requests.RequestException:
                code = None
            if code == want:
                break
            self._alive_or_raise("during startup")
            if time.monotonic() > deadline:
                raise ServerError(f"GET /v2/ answered {code}, want {want}; log:\n{self.log_tail()}")
            time.sleep(0.1)
        if self.auth and self.mgmt_token is None:
            self._read_credentials()
        if not self._named:
            self._discover_names()
            self._named = True
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        """Stops the server and starts it again on the same port with the same data
        directory (the credentials of the first start stay valid)."""
        self.stop()
        self.start()

    def _alive_or_raise(self, when: str):
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(
                f"wharf exited with {self.proc.returncode} {when}; log:\n{self.log_tail()}"
            )

    def check_healthy(self):
        """Teardown check: the server is still running and never panicked."""
        self._alive_or_raise("during the test")
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        assert "panicked" not in log, f"the server panicked; log:\n{_tail(log)}"

    def log_tail(self, n=40) -> str:
        if not self.log_path.exists():
            return ""
        return _tail(self.log_path.read_text(errors="replace"), n)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def verify(self):
        return str(self.ca) if self.ca else True

    # -- credentials and names --------------------------------------------------------------
    def _read_credentials(self):
        deadline = time.monotonic() + self.start_timeout
        while True:
            out = self.stdout_path.read_text(errors="replace")
            user = re.search(r"^admin user:\s+(\S+)", out, re.M)
            pw = re.search(r"^admin password:\s+(\S+)", out, re.M)
            mt = re.search(r"^management token:\s+(\S+)", out, re.M)
            if user and pw and mt:
                self.admin_user, self.admin_password, self.mgmt_token = (
                    user.group(1), pw.group(1), mt.group(1))
                return
            if time.monotonic() > deadline:
                raise ServerError(f"no first-start credentials on stdout:\n{out}")
            time.sleep(0.05)

    def _discover_names(self):
        """The subscription, resource group and registry name, from the server's ARM API
        (`GET /subscriptions`, then the registries of that subscription). A server without
        those routes (404) has the built-in defaults, which are kept."""
        h = {"Authorization": f"Bearer {self.mgmt_token}"} if self.mgmt_token else {}
        r = requests.get(f"{self.url}/subscriptions",
                         params={"api-version": SUBSCRIPTIONS_API_VERSION},
                         headers=h, timeout=10, verify=self.verify)
        if r.status_code == 404:
            return
        assert r.status_code == 200, f"GET /subscriptions: {r.status_code} {r.text}"
        subs = r.json()["value"]
        assert len(subs) == 1, subs
        self.subscription = subs[0]["subscriptionId"]
        r = requests.get(
            f"{self.url}/subscriptions/{self.subscription}/providers/"
            "Microsoft.ContainerRegistry/registries",
            params={"api-version": ARM_API_VERSION}, headers=h, timeout=10, verify=self.verify,
        )
        assert r.status_code == 200, f"list registries: {r.status_code} {r.text}"
        regs = r.json()["value"]
        assert len(regs) == 1, regs
        m = re.match(r"^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/"
                     r"Microsoft\.ContainerRegistry/registries/([^/]+)$", regs[0]["id"], re.I)
        assert m, regs[0]["id"]
        self.resource_group, self.registry_name = m.group(1), m.group(2)

    @property
    def registry_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerRegistry/registries/{self.registry_name}")

    # -- the CLI ----------------------------------------------------------------------------
    def cli(self, *args, check=True, token=True):
        """`wharf <args> --server <url>`, with the management token (when the server has one)
        in the environment, never on the command line."""
        extra = {}
        if token and self.mgmt_token:
            extra["WHARF_MANAGEMENT_TOKEN"] = self.mgmt_token
        pre = ["--ca-cert", self.ca] if self.ca else []
        return run([self.bin, *args, "--server", self.url, *pre], env=clean_env(extra),
                   check=check)

    def cli_json(self, *args):
        return json.loads(self.cli(*args).stdout)

    def arm(self, method: str, path: str, body=None, *, check=True) -> requests.Response:
        """A request to the registry's ARM resource (`registry_id` + path) with the
        management token and ARM_API_VERSION."""
        r = requests.request(
            method, f"{self.url}{self.registry_id}{path}", json=body,
            params={"api-version": ARM_API_VERSION},
            headers={"Authorization": f"Bearer {self.mgmt_token}"} if self.mgmt_token else {},
            timeout=30, verify=self.verify,
        )
        if check:
            assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r


class DistributionServer:
    """CNCF Distribution (`docker-registry`, Debian package) as the reference peer for the
    client-only tests (E2E_REGISTRY=distribution)."""

    def __init__(self, work: Path, start_timeout=30.0):
        self.work = work
        self.data_dir = work / "data"
        self.log_path = work / "server.log"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.start_timeout = start_timeout
        self.proc = None

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "distribution.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.data_dir}\n"
            "  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n"
            "      enabled: false\n"
            f"http:\n  addr: {self.host}\n  secret: wharf-e2e-{os.getpid()}-{self.port}\n"
        )
        # distribution maps REGISTRY_* variables onto its configuration
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(cfg)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=env,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if requests.get(f"{self.url}/v2/", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"docker-registry did not start; log:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check_healthy(self):
        assert self.proc.poll() is None, f"docker-registry exited; log:\n{self.log_tail()}"

    def log_tail(self, n=40):
        return _tail(self.log_path.read_text(errors="replace"), n) if self.log_path.exists() else ""


# ---------------------------------------------------------------------------------------------
# webhook receiver
# ---------------------------------------------------------------------------------------------
@dataclass
class Delivery:
    path: str
    headers: dict  # names lowercased
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    """A small HTTP server in a thread on 127.0.0.1 that answers 200 to every POST and records
    each request: path, headers, exact body bytes (a signature covers the body as sent)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: list[Delivery] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                d = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver._requests.append(d)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path_prefix: str = "/") -> list[Delivery]:
        with self._lock:
            return [d for d in self._requests if d.path.startswith(path_prefix)]

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()


# ---------------------------------------------------------------------------------------------
# pushes by each client (each returns the manifest digest the client reports)
# ---------------------------------------------------------------------------------------------
ART_CFG_MT = "application/vnd.wharf.e2e.config.v1+json"
ART_NOTE_MT = "application/vnd.wharf.e2e.note.v1+txt"
ART_DATA_MT = "application/vnd.wharf.e2e.data.v1+bin"
HELM_CFG_MT = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_MT = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

_seq = iter(range(1 << 30))


def _digestfile(clients: Clients) -> Path:
    return clients.work / f"digest-{next(_seq)}"


def skopeo_push(clients: Clients, reg, img: SampleImage, tag: str, ref: str, creds=None) -> str:
    """skopeo copy oci:<layout>:<tag> -> docker://<reg>/<ref>."""
    out = _digestfile(clients)
    extra = ["--dest-creds", creds] if creds else []
    clients.skopeo("copy", "--quiet", "--dest-tls-verify=false", *extra, "--digestfile", out,
                   f"oci:{img.layout}:{tag}", f"docker://{reg.host}/{ref}")
    return out.read_text().strip()


def podman_pull_push(clients: Clients, reg, src: str, dst: str) -> str:
    """podman pull <reg>/<src>, then podman push it to <reg>/<dst>."""
    clients.podman("pull", "--tls-verify=false", "--signature-policy", clients.policy,
                   f"docker://{reg.host}/{src}")
    out = _digestfile(clients)
    clients.podman("push", "--tls-verify=false", "--signature-policy", clients.policy,
                   "--digestfile", out, f"{reg.host}/{src}", f"docker://{reg.host}/{dst}")
    return out.read_text().strip()


def buildah_build_push(clients: Clients, reg, base: str, dst: str, text: str) -> str:
    """buildah from <reg>/<base>, copy a file to /etc/buildah.txt, commit, push to <dst>."""
    name = f"e2e-bctr-{next(_seq)}"
    clients.buildah("from", "--tls-verify=false", "--signature-policy", clients.policy,
                    "--name", name, f"docker://{reg.host}/{base}")
    f = clients.work / "buildah.txt"
    f.write_text(text)
    clients.buildah("copy", name, f, "/etc/buildah.txt")
    clients.buildah("config", "--label", "org.example.e2e.builder=buildah", name)
    clients.buildah("commit", "--signature-policy", clients.policy, name, f"{name}-img")
    out = _digestfile(clients)
    clients.buildah("push", "--tls-verify=false", "--signature-policy", clients.policy,
                    "--digestfile", out, f"{name}-img", f"docker://{reg.host}/{dst}")
    return out.read_text().strip()


def buildah_index_push(clients: Clients, reg, amd64: str, arm64: str, dst: str) -> str:
    """buildah manifest create/add/push --all: an index of <amd64> and <arm64>."""
    name = f"e2e-list-{next(_seq)}"
    clients.buildah("manifest", "create", name)
    clients.buildah("manifest", "add", "--tls-verify=false", "--arch", "amd64", "--os", "linux",
                    name, f"docker://{reg.host}/{amd64}")
    clients.buildah("manifest", "add", "--tls-verify=false", "--arch", "arm64", "--os", "linux",
                    name, f"docker://{reg.host}/{arm64}")
    out = _digestfile(clients)
    clients.buildah("manifest", "push", "--all", "--tls-verify=false", "--signature-policy",
                    clients.policy, "--digestfile", out, name, f"docker://{reg.host}/{dst}")
    return out.read_text().strip()


def oras_push(clients: Clients, reg, cwd: Path, ref: str, files: list, config: str,
              *extra, auth=None, ca_file=None) -> str:
    """The oras-py driver's push of FILE:MEDIATYPE entries with a CONFIG:MEDIATYPE."""
    argv = ["push", "--registry", reg.host, "--ref", ref, "--config", config]
    for f in files:
        argv += ["--file", f]
    return clients.oras(*argv, *extra, cwd=cwd, auth=auth, ca_file=ca_file).stdout.strip()


def helm_push_charts(clients: Clients, reg, work: Path, run_id: str) -> dict:
    """Pushes the chart webapp at 0.1.0 and 0.2.0+build.1 (OCI tags cannot contain '+':
    Helm maps it to '_'); returns {tag: digest}."""
    pushed = {}
    for v in ("0.1.0", "0.2.0+build.1"):
        tgz, cfg = write_chart(work, v, run_id)
        tag = v.replace("+", "_")
        pushed[tag] = oras_push(clients, reg, work, f"e2e/charts/webapp:{tag}",
                                [f"{tgz.name}:{HELM_CHART_MT}"], f"{cfg.name}:{HELM_CFG_MT}")
    return pushed
