"""The management SDK (`azure-mgmt-containerregistry`, unmodified) against Wharf's open
development mode (no --auth): its body-less POST actions (listCredentials, ping, listEvents,
getCallbackConfig) carry no Content-Type and must work there, while what a cross-site browser
form can send (application/x-www-form-urlencoded, multipart/form-data, text/plain) stays
refused.
"""

import pytest
import requests
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import (
    RegenerateCredentialParameters,
    WebhookCreateParameters,
)
from e2e_support import ARM_API_VERSION, eventually, push_small_image


class NoCredential(SansIOHTTPPolicy):
    """The open mode asks for no credential: the SDK's bearer policy is replaced by nothing."""


def mgmt_client(server):
    return ContainerRegistryManagementClient(
        credential=object(),  # never asked
        subscription_id=server.subscription,
        base_url=server.url,
        authentication_policy=NoCredential(),
    )


def registry_path(server):
    return (
        f"/subscriptions/{server.subscription}/resourceGroups/{server.resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{server.registry_name}"
    )


def test_bodyless_management_actions_work_in_the_open_mode(open_wharf, receiver):
    client = mgmt_client(open_wharf)
    rg, name = open_wharf.resource_group, open_wharf.registry_name

    reg = client.registries.get(rg, name)
    assert reg.name == name

    hook = client.webhooks.begin_create(rg, name, "openhook", WebhookCreateParameters(
        location=reg.location,
        service_uri=receiver.url("/open"),
        custom_headers={"X-Team": "platform"},
        actions=["push", "delete"],
    )).result()
    assert hook.properties.actions == ["push", "delete"]

    # getCallbackConfig (POST, no body)
    config = client.webhooks.get_callback_config(rg, name, "openhook")
    assert config.service_uri == receiver.url("/open")
    assert config.custom_headers == {"X-Team": "platform"}

    # ping (POST, no body): answers an id and delivers
    ping_id = client.webhooks.ping(rg, name, "openhook").id
    assert ping_id
    digest = push_small_image(open_wharf.url, "app", "v1", "open-sdk")

    def two_deliveries():
        got = receiver.requests("/open")
        assert len(got) == 2, f"{len(got)} of 2 deliveries arrived"
        return got
    bodies = [d.json() for d in eventually(two_deliveries)]
    assert sorted(b["action"] for b in bodies) == ["ping", "push"]
    assert [b["target"]["digest"] for b in bodies if b["action"] == "push"] == [digest]

    # listEvents (POST, no body)
    def history():
        events = list(client.webhooks.list_events(rg, name, "openhook"))
        assert len(events) == 2
        return events
    events = eventually(history)
    assert ping_id in {e.id for e in events}
    assert sorted(e.event_request_message.content.action for e in events) == ["ping", "push"]

    # listCredentials (POST, no body), and regenerateCredential (POST, JSON body) beside it
    creds = client.registries.list_credentials(rg, name)
    assert creds.username == name
    assert [p.name for p in creds.passwords] == ["password", "password2"]
    assert all(p.value for p in creds.passwords)
    regen = client.registries.regenerate_credential(
        rg, name, RegenerateCredentialParameters(name="password"))
    assert regen.passwords[0].value != creds.passwords[0].value
    assert regen.passwords[1].value == creds.passwords[1].value
    again = client.registries.list_credentials(rg, name)
    assert [p.value for p in again.passwords] == [p.value for p in regen.passwords]

    client.webhooks.begin_delete(rg, name, "openhook").result()
    assert [h.name for h in client.webhooks.list(rg, name)] == []


@pytest.mark.parametrize("content_type, body, origin", [
    ("application/x-www-form-urlencoded", "a=b", None),
    ("multipart/form-data; boundary=x",
     "--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n", None),
    ("text/plain", "{}", None),
    ("text/plain", "", None),
    ("application/x-www-form-urlencoded", "", None),
    # a body-less fetch() from another site's page: the browser names that origin
    (None, "", "https://evil.example"),
    (None, "", "null"),
])
def test_what_a_cross_site_page_can_send_stays_refused(open_wharf, content_type, body, origin):
    url = f"{open_wharf.url}{registry_path(open_wharf)}/webhooks/formhook/ping"
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if origin:
        headers["Origin"] = origin
    r = requests.post(url, params={"api-version": ARM_API_VERSION}, data=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "UnsupportedMediaType"
