"""Wharf's payload formats: one webhook per format (Event Grid, CloudEvents structured and
binary), a push and a delete by digest, each delivery parsed by the format's own SDK."""

import json
import re

import requests
from azure.eventgrid import EventGridEvent
from cloudevents.http import from_http

from e2e_support import eventually, push_small_image

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
FORMATS = {"eg": "eventgrid", "ce": "cloudevents", "bin": "cloudevents-binary"}


def create_format_hooks(srv, receiver):
    made = {}
    for short, fmt in FORMATS.items():
        made[fmt] = srv.cli_json(
            "webhook", "create", "-n", f"e2efmt{short}",
            "--uri", receiver.url(f"/hooks/fmt-{short}"),
            "--actions", "push", "delete", "--scope", "e2e/formats:*", "--payload-format", fmt)
    return made


def test_webhooks_are_created_with_each_payload_format(open_wharf, receiver):
    for fmt, hook in create_format_hooks(open_wharf, receiver).items():
        assert hook["payloadFormat"] == fmt, hook


def parsed(receiver, path):
    """{action: (type, subject, data, id, topic/source)} of the deliveries to `path`."""
    got = {}
    for q in receiver.requests(path):
        body, h = q.body, q.headers
        if path == "/hooks/fmt-eg":
            arr = json.loads(body)
            assert isinstance(arr, list) and len(arr) == 1, f"not a one-event array: {arr}"
            ev = EventGridEvent.from_dict(arr[0])
            assert ev.data_version == "2.0" and h["content-type"] == "application/json", arr
            got[ev.data["action"]] = (ev.event_type, ev.subject, ev.data, ev.id, ev.topic)
        else:
            binary = path == "/hooks/fmt-bin"
            ct = "application/json" if binary else "application/cloudevents+json"
            assert h["content-type"] == ct, f"{path}: content-type {h['content-type']}"
            assert ("ce-id" in h) == binary, f"{path}: ce-* headers {h}"
            ev = from_http(h, body)
            assert ev["specversion"] == "1.0", ev
            got[ev.data["action"]] = (ev["type"], ev["subject"], ev.data, ev["id"], ev["source"])
    return got


def test_push_and_delete_parse_with_azure_eventgrid_and_cloudevents(open_wharf, receiver,
                                                                    run_id):
    create_format_hooks(open_wharf, receiver)
    digest = push_small_image(open_wharf.url, "e2e/formats", "fmt1", f"formats-{run_id}")
    r = requests.delete(f"{open_wharf.url}/v2/e2e/formats/manifests/{digest}", timeout=30)
    assert r.status_code == 202, r.text
    want = {"push": ("Microsoft.ContainerRegistry.ImagePushed", "e2e/formats:fmt1"),
            "delete": ("Microsoft.ContainerRegistry.ImageDeleted", "e2e/formats")}

    def delivered(path):
        got = parsed(receiver, path)
        for action, (ty, subject) in want.items():
            assert action in got, f"{path}: no {action} delivery (yet)"
            gty, gsubject, data, eid, topic = got[action]
            assert (gty, gsubject) == (ty, subject), f"{path} {action}: {gty} {gsubject}"
            assert eid == data["id"] and GUID.match(eid), (eid, data)
            assert topic == open_wharf.registry_id, topic
            assert TS.match(data["timestamp"]) and data["location"], data
            t = data["target"]
            assert t["digest"] == digest and t["repository"] == "e2e/formats", data
            # The scheme and host the client used; plain HTTP here.
            assert t["url"] == f"http://{open_wharf.host}/v2/e2e/formats/manifests/{digest}", data
            assert data["request"]["method"] == ("PUT" if action == "push" else "DELETE"), data
            # ContainerRegistryEventData's request.addr and source; an anonymous caller (the
            # open mode) has no actor.
            assert data["request"]["addr"].startswith("127.0.0.1:"), data
            assert data["source"]["addr"] == open_wharf.host, data
            assert GUID.match(data["source"]["instanceID"]), data
            assert "actor" not in data, data
            if action == "push":
                assert t["tag"] == "fmt1" and t["size"] == t["length"] > 0, data
            else:
                assert "tag" not in t and "size" not in t, data

    for path in ("/hooks/fmt-eg", "/hooks/fmt-ce", "/hooks/fmt-bin"):
        eventually(lambda: delivered(path))
