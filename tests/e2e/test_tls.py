"""HTTPS: a Wharf with --tls-cert/--tls-key, its certificate issued for 127.0.0.1 by a
throwaway CA made with openssl. Every client verifies it against that CA, given by flag (a
cert dir holding ca.crt, or a CA file): nothing is written to the system's trust stores."""

import json
import os
import signal

import requests

from e2e_support import (
    ART_CFG_MT,
    ART_NOTE_MT,
    eventually,
    oras_push,
    run,
    sha256_bytes,
    sha256_file,
)


def https_push(clients, srv, test_image, ref):
    out = clients.work / "d.tls"
    clients.skopeo("copy", "--quiet", "--dest-cert-dir", srv.tls_ca.cert_dir,
                   "--digestfile", out, f"oci:{test_image.layout}:v1", f"docker://{srv.host}/{ref}")
    return out.read_text().strip()


def served_serial(srv) -> str:
    p = run(["openssl", "s_client", "-connect", srv.host, "-CAfile", srv.tls_ca.ca,
             "-verify_return_error"], check=False)
    return run(["openssl", "x509", "-noout", "-serial"], input=p.stdout).stdout.strip()


def test_https_server_starts_with_a_certificate_from_the_test_ca(tls_wharf):
    assert tls_wharf.url.startswith("https://")
    r = requests.get(f"{tls_wharf.url}/v2/", verify=str(tls_wharf.tls_ca.ca), timeout=10)
    assert r.status_code == 200


def curl(*args):
    return run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", *args],
               check=False)


def test_curl_negotiates_http2_and_http11_and_distrusts_without_the_ca(tls_wharf):
    ca, url = tls_wharf.tls_ca.ca, tls_wharf.url
    assert curl("--cacert", ca, f"{url}/v2/").stdout == "2 200"
    assert curl("--http1.1", "--cacert", ca, f"{url}/v2/").stdout == "1.1 200"
    assert curl(f"{url}/v2/").returncode != 0, "curl trusted the server without the test CA"
    # plain HTTP to the TLS port is refused, not served
    assert not curl(f"http://{tls_wharf.host}/v2/").stdout.endswith(" 200"), \
        "plain HTTP answered on the TLS port"


def test_skopeo_pushes_over_https_with_dest_cert_dir(tls_wharf, clients, test_image):
    assert https_push(clients, tls_wharf, test_image, "e2e/tls:v1") == test_image.v1


def test_skopeo_inspects_and_copies_back_over_https(tls_wharf, clients, test_image, tmp_path):
    https_push(clients, tls_wharf, test_image, "e2e/tls:v1")
    d = json.loads(clients.skopeo("inspect", "--cert-dir", tls_wharf.tls_ca.cert_dir,
                                  f"docker://{tls_wharf.host}/e2e/tls:v1").stdout)
    assert d["Digest"] == test_image.v1
    out = tmp_path / "tls-pulled"
    clients.skopeo("copy", "--quiet", "--src-cert-dir", tls_wharf.tls_ca.cert_dir,
                   f"docker://{tls_wharf.host}/e2e/tls:v1", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == test_image.v1
    for dg in test_image.layers:
        assert sha256_file(out / dg.split(":")[1]) == dg


def test_skopeo_without_the_ca_refuses_the_certificate(tls_wharf, clients, test_image):
    https_push(clients, tls_wharf, test_image, "e2e/tls:v1")
    p = clients.skopeo("inspect", "--raw", f"docker://{tls_wharf.host}/e2e/tls:v1", check=False)
    assert p.returncode != 0, "skopeo trusted the server without the test CA"
    assert "certificate" in p.stderr.lower(), p.stderr


def test_podman_pulls_over_https_with_cert_dir(tls_wharf, clients, test_image):
    https_push(clients, tls_wharf, test_image, "e2e/tls:v1")
    clients.podman("pull", "--cert-dir", tls_wharf.tls_ca.cert_dir, "--signature-policy",
                   clients.policy, f"docker://{tls_wharf.host}/e2e/tls:v1")
    digest = clients.podman("image", "inspect", "--format", "{{.Digest}}",
                            f"{tls_wharf.host}/e2e/tls:v1").stdout.strip()
    assert digest == test_image.v1


def test_oras_pushes_and_pulls_over_https_with_a_ca_bundle(tls_wharf, clients, oras_files,
                                                          tmp_path):
    ca = tls_wharf.tls_ca.ca
    oras_push(clients, tls_wharf, oras_files, "e2e/tls-artifact:v1", [f"note.txt:{ART_NOTE_MT}"],
              f"config.json:{ART_CFG_MT}", ca_file=ca)
    clients.oras("pull", "--registry", tls_wharf.host, "--ref", "e2e/tls-artifact:v1",
                 "--out", tmp_path / "pull", ca_file=ca)
    assert (tmp_path / "pull" / "note.txt").read_bytes() == \
        (oras_files / "note.txt").read_bytes()


def test_sighup_reloads_a_replaced_certificate(tls_wharf, clients, test_image):
    ca = tls_wharf.tls_ca
    https_push(clients, tls_wharf, test_image, "e2e/tls:v1")
    before, want = served_serial(tls_wharf), ca.serial("second")
    assert before == ca.serial("first")
    assert before != want, "the two certificates share a serial"
    ca.install("second")
    os.kill(tls_wharf.proc.pid, signal.SIGHUP)

    def reloaded():
        assert served_serial(tls_wharf) == want

    eventually(reloaded)
    assert tls_wharf.proc.poll() is None, "SIGHUP ended the server"
    # and clients keep working on the new certificate
    raw = clients.skopeo("inspect", "--raw", "--cert-dir", ca.cert_dir,
                         f"docker://{tls_wharf.host}/e2e/tls:v1").stdout
    assert sha256_bytes(raw.encode()) == test_image.v1
