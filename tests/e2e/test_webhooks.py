"""ACR webhooks, created with the `wharf webhook` CLI, fired by real clients' pushes and
deletes, delivered to a receiver: the event shapes, the delivery headers, ping, list-events."""

import json
import re

import pytest

from e2e_support import (
    ART_CFG_MT,
    ART_DATA_MT,
    ART_NOTE_MT,
    buildah_build_push,
    buildah_index_push,
    eventually,
    helm_push_charts,
    oras_push,
    podman_pull_push,
    skopeo_push,
)

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
HOOK = "e2ehook"


def secret_header(run_id):
    return f"Bearer e2e-secret-{run_id}"


def create_hook(srv, receiver, run_id):
    """The webhook of these tests: push and delete, to /hooks/e2e with a secret query string
    and a secret custom header."""
    return srv.cli_json(
        "webhook", "create", "-n", HOOK,
        "--uri", receiver.url(f"/hooks/e2e?token=q-{run_id}"),
        "--actions", "push", "delete", "--headers", f"Authorization={secret_header(run_id)}",
    )


def acr_events(receiver):
    return [d.json() for d in receiver.requests("/hooks/e2e")]


def common(e, keys):
    assert set(e) == keys, f"keys {sorted(e)} != {sorted(keys)}: {e}"
    assert GUID.match(e["id"]), e
    assert TS.match(e["timestamp"]), e


def assert_push_events(receiver, host, pushes):
    """Every (repository, tag, digest) in `pushes` has its ACR push event, of ACR's shape."""
    events = acr_events(receiver)
    missing = []
    for repo, tag, digest in pushes:
        found = [e for e in events if e.get("action") == "push"
                 and e["target"].get("repository") == repo and e["target"].get("tag") == tag
                 and e["target"].get("digest") == digest]
        if not found:
            missing.append(f"{repo}:{tag}@{digest}")
            continue
        e = found[0]
        common(e, {"id", "timestamp", "action", "target", "request"})
        t, r = e["target"], e["request"]
        assert set(t) == {"mediaType", "size", "digest", "length", "repository", "tag"}, e
        assert t["size"] == t["length"] and t["size"] > 0, e
        assert "manifest" in t["mediaType"] or "index" in t["mediaType"], e
        assert set(r) >= {"id", "host", "method"} and GUID.match(r["id"]), e
        assert r["method"] == "PUT" and r["host"] == host, e
        assert r.get("useragent"), f"no useragent: {e}"
    assert not missing, "no push event (yet) for: " + ", ".join(missing)


def test_webhook_create_prints_no_secret_and_get_config_shows_it(open_wharf, receiver, run_id):
    out = open_wharf.cli("webhook", "create", "-n", HOOK,
                         "--uri", receiver.url(f"/hooks/e2e?token=q-{run_id}"),
                         "--actions", "push", "delete",
                         "--headers", f"Authorization={secret_header(run_id)}").stdout
    d = json.loads(out)
    assert d["name"] == HOOK
    assert d["actions"] == ["push", "delete"]
    assert d["status"] == "enabled"
    assert run_id not in out, "create printed a secret"
    assert run_id not in open_wharf.cli("webhook", "show", "-n", HOOK).stdout, \
        "show printed a secret"
    cfg = open_wharf.cli_json("webhook", "get-config", "-n", HOOK)
    assert cfg["customHeaders"]["Authorization"] == secret_header(run_id)


def test_each_skopeo_push_raises_an_acr_push_event(open_wharf, receiver, clients, test_image,
                                                   run_id):
    create_hook(open_wharf, receiver, run_id)
    reg = open_wharf
    v1 = skopeo_push(clients, reg, test_image, "v1", "e2e/umoci:v1")
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   f"docker://{reg.host}/e2e/umoci:v1", f"docker://{reg.host}/e2e/umoci:v2")
    v3 = skopeo_push(clients, reg, test_image, "v3", "e2e/umoci:v3")
    v2s2 = clients.work / "d.v2s2"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   "-f", "v2s2", "--digestfile", v2s2, f"docker://{reg.host}/e2e/umoci:v1",
                   f"docker://{reg.host}/e2e/docker:v1")
    pushes = [("e2e/umoci", "v1", v1), ("e2e/umoci", "v2", v1), ("e2e/umoci", "v3", v3),
              ("e2e/docker", "v1", v2s2.read_text().strip())]
    eventually(lambda: assert_push_events(receiver, reg.host, pushes))


def test_each_podman_buildah_and_oras_push_raises_an_acr_push_event(
        open_wharf, receiver, clients, test_image, oras_files, tmp_path, run_id):
    create_hook(open_wharf, receiver, run_id)
    reg = open_wharf
    skopeo_push(clients, reg, test_image, "v1", "e2e/umoci:v1")
    pushes = [("e2e/podman", "v1", podman_pull_push(clients, reg, "e2e/umoci:v1",
                                                    "e2e/podman:v1"))]
    pushes.append(("e2e/buildah", "v1", buildah_build_push(clients, reg, "e2e/podman:v1",
                                                           "e2e/buildah:v1", run_id)))
    pushes.append(("e2e/multi", "v1", buildah_index_push(clients, reg, "e2e/podman:v1",
                                                         "e2e/buildah:v1", "e2e/multi:v1")))
    pushes.append(("e2e/artifact", "v1", oras_push(
        clients, reg, oras_files, "e2e/artifact:v1", [f"note.txt:{ART_NOTE_MT}"],
        f"config.json:{ART_CFG_MT}")))
    pushes.append(("e2e/artifact", "chunked", oras_push(
        clients, reg, oras_files, "e2e/artifact:chunked", [f"data.bin:{ART_DATA_MT}"],
        f"config.json:{ART_CFG_MT}", "--chunk-size", "65536")))
    for tag, dg in helm_push_charts(clients, reg, tmp_path / "chart", run_id).items():
        pushes.append(("e2e/charts/webapp", tag, dg))
    eventually(lambda: assert_push_events(receiver, reg.host, pushes))


