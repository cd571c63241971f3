"""Microsoft's data-plane SDK (azure-containerregistry) against Wharf, every
ContainerRegistryClient operation, on a repository whose name contains '/'.

Plain HTTP: the SDK refuses bearer tokens over http unless a request carries
enforce_https=False. Its by-tag helpers (get/update_manifest_properties and
delete_manifest given a tag) resolve the tag with an inner call that drops the
per-call keyword, so the escape hatch is applied client-wide instead: a per-call
pipeline policy sets the same request-context flag the keyword sets. Nothing of
the SDK is changed.
"""

import hashlib
import io
import json
import time

import pytest
import requests
from azure.containerregistry import (
    ArtifactArchitecture,
    ArtifactManifestOrder,
    ArtifactOperatingSystem,
    ArtifactTagOrder,
    ContainerRegistryClient,
)
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import SansIOHTTPPolicy

REPO = "library/hello-sdk"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class ManagementToken:
    """The Entra credential stands in as the management token (acr-auth.md §4.5)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


class PlainHttp(SansIOHTTPPolicy):
    """The client-wide form of the SDK's enforce_https=False escape hatch."""

    def on_request(self, request):
        request.context["enforce_https"] = False


def sdk(wharf):
    return ContainerRegistryClient(
        wharf.url,
        ManagementToken(wharf.mgmt_token),
        audience="https://management.azure.com",
        per_call_policies=[PlainHttp()],
    )


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_image(client, salt, arch="amd64"):
    """Config and layer through upload_blob, the manifest through set_manifest by digest."""
    config = json.dumps({"architecture": arch, "os": "linux", "salt": salt}).encode()
    layer = f"layer-{salt}".encode()
    cd, csize = client.upload_blob(REPO, io.BytesIO(config))
    ld, lsize = client.upload_blob(REPO, io.BytesIO(layer))
    assert (cd, csize) == (sha(config), len(config))
    assert (ld, lsize) == (sha(layer), len(layer))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": csize},
        "layers": [{"mediaType": OCI_LAYER, "digest": ld, "size": lsize}],
    }
    return manifest, config, layer


