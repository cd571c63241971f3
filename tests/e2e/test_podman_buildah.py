"""podman and buildah: pulls, pushes to other repositories (cross-repository mounts), a build
on top of a pulled image, and a multi-arch index."""

import json

import pytest
import requests

from e2e_support import (
    buildah_build_push,
    buildah_index_push,
    layer_cat,
    load_json,
    podman_pull_push,
    sha256_bytes,
    sha256_file,
    skopeo_push,
)

pytestmark = pytest.mark.interop


def podman_digest(clients, ref):
    return clients.podman("image", "inspect", "--format", "{{.Digest}}", ref).stdout.strip()


def test_blob_mount_from_another_repository_answers_201(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    # what podman/buildah do opportunistically: POST ...?mount=<digest>&from=<repo> -> 201
    dg = test_image.layers[0]
    r = requests.post(f"{registry.url}/v2/e2e/mounted/blobs/uploads/",
                      params={"mount": dg, "from": "e2e/umoci"},
                      headers={"Content-Length": "0"}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers.get("Location")
    assert requests.head(f"{registry.url}/v2/e2e/mounted/blobs/{dg}",
                         timeout=30).status_code == 200


def test_podman_pull_gets_the_pushed_digest(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    clients.podman("pull", "--tls-verify=false", "--signature-policy", clients.policy,
                   f"docker://{registry.host}/e2e/umoci:v1")
    assert podman_digest(clients, f"{registry.host}/e2e/umoci:v1") == test_image.v1


def test_podman_push_to_a_second_repository(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    dg = podman_pull_push(clients, registry, "e2e/umoci:v1", "e2e/podman:v1")
    assert dg.startswith("sha256:")
    r = requests.head(f"{registry.url}/v2/e2e/podman/manifests/v1", timeout=30, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == dg


def test_podman_push_pulls_back_with_the_same_diff_ids(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    dg = podman_pull_push(clients, registry, "e2e/umoci:v1", "e2e/podman:v1")
    out = tmp_path / "pulled-podman"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/podman:v1", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == dg
    m = load_json(out / "manifest.json")
    cfg = m["config"]["digest"]
    assert load_json(out / cfg.split(":")[1])["rootfs"]["diff_ids"] == test_image.diff_ids
    for blob in [layer["digest"] for layer in m["layers"]] + [cfg]:
        assert sha256_file(out / blob.split(":")[1]) == blob


def test_buildah_builds_on_a_pulled_image(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    clients.buildah("from", "--tls-verify=false", "--signature-policy", clients.policy,
                    "--name", "e2e-bctr", f"docker://{registry.host}/e2e/umoci:v1")
    f = clients.work / "buildah.txt"
    f.write_text("added by buildah\n")
    clients.buildah("copy", "e2e-bctr", f, "/etc/buildah.txt")
    clients.buildah("config", "--label", "org.example.e2e.builder=buildah", "e2e-bctr")
    clients.buildah("commit", "--signature-policy", clients.policy, "e2e-bctr", "e2e-img")
    images = json.loads(clients.buildah("images", "--json").stdout)
    assert any("localhost/e2e-img:latest" in (i.get("names") or []) for i in images), images


def test_buildah_push(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    dg = buildah_build_push(clients, registry, "e2e/umoci:v1", "e2e/buildah:v1", "x\n")
    raw = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                         f"docker://{registry.host}/e2e/buildah:v1").stdout
    assert sha256_bytes(raw.encode()) == dg


def test_buildah_push_pulls_back_with_its_new_layer(registry, clients, test_image, tmp_path,
                                                    run_id):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    podman_pull_push(clients, registry, "e2e/umoci:v1", "e2e/podman:v1")
    text = f"added by buildah {run_id}\n"
    dg = buildah_build_push(clients, registry, "e2e/podman:v1", "e2e/buildah:v1", text)
    # pull back with podman (storage apart from buildah's) and check the content
    clients.podman("pull", "--tls-verify=false", "--signature-policy", clients.policy,
                   f"docker://{registry.host}/e2e/buildah:v1")
    assert podman_digest(clients, f"{registry.host}/e2e/buildah:v1") == dg
    out = tmp_path / "pulled-buildah"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/buildah:v1", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == dg
    m = load_json(out / "manifest.json")
    diff_ids = load_json(out / m["config"]["digest"].split(":")[1])["rootfs"]["diff_ids"]
    assert diff_ids[:3] == test_image.diff_ids
    assert len(diff_ids) == 4
    last = m["layers"][-1]["digest"]
    assert sha256_file(out / last.split(":")[1]) == last
    assert layer_cat(out / last.split(":")[1], "etc/buildah.txt") == text


def push_index(registry, clients, test_image):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    podman_pull_push(clients, registry, "e2e/umoci:v1", "e2e/podman:v1")
    buildah_build_push(clients, registry, "e2e/podman:v1", "e2e/buildah:v1", "arm64\n")
    return buildah_index_push(clients, registry, "e2e/podman:v1", "e2e/buildah:v1",
                              "e2e/multi:v1")


def test_buildah_manifest_push_all_pushes_an_index(registry, clients, test_image):
    dg = push_index(registry, clients, test_image)
    r = requests.get(f"{registry.url}/v2/e2e/multi/manifests/v1", timeout=30, headers={
        "Accept": "application/vnd.oci.image.index.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == dg


def test_index_copies_with_every_platform(registry, clients, test_image, tmp_path):
    dg = push_index(registry, clients, test_image)
    raw = tmp_path / "index.json"
    raw.write_text(clients.skopeo("inspect", "--tls-verify=false", "--raw",
                                  f"docker://{registry.host}/e2e/multi:v1").stdout)
    assert sha256_file(raw) == dg
    index = load_json(raw)
    assert "image.index" in index["mediaType"] or "manifest.list" in index["mediaType"]
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    out = tmp_path / "pulled-multi"
    clients.skopeo("copy", "--quiet", "--all", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/multi:v1", f"oci:{out}:v1")
    assert load_json(out / "index.json")["manifests"][0]["digest"] == dg
    for m in index["manifests"]:
        assert (out / "blobs" / "sha256" / m["digest"].split(":")[1]).is_file(), m
