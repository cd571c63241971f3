"""Wharf's Standard Webhooks signing extension (verified with the reference library), secret
rotation with a grace period, and the SSRF guard's refusal of cloud metadata endpoints."""

import base64
import json

from standardwebhooks.webhooks import Webhook

from e2e_support import eventually, push_small_image

HOOK = "e2esigned"


def create_signed_hook(srv, receiver):
    out = srv.cli("webhook", "create", "-n", HOOK, "--uri", receiver.url("/hooks/signed"),
                  "--actions", "push", "--scope", "e2e/signed:*", "--signing", "enabled").stdout
    return out, srv.cli_json("webhook", "get-config", "-n", HOOK)["signingSecret"]


def assert_signed_delivery(receiver, tag, secrets):
    """The push of e2e/signed:<tag> arrived with one v1 signature per secret, each verifying
    with standardwebhooks (HMAC over the exact bytes, timestamp within 5 minutes)."""
    found = []
    for q in receiver.requests("/hooks/signed"):
        e = json.loads(q.body)
        if e.get("action") == "push" and e["target"].get("tag") == tag:
            found.append((q, e))
    assert found, f"no signed delivery (yet) for e2e/signed:{tag}"
    q, e = found[-1]
    h = q.headers
    assert h.get("webhook-id") == e["id"], f"webhook-id is not the event id: {h}"
    sigs = h.get("webhook-signature", "").split(" ")
    assert len(sigs) == len(secrets) and all(s.startswith("v1,") for s in sigs), sigs
    for secret in secrets:
        Webhook(secret).verify(q.body, h)
    wrong = "whsec_" + base64.b64encode(b"e2e-not-the-secret-000000").decode()
    try:
        Webhook(wrong).verify(q.body, h)
    except Exception:
        pass
    else:
        raise AssertionError("a wrong secret verified")


def test_signing_webhook_get_config_shows_the_whsec_secret_and_only_it(open_wharf, receiver):
    out, secret = create_signed_hook(open_wharf, receiver)
    assert json.loads(out)["signing"]["enabled"] is True
    assert secret.startswith("whsec_")
    show = open_wharf.cli("webhook", "show", "-n", HOOK).stdout
    assert "whsec_" not in out and "whsec_" not in show, "create or show printed the secret"


def test_signed_push_delivery_verifies_with_standardwebhooks(open_wharf, receiver, run_id):
    _, secret = create_signed_hook(open_wharf, receiver)
    push_small_image(open_wharf.url, "e2e/signed", "v1", f"signed-1-{run_id}")
    eventually(lambda: assert_signed_delivery(receiver, "v1", [secret]))


def rotate(srv):
    out = srv.cli("webhook", "rotate-secret", "-n", HOOK, "--grace-period", "600").stdout
    return out, srv.cli_json("webhook", "get-config", "-n", HOOK)["signingSecret"]


def test_after_rotation_deliveries_verify_with_the_old_and_the_new_secret(open_wharf, receiver,
                                                                         run_id):
    _, old = create_signed_hook(open_wharf, receiver)
    out, new = rotate(open_wharf)
    assert json.loads(out)["signing"].get("previousSecretExpiresAt"), out
    assert "whsec_" not in out, "rotate-secret printed a secret"
    assert new.startswith("whsec_") and new != old
    push_small_image(open_wharf.url, "e2e/signed", "v2", f"signed-2-{run_id}")
    # within the grace period both secrets sign: each verifies the same delivery
    eventually(lambda: assert_signed_delivery(receiver, "v2", [new, old]))


def test_list_events_masks_the_signature_and_shows_no_secret(open_wharf, receiver, run_id):
    _, old = create_signed_hook(open_wharf, receiver)
    push_small_image(open_wharf.url, "e2e/signed", "v1", f"signed-1-{run_id}")
    eventually(lambda: assert_signed_delivery(receiver, "v1", [old]))
    _, new = rotate(open_wharf)
    push_small_image(open_wharf.url, "e2e/signed", "v2", f"signed-2-{run_id}")
    eventually(lambda: assert_signed_delivery(receiver, "v2", [new, old]))

    def listed():
        out = open_wharf.cli("webhook", "list-events", "-n", HOOK).stdout
        assert len(json.loads(out)) >= 2, out
        return out

    out = eventually(listed, timeout=15)
    sigs = {h["eventRequestMessage"]["headers"].get("webhook-signature")
            for h in json.loads(out)}
    assert sigs == {"******"}, f"list-events does not mask webhook-signature: {sigs}"
    assert old not in out and new not in out, "list-events printed a secret"


def test_a_cloud_metadata_uri_is_refused_naming_the_rule(open_wharf):
    p = open_wharf.cli("webhook", "create", "-n", "e2essrf",
                       "--uri", "http://169.254.169.254/latest/meta-data/", "--actions", "push",
                       check=False)
    assert p.returncode != 0, "a webhook aimed at the cloud metadata endpoint was accepted"
    assert "cloud metadata" in p.stderr, p.stderr
    assert "meta-data" not in p.stderr, "the refusal echoes the URI"
    # and nothing was created
    assert "e2essrf" not in open_wharf.cli("webhook", "list").stdout
