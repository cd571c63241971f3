"""Fixtures of the end-to-end suite (see README.md in this directory).

The shared contract, for every test file here: the function-scoped `wharf` fixture, a fresh
`wharf serve --auth` on 127.0.0.1 with its own data directory, with

    url, host, mgmt_token, admin_user, admin_password,
    subscription, resource_group, registry_name, data_dir, log_path, bin, restart()

Besides: `start_wharf` (a factory for servers with other settings: open mode, TLS, log level,
configuration), `open_wharf` (no --auth), `registry` (the target of the client-only tests:
open-mode Wharf, or CNCF Distribution with E2E_REGISTRY=distribution), `tls_ca` (a throwaway
CA made with openssl), `receiver` (a webhook receiver), `clients` (skopeo, podman, buildah,
the oras-py driver, with isolated configuration), `test_image` (a 3-layer image built with
umoci), `oras_files` (artifact files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from e2e_support import (
    MODE,
    ROOT,
    TOOLS,
    Clients,
    DistributionServer,
    Receiver,
    WharfServer,
    build_test_image,
    run,
)

# The webhook settings of every Wharf the suite starts: loopback receivers allowed (the SSRF
# guard blocks them otherwise with access control on), and retries that do not outlast a test.
WEBHOOK_CONFIG = """
[webhooks]
allow_loopback = "allow"
timeout_secs = 5
retry_schedule_secs = [0, 1, 1]
"""


def pytest_sessionstart(session):
    if MODE not in ("wharf", "distribution"):
        pytest.exit(f"unknown E2E_REGISTRY={MODE} (want wharf or distribution)", returncode=4)
    need = TOOLS + (["docker-registry"] if MODE == "distribution" else [])
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        # A missing tool is an error, not a reason to skip: scripts/e2e.sh installs them.
        pytest.exit(f"missing tools: {' '.join(missing)} (scripts/e2e.sh installs them)",
                    returncode=4)


def pytest_collection_modifyitems(config, items):
    # Against Distribution only the client-only tests mean anything: the others are
    # deselected (not skipped) there.
    if MODE != "distribution":
        return
    keep = [i for i in items if i.get_closest_marker("interop")]
    drop = [i for i in items if not i.get_closest_marker("interop")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    n = len(terminalreporter.stats.get("skipped", []))
    if n:
        terminalreporter.write_line(f"e2e: {n} skipped test(s): a skip fails the run", red=True)


def pytest_sessionfinish(session, exitstatus):
    # A skip is a defect here: a test that did not run proves nothing.
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None and tr.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1


# ---------------------------------------------------------------------------------------------
# the binary
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wharf_bin() -> Path:
    """E2E_WHARF_BIN, or a debug build (`cargo build -p wharf`)."""
    given = os.environ.get("E2E_WHARF_BIN")
    if given:
        p = Path(given).resolve()
        assert p.is_file() and os.access(p, os.X_OK), f"E2E_WHARF_BIN={given} is not executable"
        return p
    assert shutil.which("cargo"), "cargo not found (or set E2E_WHARF_BIN)"
    p = subprocess.run(["cargo", "build", "-p", "wharf"], cwd=ROOT, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"cargo build -p wharf failed:\n{p.stderr[-4000:]}"
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "wharf"


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def start_wharf(wharf_bin, tmp_path):
    """A factory: start_wharf(auth=True, config="", tls=None, ca=None, log_level="info")
    starts a fresh Wharf in its own directory under the test's tmp_path; every server it
    started is stopped at teardown, which also fails the test if one exited or panicked."""
    servers: list[WharfServer] = []

    def start(*, auth=True, config="", tls=None, ca=None, log_level="info") -> WharfServer:
        work = tmp_path / f"wharf{len(servers)}"
        work.mkdir()
        s = WharfServer(wharf_bin, work, auth=auth, config=WEBHOOK_CONFIG + config, tls=tls,
                        ca=ca, log_level=log_level)
        servers.append(s)
        return s.start()

    yield start
    errors = []
    for s in servers:
        try:
            if s.proc is not None:
                s.check_healthy()
        except Exception as e:  # reported after every server is stopped
            errors.append(str(e))
        finally:
            s.stop()
    assert not errors, "\n".join(errors)


@pytest.fixture
def wharf(start_wharf) -> WharfServer:
    """A fresh `wharf serve --auth` (the shared fixture contract)."""
    return start_wharf()


@pytest.fixture
def open_wharf(start_wharf) -> WharfServer:
    """A fresh Wharf without access control (its open development mode)."""
    return start_wharf(auth=False)


@pytest.fixture
def registry(request, tmp_path):
    """The registry of the client-only tests (marked `interop`): a fresh open-mode Wharf, or
    CNCF Distribution with E2E_REGISTRY=distribution."""
    if MODE == "distribution":
        work = tmp_path / "distribution"
        work.mkdir()
        d = DistributionServer(work).start()
        yield d
        try:
            d.check_healthy()
        finally:
            d.stop()
    else:
        yield request.getfixturevalue("open_wharf")


@pytest.fixture
def tls_ca(tmp_path):
    """A throwaway CA made with openssl and two server certificates for 127.0.0.1 that it
    issued (`first` installed as server.crt/server.key, `second` ready for a reload)."""
    return ThrowawayCA(tmp_path / "tls")


class ThrowawayCA:
    def __init__(self, d: Path):
        self.dir = d
        (d / "certs").mkdir(parents=True)
        self.ca = d / "certs" / "ca.crt"
        self.cert_dir = d / "certs"
        self.key = d / "ca.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", f"/CN=Wharf e2e CA {os.getpid()}-{time.time()}",
             "-addext", "basicConstraints = critical, CA:TRUE",
             "-addext", "keyUsage = critical, keyCertSign, cRLSign",
             "-keyout", self.key, "-out", self.ca])
        self.issue("first")
        self.issue("second")
        self.server_cert = d / "server.crt"
        self.server_key = d / "server.key"
        self.install("first")

    def issue(self, name: str):
        d = self.dir
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr"])
        (d / f"{name}.ext").write_text(
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
        )
        serial = "0x" + os.urandom(8).hex()
        run(["openssl", "x509", "-req", "-in", d / f"{name}.csr", "-CA", self.ca,
             "-CAkey", self.key, "-set_serial", serial, "-days", "2",
             "-extfile", d / f"{name}.ext", "-out", d / f"{name}.crt"])

    def serial(self, name: str) -> str:
        return run(["openssl", "x509", "-noout", "-serial", "-in", self.dir / f"{name}.crt"]
                   ).stdout.strip()

    def install(self, name: str):
        """What certificate tools do: replace both files by rename."""
        for ext, dst in (("key", self.dir / "server.key"), ("crt", self.dir / "server.crt")):
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(self.dir / f"{name}.{ext}", tmp)
            os.replace(tmp, dst)


@pytest.fixture
def tls_wharf(start_wharf, tls_ca) -> WharfServer:
    """A Wharf serving HTTPS with the test CA's `first` certificate; certificate polling off,
    so only SIGHUP reloads it."""
    s = start_wharf(auth=False, tls=(tls_ca.server_cert, tls_ca.server_key), ca=tls_ca.ca,
                    config="[tls]\nreload_interval_secs = 0\n")
    s.tls_ca = tls_ca
    return s


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1 recording every request."""
    r = Receiver()
    yield r
    r.close()


# ---------------------------------------------------------------------------------------------
# clients and test data
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def clients(tmp_path) -> Clients:
    runroot = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    yield Clients(tmp_path / "clients", runroot)
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="session")
def run_id() -> str:
    return f"{int(time.time())}-{os.getpid()}"


@pytest.fixture(scope="session")
def test_image(tmp_path_factory, run_id):
    """A 3-layer image built with umoci (read-only for the tests: pushes copy from it)."""
    return build_test_image(tmp_path_factory.mktemp("image"), run_id)


@pytest.fixture(scope="session")
def oras_files(tmp_path_factory, run_id) -> Path:
    """note.txt, config.json and data.bin (300 000 random bytes) for oras pushes; pass the
    directory as `cwd` (oras-py insists that pushed files sit under the current directory)."""
    d = tmp_path_factory.mktemp("oras")
    (d / "note.txt").write_text(f"a note from the wharf e2e test {run_id}\n")
    (d / "config.json").write_text(f'{{"e2e":true,"run":"{run_id}"}}')
    (d / "data.bin").write_bytes(os.urandom(300000))
    return d