def test_every_container_registry_client_operation(wharf):
    client = sdk(wharf)
    registry_host = wharf.host

    # upload_blob / download_blob / set_manifest / get_manifest
    manifest, config, layer = upload_image(client, "one")
    stream = client.download_blob(REPO, sha(layer))
    assert b"".join(stream) == layer
    d1 = client.set_manifest(REPO, manifest, tag="v1", media_type=OCI_MANIFEST)
    got = client.get_manifest(REPO, "v1")
    assert got.digest == d1
    assert got.media_type == OCI_MANIFEST
    assert got.manifest["config"]["digest"] == sha(config)
    assert client.get_manifest(REPO, d1).digest == d1
    manifest2, _, _ = upload_image(client, "two", arch="arm64")
    d2 = client.set_manifest(REPO, manifest2, tag="v2", media_type=OCI_MANIFEST)
    client.set_manifest(REPO, manifest2, tag="latest", media_type=OCI_MANIFEST)
    # Another repository, for the catalog.
    other = "other/app"
    cfg_d, cfg_n = client.upload_blob(other, io.BytesIO(b"{}"))
    client.set_manifest(other, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": OCI_CONFIG, "digest": cfg_d, "size": cfg_n},
                                "layers": []}, tag="x", media_type=OCI_MANIFEST)

    # list_repository_names, paged
    names = list(client.list_repository_names(results_per_page=1))
    assert names == ["library/hello-sdk", "other/app"]

    # get/update_repository_properties
    rp = client.get_repository_properties(REPO)
    assert rp.name == REPO
    assert rp.manifest_count == 2 and rp.tag_count == 3
    assert rp.can_delete and rp.can_write and rp.can_read and rp.can_list
    assert rp.created_on is not None and rp.last_updated_on is not None
    rp = client.update_repository_properties(REPO, can_list=False)
    assert rp.can_list is False and rp.can_write is True
    assert list(client.list_repository_names()) == ["other/app"]
    client.update_repository_properties(REPO, can_list=True)

    # list_tag_properties: ordering and paging
    tags = list(client.list_tag_properties(REPO))
    assert [t.name for t in tags] == ["latest", "v1", "v2"]
    # (The SDK's tag listing leaves repository_name unset: it passes `repository=`.)
    assert tags[0].digest == d2
    assert tags[0].created_on is not None and tags[0].last_updated_on is not None
    assert all(t.can_delete and t.can_write for t in tags)
    paged = list(client.list_tag_properties(REPO, results_per_page=1))
    assert [t.name for t in paged] == ["latest", "v1", "v2"]

    # list_manifest_properties: architecture/os from the config, tags, paging, order
    ms = list(client.list_manifest_properties(REPO, results_per_page=1))
    assert sorted(m.digest for m in ms) == sorted([d1, d2])
    by = {m.digest: m for m in ms}
    assert by[d1].architecture == ArtifactArchitecture.AMD64
    assert by[d1].operating_system == ArtifactOperatingSystem.LINUX
    assert by[d2].architecture == ArtifactArchitecture.ARM64
    assert by[d1].tags == ["v1"] and sorted(by[d2].tags) == ["latest", "v2"]
    assert by[d1].size_in_bytes == len(config) + len(layer)
    assert by[d1].repository_name == REPO
    # The SDK builds it from the response's `registry` and strips the algorithm itself.
    assert by[d1].fully_qualified_reference == f"{registry_host}/{REPO}@{d1.split(':')[1]}"
    assert by[d1].created_on is not None and by[d1].last_updated_on is not None

    # get/update_tag_properties
    tp = client.get_tag_properties(REPO, "v1")
    assert tp.name == "v1" and tp.digest == d1
    tp = client.update_tag_properties(REPO, "v1", can_delete=False)
    assert tp.can_delete is False and tp.can_write is True
    # The lock holds: the SDK's delete_tag fails with 405.
    with pytest.raises(HttpResponseError) as e:
        client.delete_tag(REPO, "v1")
    assert e.value.status_code == 405
    assert "DISALLOWED" in str(e.value)
    assert client.get_tag_properties(REPO, "v1").digest == d1
    client.update_tag_properties(REPO, "v1", can_delete=True)

    # get/update_manifest_properties, by digest and by tag
    mp = client.get_manifest_properties(REPO, d1)
    assert mp.digest == d1 and mp.architecture == ArtifactArchitecture.AMD64
    assert client.get_manifest_properties(REPO, "v2").digest == d2
    mp = client.update_manifest_properties(REPO, "v2", can_write=False)
    assert mp.can_write is False and mp.digest == d2
    assert client.get_manifest_properties(REPO, d2).can_write is False
    # The lock holds: neither a push of that manifest (to another tag, or again to its own) nor
    # its delete gets through, and it stays as it was.
    for tag in ("v2", "locked-copy"):
        with pytest.raises(HttpResponseError) as e:
            client.set_manifest(REPO, manifest2, tag=tag, media_type=OCI_MANIFEST)
        assert e.value.status_code == 405, tag
        assert "DISALLOWED" in str(e.value)
    with pytest.raises(HttpResponseError) as e:
        client.delete_manifest(REPO, d2)
    assert e.value.status_code == 405
    assert sorted(client.get_manifest_properties(REPO, d2).tags) == ["latest", "v2"]
    assert [t.name for t in client.list_tag_properties(REPO)] == ["latest", "v1", "v2"]
    mp = client.update_manifest_properties(REPO, d2, can_write=True)
    assert mp.can_write is True

    # delete_tag: untag, the manifest stays
    client.delete_tag(REPO, "latest")
    assert [t.name for t in client.list_tag_properties(REPO)] == ["v1", "v2"]
    assert client.get_manifest_properties(REPO, d2).digest == d2

    # delete_manifest by tag and by digest (the SDK sends sha256%3A…)
    client.delete_manifest(REPO, "v2")
    with pytest.raises(ResourceNotFoundError):
        client.get_manifest_properties(REPO, d2)
    client.delete_manifest(REPO, d1)
    with pytest.raises(ResourceNotFoundError):
        client.get_manifest(REPO, d1)
    r = requests.head(f"{wharf.url}/v2/{REPO}/manifests/{d1}",
                      auth=(wharf.admin_user, wharf.admin_password))
    assert r.status_code == 404

    # delete_blob: the blob leaves that repository (ACR's 202), the SDK raises nothing for one
    # that is not there (its 404), and other repositories keep theirs
    orphan = b"a blob no manifest references"
    od, _ = client.upload_blob(REPO, io.BytesIO(orphan))
    client.upload_blob(other, io.BytesIO(orphan))
    auth = (wharf.admin_user, wharf.admin_password)
    assert requests.get(f"{wharf.url}/v2/{REPO}/blobs/{od}", auth=auth).content == orphan
    assert client.delete_blob(REPO, od) is None
    r = requests.get(f"{wharf.url}/v2/{REPO}/blobs/{od}", auth=auth)
    assert r.status_code == 404
    assert [e["code"] for e in r.json()["errors"]] == ["BLOB_UNKNOWN"]
    with pytest.raises(ResourceNotFoundError):
        b"".join(client.download_blob(REPO, od))
    client.delete_blob(REPO, od)
    assert b"".join(client.download_blob(other, od)) == orphan

    # delete_repository
    client.delete_repository(other)
    assert list(client.list_repository_names()) == ["library/hello-sdk"]
    with pytest.raises(ResourceNotFoundError):
        client.get_repository_properties(other)
    # 404 is not an error for delete_repository
    client.delete_repository("no/such")


