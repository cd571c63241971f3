"""An image built with umoci, pushed, inspected, copied, listed and deleted with skopeo."""

import json

import pytest
import requests

from e2e_support import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    layer_cat,
    load_json,
    sha256_file,
    skopeo_push,
)

pytestmark = pytest.mark.interop


def tags_of(clients, reg, repo):
    out = clients.skopeo("list-tags", "--tls-verify=false", f"docker://{reg.host}/{repo}")
    return sorted(json.loads(out.stdout)["Tags"])


def test_umoci_builds_a_three_layer_image(test_image):
    m = load_json(test_image.blob(test_image.v1))
    assert len(m["layers"]) == 3
    assert len(test_image.diff_ids) == 3
    assert test_image.v3 != test_image.v1
    assert load_json(test_image.blob(test_image.v3))["layers"] == m["layers"]


def test_skopeo_push_returns_the_layout_digest(registry, clients, test_image, tmp_path):
    assert skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1") == \
        test_image.v1


def test_manifest_head_gives_digest_and_the_put_content_type(registry, clients, test_image,
                                                              tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    r = requests.head(f"{registry.url}/v2/e2e/umoci/manifests/v1",
                      headers={"Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == test_image.v1
    # umoci writes no top-level mediaType, so the registry must keep the PUT Content-Type
    assert r.headers["Content-Type"].startswith(OCI_MANIFEST)


def test_inspect_raw_returns_the_layout_manifest_bytes(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    raw = tmp_path / "raw.json"
    raw.write_text(clients.skopeo("inspect", "--tls-verify=false", "--raw",
                                  f"docker://{registry.host}/e2e/umoci:v1").stdout)
    assert sha256_file(raw) == test_image.v1
    assert raw.read_bytes() == test_image.blob(test_image.v1).read_bytes()


def test_copy_to_oci_layout_keeps_every_digest(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    out = tmp_path / "pulled-oci"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/umoci:v1", f"oci:{out}:v1")
    assert load_json(out / "index.json")["manifests"][0]["digest"] == test_image.v1
    for dg in test_image.layers + [test_image.config]:
        pulled = out / "blobs" / "sha256" / dg.split(":")[1]
        assert pulled.read_bytes() == test_image.blob(dg).read_bytes(), dg


def test_copy_to_dir_gives_blobs_with_their_sha256_and_content(registry, clients, test_image,
                                                                tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    out = tmp_path / "pulled-dir"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/umoci:v1", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == test_image.v1
    for dg in test_image.layers + [test_image.config]:
        assert sha256_file(out / dg.split(":")[1]) == dg
    # the first layer carries /etc/hello.txt
    first = out / test_image.layers[0].split(":")[1]
    assert layer_cat(first, "etc/hello.txt") == test_image.hello


def test_inspect_shows_digest_layers_and_labels(registry, clients, test_image, tmp_path, run_id):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    d = json.loads(clients.skopeo("inspect", "--tls-verify=false",
                                  f"docker://{registry.host}/e2e/umoci:v1").stdout)
    assert d["Digest"] == test_image.v1
    assert d["Layers"] == test_image.layers
    assert d["Labels"]["org.example.e2e.run"] == run_id


def test_registry_copy_and_second_manifest_add_tags(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    # registry-to-registry copy in the same repository: blobs exist, only the manifest is PUT
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   f"docker://{registry.host}/e2e/umoci:v1",
                   f"docker://{registry.host}/e2e/umoci:v2")
    assert skopeo_push(clients, registry, test_image, "v3", "e2e/umoci:v3") == \
        test_image.v3
    raw = tmp_path / "raw_v2.json"
    raw.write_text(clients.skopeo("inspect", "--tls-verify=false", "--raw",
                                  f"docker://{registry.host}/e2e/umoci:v2").stdout)
    assert sha256_file(raw) == test_image.v1


def push_three_tags(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   f"docker://{registry.host}/e2e/umoci:v1",
                   f"docker://{registry.host}/e2e/umoci:v2")
    skopeo_push(clients, registry, test_image, "v3", "e2e/umoci:v3")


def test_list_tags_lists_every_tag(registry, clients, test_image, tmp_path):
    push_three_tags(registry, clients, test_image, tmp_path)
    assert tags_of(clients, registry, "e2e/umoci") == ["v1", "v2", "v3"]


def test_skopeo_delete_succeeds(registry, clients, test_image, tmp_path):
    push_three_tags(registry, clients, test_image, tmp_path)
    clients.skopeo("delete", "--tls-verify=false", f"docker://{registry.host}/e2e/umoci:v3")


def test_deleted_manifest_and_its_tag_are_gone(registry, clients, test_image, tmp_path):
    push_three_tags(registry, clients, test_image, tmp_path)
    clients.skopeo("delete", "--tls-verify=false", f"docker://{registry.host}/e2e/umoci:v3")
    p = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                       f"docker://{registry.host}/e2e/umoci:v3", check=False)
    assert p.returncode != 0, "tag v3 still resolves after delete"
    p = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                       f"docker://{registry.host}/e2e/umoci@{test_image.v3}", check=False)
    assert p.returncode != 0, "the deleted manifest is still served"
    r = requests.get(f"{registry.url}/v2/e2e/umoci/manifests/{test_image.v3}",
                     headers={"Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 404
    assert tags_of(clients, registry, "e2e/umoci") == ["v1", "v2"]


def test_tags_sharing_layers_with_a_deleted_manifest_still_pull(registry, clients, test_image,
                                                                 tmp_path):
    push_three_tags(registry, clients, test_image, tmp_path)
    clients.skopeo("delete", "--tls-verify=false", f"docker://{registry.host}/e2e/umoci:v3")
    out = tmp_path / "pulled-v2"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/umoci:v2", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == test_image.v1
    for dg in test_image.layers:
        assert sha256_file(out / dg.split(":")[1]) == dg


def test_docker_schema2_copy_round_trips(registry, clients, test_image, tmp_path):
    skopeo_push(clients, registry, test_image, "v1", "e2e/umoci:v1")
    # converted to a Docker schema 2 manifest, the format docker itself pushes
    dfile = tmp_path / "d.v2s2"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   "-f", "v2s2", "--digestfile", dfile,
                   f"docker://{registry.host}/e2e/umoci:v1",
                   f"docker://{registry.host}/e2e/docker:v1")
    dg = dfile.read_text().strip()
    r = requests.head(f"{registry.url}/v2/e2e/docker/manifests/v1",
                      headers={"Accept": DOCKER_MANIFEST}, timeout=30)
    assert r.headers["Docker-Content-Digest"] == dg
    assert r.headers["Content-Type"].startswith(DOCKER_MANIFEST)
    out = tmp_path / "pulled-v2s2"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false",
                   f"docker://{registry.host}/e2e/docker:v1", f"dir:{out}")
    assert sha256_file(out / "manifest.json") == dg
    m = load_json(out / "manifest.json")
    assert m["mediaType"] == DOCKER_MANIFEST
    for blob in [layer["digest"] for layer in m["layers"]] + [m["config"]["digest"]]:
        assert sha256_file(out / blob.split(":")[1]) == blob
