"""The ARM management plane driven by Microsoft's own management SDK, unmodified
(`azure-mgmt-containerregistry`), over plain HTTP through the documented escape hatch: an
`authentication_policy` that sends the management token as the Bearer value (acr-auth.md §6).

Every registries, webhooks, tokens and scopeMaps operation the SDK has for them, long-running
ones through their pollers (`begin_*`), lists across more than one page (Wharf's default page
is 20 items), each asserting the returned models and the effect on the registry.
"""

import time

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import (
    GenerateCredentialsParameters,
    Policies,
    QuarantinePolicy,
    RegenerateCredentialParameters,
    RegistryUpdateParameters,
    RetentionPolicy,
    ScopeMap,
    ScopeMapUpdateParameters,
    Token,
    TokenUpdateParameters,
    WebhookCreateParameters,
    WebhookUpdateParameters,
)
from e2e_support import ARM_API_VERSION, eventually, push_small_image

PAGE = 20  # Wharf's default page size of ARM lists


class StaticBearer(SansIOHTTPPolicy):
    """The plain-HTTP escape hatch: replaces the SDK's bearer policy (and its HTTPS check)."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def on_request(self, request):
        request.http_request.headers["Authorization"] = "Bearer " + self.token


def mgmt_client(wharf, token=None, **kwargs):
    return ContainerRegistryManagementClient(
        credential=object(),  # never asked: the policy below authenticates
        subscription_id=wharf.subscription,
        base_url=wharf.url,
        authentication_policy=StaticBearer(token or wharf.mgmt_token),
        **kwargs,
    )


def registry_id(wharf):
    return (
        f"/subscriptions/{wharf.subscription}/resourceGroups/{wharf.resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{wharf.registry_name}"
    )


def deliveries(receiver, path, n):
    """The deliveries to `path` once at least `n` have arrived."""
    def check():
        got = receiver.requests(path)
        assert len(got) >= n, f"{path}: {len(got)} of {n} deliveries arrived"
        return got
    return eventually(check)


def test_registry_is_discovered_read_updated_and_keeps_its_policies(wharf):
    client = mgmt_client(wharf)
    rg, name = wharf.resource_group, wharf.registry_name

    listed = list(client.registries.list())
    assert [r.id for r in listed] == [registry_id(wharf)]
    by_rg = list(client.registries.list_by_resource_group(rg))
    assert [r.name for r in by_rg] == [name]

    reg = client.registries.get(rg, name)
    assert reg.id == registry_id(wharf)
    assert reg.name == name
    assert reg.type == "Microsoft.ContainerRegistry/registries"
    assert reg.sku.name == "Premium"
    assert reg.properties.login_server == wharf.host
    assert reg.properties.provisioning_state == "Succeeded"
    assert reg.properties.admin_user_enabled is True
    assert reg.properties.anonymous_pull_enabled is False
    assert reg.properties.policies.quarantine_policy.status == "disabled"
    assert reg.properties.policies.retention_policy.status == "disabled"
    assert reg.properties.policies.retention_policy.days == 7
    assert reg.properties.creation_date is not None

    # anonymous pull is off: the catalog needs credentials
    assert requests.get(f"{wharf.url}/v2/_catalog").status_code == 401

    poller = client.registries.begin_update(rg, name, RegistryUpdateParameters(
        anonymous_pull_enabled=True,
        policies=Policies(
            quarantine_policy=QuarantinePolicy(status="enabled"),
            retention_policy=RetentionPolicy(days=30, status="enabled"),
        ),
    ))
    updated = poller.result()
    assert poller.done() and poller.status() == "Succeeded"
    assert updated.properties.anonymous_pull_enabled is True
    assert updated.properties.policies.quarantine_policy.status == "enabled"
    assert updated.properties.policies.retention_policy.days == 30
    assert updated.properties.policies.retention_policy.status == "enabled"
    assert updated.properties.policies.retention_policy.last_updated_time is not None

    # the effect: anonymous clients may now pull (and read the catalog)
    assert requests.get(f"{wharf.url}/v2/_catalog").status_code == 200

    # invalid values are refused with ARM's error, naming the property
    with pytest.raises(HttpResponseError) as e:
        client.registries.begin_update(rg, name, RegistryUpdateParameters(
            policies=Policies(retention_policy=RetentionPolicy(days=366)))).result()
    assert e.value.status_code == 400
    assert e.value.error.code == "InvalidParameter"
    assert "retentionPolicy.days" in e.value.error.message

    # kept across a restart
    wharf.restart()
    again = client.registries.get(rg, name)
    assert again.properties.policies.quarantine_policy.status == "enabled"
    assert again.properties.policies.retention_policy.days == 30
    assert again.properties.anonymous_pull_enabled is True
    assert again.properties.creation_date == reg.properties.creation_date

    # admin credentials: list, regenerate one, and the new one logs in
    creds = client.registries.list_credentials(rg, name)
    assert creds.username == name
    assert [p.name for p in creds.passwords] == ["password", "password2"]
    assert creds.passwords[0].value == wharf.admin_password
    regen = client.registries.regenerate_credential(
        rg, name, RegenerateCredentialParameters(name="password2"))
    assert regen.passwords[0].value == creds.passwords[0].value
    assert regen.passwords[1].value != creds.passwords[1].value
    r = requests.get(f"{wharf.url}/v2/", auth=(name, regen.passwords[1].value))
    assert r.status_code == 200
    r = requests.get(f"{wharf.url}/v2/", auth=(name, creds.passwords[1].value))
    assert r.status_code == 401


def test_refusals_arrive_as_the_sdk_s_exceptions(wharf):
    client = mgmt_client(wharf)
    with pytest.raises(ResourceNotFoundError) as e:
        client.registries.get(wharf.resource_group, "contoso")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        client.registries.get("rg-elsewhere", wharf.registry_name)
    assert e.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.webhooks.get(wharf.resource_group, wharf.registry_name, "nosuchhook")

    with pytest.raises(ClientAuthenticationError) as e:
        mgmt_client(wharf, token="wharfm_not-the-token").registries.get(
            wharf.resource_group, wharf.registry_name)
    assert e.value.error.code == "InvalidAuthenticationToken"

    with pytest.raises(HttpResponseError) as e:
        mgmt_client(wharf, api_version="2099-01-01").registries.get(
            wharf.resource_group, wharf.registry_name)
    assert e.value.status_code == 400
    assert e.value.error.code == "InvalidApiVersionParameter"
    # the newest preview (Azure CLI's) works too
    reg = mgmt_client(wharf, api_version="2026-09-01-preview").registries.get(
        wharf.resource_group, wharf.registry_name)
    assert reg.name == wharf.registry_name


def test_webhooks_through_the_sdk_fire_and_page(wharf, receiver):
    client = mgmt_client(wharf)
    rg, name = wharf.resource_group, wharf.registry_name

    poller = client.webhooks.begin_create(rg, name, "deployhook", WebhookCreateParameters(
        location="local",
        tags={"team": "platform"},
        service_uri=receiver.url("/deploy"),
        custom_headers={"Authorization": "Bearer s3cret"},
        status="enabled",
        scope="app:*",
        actions=["push", "delete"],
    ))
    hook = poller.result()
    assert poller.status() == "Succeeded"
    assert hook.id == registry_id(wharf) + "/webhooks/deployhook"
    assert hook.name == "deployhook"
    assert hook.type == "Microsoft.ContainerRegistry/registries/webhooks"
    assert hook.location == "local"
    assert hook.tags == {"team": "platform"}
    assert hook.properties.status == "enabled"
    assert hook.properties.scope == "app:*"
    assert sorted(hook.properties.actions) == ["delete", "push"]
    assert hook.properties.provisioning_state == "Succeeded"

    # the effect: a push to the scope fires it, with the custom header
    auth = (wharf.admin_user, wharf.admin_password)
    digest = push_small_image(wharf.url, "app", "v1", "arm-sdk", auth=auth)
    delivery, = deliveries(receiver, "/deploy", 1)
    body = delivery.json()
    assert body["action"] == "push"
    assert body["target"]["repository"] == "app"
    assert body["target"]["digest"] == digest
    assert body["target"]["tag"] == "v1"
    assert delivery.headers["authorization"] == "Bearer s3cret"

    config = client.webhooks.get_callback_config(rg, name, "deployhook")
    assert config.service_uri == receiver.url("/deploy")
    assert config.custom_headers == {"Authorization": "Bearer s3cret"}

    updated = client.webhooks.begin_update(rg, name, "deployhook", WebhookUpdateParameters(
        tags={"team": "ops"}, actions=["push"], status="disabled")).result()
    assert updated.tags == {"team": "ops"}
    assert updated.properties.actions == ["push"]
    assert updated.properties.status == "disabled"
    got = client.webhooks.get(rg, name, "deployhook")
    assert got.properties.status == "disabled"
    # disabled: the next push is not delivered
    push_small_image(wharf.url, "app", "v2", "arm-sdk-2", auth=auth)
    client.webhooks.begin_update(rg, name, "deployhook",
                                 WebhookUpdateParameters(status="enabled")).result()

    # ping answers an EventInfo and delivers; listEvents pages past the default page size
    ids = [client.webhooks.ping(rg, name, "deployhook").id for _ in range(PAGE + 1)]
    assert len(set(ids)) == PAGE + 1
    deliveries(receiver, "/deploy", PAGE + 2)
    deadline = time.monotonic() + 15
    while True:
        events = list(client.webhooks.list_events(rg, name, "deployhook"))
        if len(events) >= PAGE + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(events) == PAGE + 2, "one push and the pings, across two pages"
    actions = sorted(e.event_request_message.content.action for e in events)
    assert actions == ["ping"] * (PAGE + 1) + ["push"]
    assert {e.id for e in events} >= set(ids)
    assert all(e.event_response_message.status_code == "200" for e in events)
    push, = [e for e in events if e.event_request_message.content.action == "push"]
    # the push made while the webhook was disabled was never sent
    assert push.event_request_message.content.target.tag == "v1"
    sent = [d.json() for d in receiver.requests("/deploy")]
    assert [b["target"]["tag"] for b in sent if b["action"] == "push"] == ["v1"]
    # the service URI is secret: history shows its origin, the path masked
    assert push.event_request_message.request_uri == receiver.url("/******")
    assert push.event_request_message.content.target.repository == "app"

    # the list pages too
    for i in range(PAGE):
        client.webhooks.begin_create(rg, name, f"pagehook{i:02}", WebhookCreateParameters(
            location="local", service_uri=receiver.url("/p"), actions=["push"])).result()
    hooks = list(client.webhooks.list(rg, name))
    assert len(hooks) == PAGE + 1
    # (the server did page: its first page is full and links the next)
    first = requests.get(f"{wharf.url}{registry_id(wharf)}/webhooks",
                         params={"api-version": ARM_API_VERSION},
                         headers={"Authorization": "Bearer " + wharf.mgmt_token}).json()
    assert len(first["value"]) == PAGE and "nextLink" in first
    assert len({h.name for h in hooks}) == PAGE + 1
    assert all(h.id.startswith(registry_id(wharf) + "/webhooks/") for h in hooks)

    # a PUT on an existing webhook replaces it
    replaced = client.webhooks.begin_create(rg, name, "pagehook00", WebhookCreateParameters(
        location="local", service_uri=receiver.url("/q"), actions=["delete"])).result()
    assert replaced.properties.actions == ["delete"]
    assert client.webhooks.get(rg, name, "pagehook00").properties.actions == ["delete"]
    assert client.webhooks.get_callback_config(rg, name, "pagehook00").service_uri == \
        receiver.url("/q")

    poller = client.webhooks.begin_delete(rg, name, "deployhook")
    assert poller.result() is None
    assert poller.status() == "Succeeded"
    with pytest.raises(ResourceNotFoundError):
        client.webhooks.get(rg, name, "deployhook")
    # deleting what is gone is no error (204)
    client.webhooks.begin_delete(rg, name, "deployhook").result()


def test_scope_maps_and_tokens_through_the_sdk(wharf):
    client = mgmt_client(wharf)
    rg, name = wharf.resource_group, wharf.registry_name
    rid = registry_id(wharf)

    system = list(client.scope_maps.list(rg, name))
    assert {m.name for m in system} == {
        "_repositories_pull", "_repositories_pull_metadata_read", "_repositories_push",
        "_repositories_push_metadata_write", "_repositories_admin"}
    assert all(m.properties.type == "SystemDefined" for m in system)

    created = client.scope_maps.begin_create(rg, name, "team-a", ScopeMap(
        description="team A",
        actions=["repositories/team-a/app/content/read", "repositories/team-a/app/metadata/read"],
    )).result()
    assert created.id == rid + "/scopeMaps/team-a"
    assert created.properties.type == "UserDefined"
    assert created.properties.description == "team A"
    assert created.properties.provisioning_state == "Succeeded"
    assert created.properties.creation_date is not None

    # more maps than one page holds
    for i in range(PAGE - 4):
        client.scope_maps.begin_create(rg, name, f"extra-{i:02}", ScopeMap(
            actions=[f"repositories/extra{i}/content/read"])).result()
    maps = list(client.scope_maps.list(rg, name))
    assert len(maps) == 5 + 1 + PAGE - 4
    assert len({m.name for m in maps}) == len(maps)

    updated = client.scope_maps.begin_update(rg, name, "team-a", ScopeMapUpdateParameters(
        description="team A, pushing",
        actions=["repositories/team-a/app/content/read", "repositories/team-a/app/content/write"],
    )).result()
    assert updated.properties.description == "team A, pushing"
    assert updated.properties.actions == [
        "repositories/team-a/app/content/read", "repositories/team-a/app/content/write"]
    assert client.scope_maps.get(rg, name, "team-a").properties.description == "team A, pushing"

    token = client.tokens.begin_create(rg, name, "ci-push", Token(
        scope_map_id=rid + "/scopeMaps/team-a", status="enabled")).result()
    assert token.id == rid + "/tokens/ci-push"
    assert token.properties.scope_map_id == rid + "/scopeMaps/team-a"
    assert token.properties.status == "enabled"
    assert token.properties.provisioning_state == "Succeeded"

    poller = client.registries.begin_generate_credentials(rg, name, GenerateCredentialsParameters(
        token_id=rid + "/tokens/ci-push", name="password1"))
    generated = poller.result()
    assert poller.status() == "Succeeded"
    assert generated.username == "ci-push"
    assert generated.passwords[0].name == "password1"
    password = generated.passwords[0].value
    assert len(password) >= 32

    # the effect: the token pushes to what its scope map allows, and nothing else
    auth = ("ci-push", password)
    digest = push_small_image(wharf.url, "team-a/app", "v1", "arm-sdk-token", auth=auth)
    r = requests.get(f"{wharf.url}/v2/team-a/app/manifests/v1", auth=auth,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    admin = (wharf.admin_user, wharf.admin_password)
    push_small_image(wharf.url, "other", "v1", "arm-sdk-other", auth=admin)
    assert requests.get(f"{wharf.url}/v2/other/manifests/v1", auth=admin).status_code == 200
    assert requests.get(f"{wharf.url}/v2/other/manifests/v1", auth=auth).status_code == 401
    r = requests.post(f"{wharf.url}/v2/other/blobs/uploads/", auth=auth)
    assert r.status_code == 401

    shown = client.tokens.get(rg, name, "ci-push")
    assert [p.name for p in shown.properties.credentials.passwords] == ["password1"]
    assert shown.properties.credentials.passwords[0].value is None

    disabled = client.tokens.begin_update(rg, name, "ci-push", TokenUpdateParameters(
        status="disabled")).result()
    assert disabled.properties.status == "disabled"
    assert requests.get(f"{wharf.url}/v2/team-a/app/manifests/v1", auth=auth).status_code == 401

    for i in range(PAGE):
        client.tokens.begin_create(rg, name, f"bulk-{i:02}", Token(
            scope_map_id=rid + "/scopeMaps/_repositories_pull")).result()
    tokens = list(client.tokens.list(rg, name))
    assert len(tokens) == PAGE + 1
    assert {t.name for t in tokens} == {"ci-push"} | {f"bulk-{i:02}" for i in range(PAGE)}

    # a scope map in use cannot be deleted; once its token is gone, it can
    with pytest.raises(HttpResponseError) as e:
        client.scope_maps.begin_delete(rg, name, "team-a").result()
    assert e.value.status_code == 409
    client.tokens.begin_delete(rg, name, "ci-push").result()
    with pytest.raises(ResourceNotFoundError):
        client.tokens.get(rg, name, "ci-push")
    client.scope_maps.begin_delete(rg, name, "team-a").result()
    with pytest.raises(ResourceNotFoundError):
        client.scope_maps.get(rg, name, "team-a")