def test_skopeo_delete_raises_an_acr_delete_event(open_wharf, receiver, clients, test_image,
                                                  run_id):
    create_hook(open_wharf, receiver, run_id)
    skopeo_push(clients, open_wharf, test_image, "v1", "e2e/umoci:v1")
    skopeo_push(clients, open_wharf, test_image, "v3", "e2e/umoci:v3")
    clients.skopeo("delete", "--tls-verify=false", f"docker://{open_wharf.host}/e2e/umoci:v3")

    def deleted():
        found = [e for e in acr_events(receiver) if e.get("action") == "delete"
                 and e["target"].get("digest") == test_image.v3]
        assert found, f"no delete event (yet) for e2e/umoci@{test_image.v3}"
        e = found[0]
        common(e, {"id", "timestamp", "action", "target", "request"})
        assert set(e["target"]) == {"mediaType", "digest", "repository"}, e
        assert e["target"]["repository"] == "e2e/umoci", e
        assert e["request"]["method"] == "DELETE", e

    eventually(deleted)


def test_deliveries_carry_content_type_user_agent_and_the_custom_header(
        open_wharf, receiver, clients, test_image, run_id):
    create_hook(open_wharf, receiver, run_id)
    v1 = skopeo_push(clients, open_wharf, test_image, "v1", "e2e/umoci:v1")
    eventually(lambda: assert_push_events(receiver, open_wharf.host, [("e2e/umoci", "v1", v1)]))
    reqs = receiver.requests("/hooks/e2e")
    assert reqs
    for q in reqs:
        h = q.headers
        assert q.path == f"/hooks/e2e?token=q-{run_id}", q.path
        assert h.get("content-type") == "application/json", h
        assert h.get("user-agent", "").startswith("Wharf/"), h
        assert h.get("authorization") == secret_header(run_id), "custom header not sent"
        assert "webhook-signature" not in h, f"signed although signing is off: {h}"


def ping(srv, receiver):
    pid = srv.cli_json("webhook", "ping", "-n", HOOK)["id"]

    def arrived():
        found = [e for e in acr_events(receiver) if e.get("id") == pid]
        assert found, f"no ping {pid} (yet)"
        common(found[0], {"id", "timestamp", "action"})
        assert found[0]["action"] == "ping", found

    eventually(arrived)
    return pid


def test_webhook_ping_is_delivered(open_wharf, receiver, run_id):
    create_hook(open_wharf, receiver, run_id)
    ping(open_wharf, receiver)


def test_list_events_shows_the_ping_and_the_pushes(open_wharf, receiver, clients, test_image,
                                                   run_id):
    create_hook(open_wharf, receiver, run_id)
    v1 = skopeo_push(clients, open_wharf, test_image, "v1", "e2e/umoci:v1")
    eventually(lambda: assert_push_events(receiver, open_wharf.host, [("e2e/umoci", "v1", v1)]))
    pid = ping(open_wharf, receiver)

    def listed():
        # history is written in batches just after delivery
        out = open_wharf.cli("webhook", "list-events", "-n", HOOK, "--top", "1000").stdout
        hist = json.loads(out)
        received = {e["id"] for e in acr_events(receiver)}
        pings = [h for h in hist if h["id"] == pid]
        assert pings, f"ping {pid} not in list-events"
        assert pings[0]["eventRequestMessage"]["content"]["action"] == "ping", pings
        assert pings[0]["eventResponseMessage"]["statusCode"] == "200", pings
        pushes = [h for h in hist if h["eventRequestMessage"]["content"].get("action") == "push"]
        assert pushes, "no push in list-events"
        for h in pushes + pings:
            assert h["id"] in received, f"{h['id']} listed but never received"
            assert h["eventResponseMessage"]["statusCode"] == "200", h
            assert h["eventRequestMessage"]["headers"].get("Authorization") == "******", h
            assert h["eventRequestMessage"]["requestUri"].endswith("/******"), h
        return out

    out = eventually(listed, timeout=15)
    assert run_id not in out, "list-events printed a secret"
    table = open_wharf.cli("webhook", "list-events", "-n", HOOK, "-o", "table").stdout
    assert re.search(rf"^{pid} +ping +200 OK", table, re.M), table
    assert re.search(r" push +e2e/umoci:v1 +200 OK", table), table


@pytest.fixture(autouse=True)
def _no_secret_in_the_log(request):
    """Whatever the test did, the server log holds none of its secrets."""
    yield
    srv = request.node.funcargs.get("open_wharf")
    run_id = request.node.funcargs.get("run_id")
    if srv is not None and run_id is not None:
        assert f"e2e-secret-{run_id}" not in srv.log(), "a webhook secret is in the server log"