def test_time_order_is_not_name_order(wharf):
    """Tags pushed as b, then a, then c (each a manifest of its own): the listings by time
    must follow the pushes, not the names (a, b, c) nor the digests."""
    client = sdk(wharf)
    pushed = {}
    for name in ("b", "a", "c"):
        manifest, _, _ = upload_image(client, f"order-{name}")
        pushed[name] = client.set_manifest(REPO, manifest, tag=name, media_type=OCI_MANIFEST)
        # Times are kept to the millisecond: the next push must not share this one's.
        time.sleep(0.01)
    tags = {t.name: t for t in client.list_tag_properties(REPO)}
    times = [tags[n].last_updated_on for n in ("b", "a", "c")]
    assert times[0] < times[1] < times[2], times
    manifests = {m.digest: m for m in client.list_manifest_properties(REPO)}
    mtimes = [manifests[pushed[n]].last_updated_on for n in ("b", "a", "c")]
    assert mtimes[0] < mtimes[1] < mtimes[2], mtimes

    # the default orders: tags by name, manifests by digest; neither is the time order
    assert [t.name for t in client.list_tag_properties(REPO)] == ["a", "b", "c"]
    by_digest = sorted(pushed.values())
    assert [m.digest for m in client.list_manifest_properties(REPO)] == by_digest
    oldest_first = [pushed[n] for n in ("b", "a", "c")]
    assert by_digest not in (oldest_first, oldest_first[::-1])

    for per_page in (None, 1):
        kw = {"results_per_page": per_page} if per_page else {}
        newest = client.list_tag_properties(
            REPO, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING, **kw)
        assert [t.name for t in newest] == ["c", "a", "b"]
        oldest = client.list_tag_properties(
            REPO, order_by=ArtifactTagOrder.LAST_UPDATED_ON_ASCENDING, **kw)
        assert [t.name for t in oldest] == ["b", "a", "c"]
        newest = client.list_manifest_properties(
            REPO, order_by=ArtifactManifestOrder.LAST_UPDATED_ON_DESCENDING, **kw)
        assert [m.digest for m in newest] == oldest_first[::-1]
        oldest = client.list_manifest_properties(
            REPO, order_by=ArtifactManifestOrder.LAST_UPDATED_ON_ASCENDING, **kw)
        assert [m.digest for m in oldest] == oldest_first

    # moving a tag makes it the newest
    client.set_manifest(REPO, upload_image(client, "order-b2")[0], tag="b",
                        media_type=OCI_MANIFEST)
    newest = client.list_tag_properties(REPO, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING)
    assert [t.name for t in newest] == ["b", "c", "a"]
