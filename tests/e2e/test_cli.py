"""The wharf CLI as an az user drives it: `wharf repository` (az acr repository) over the
/acr/v1 data plane on a repository whose name has a '/', az's output formats and --query, and
-r/-g checked against the server's registry. Effects are checked on the registry's own API."""

import json

import requests

from e2e_support import push_small_image

REPO = "team/cli-app"


def acr_get(wharf, path):
    """A GET on the registry with the admin user (the data plane takes Basic, as ACR does)."""
    return requests.get(f"{wharf.url}{path}", auth=(wharf.admin_user, wharf.admin_password),
                        timeout=30)


def test_repository_commands_change_the_registry_as_az_acr_repository_does(wharf):
    auth = (wharf.admin_user, wharf.admin_password)
    d1 = push_small_image(wharf.url, REPO, "v1", "one", auth=auth)
    d2 = push_small_image(wharf.url, REPO, "v2", "two", auth=auth)

    assert wharf.cli_json("repository", "list") == [REPO]
    assert wharf.cli("repository", "list", "-o", "tsv").stdout == f"{REPO}\n"
    assert wharf.cli_json("repository", "show-tags", "--repository", REPO) == ["v1", "v2"]
    shown = wharf.cli_json("repository", "show", "--image", f"{REPO}:v1")
    assert shown["imageName"] == REPO and shown["tag"]["digest"] == d1

    # --query before the format, as az applies it
    digests = wharf.cli_json("repository", "show-manifests", "--repository", REPO,
                             "--query", "[?contains(tags, 'v2')].digest")
    assert digests == [d2]
    rows = wharf.cli("repository", "show-tags", "--repository", REPO, "--detail",
                     "--query", "[].[name, digest]", "-o", "tsv").stdout.splitlines()
    assert [r.split("\t") for r in rows] == [["v1", d1], ["v2", d2]]

    # a lock, seen on the data plane
    wharf.cli("repository", "update", "--image", f"{REPO}:v1", "--write-enabled", "false")
    tag = acr_get(wharf, f"/acr/v1/{REPO}/_tags/v1").json()["tag"]
    assert tag["changeableAttributes"]["writeEnabled"] is False

    # untag keeps the manifest; delete by digest removes it
    wharf.cli("repository", "untag", "--image", f"{REPO}:v2")
    assert acr_get(wharf, f"/v2/{REPO}/manifests/v2").status_code == 404
    assert acr_get(wharf, f"/v2/{REPO}/manifests/{d2}").status_code == 200
    wharf.cli("repository", "delete", "--image", f"{REPO}@{d2}", "--yes")
    assert acr_get(wharf, f"/v2/{REPO}/manifests/{d2}").status_code == 404

    # the admin user on the command line works as well as the management token
    p = wharf.cli("repository", "show", "--repository", REPO,
                  "-u", wharf.admin_user, "-p", wharf.admin_password, token=False)
    assert json.loads(p.stdout)["imageName"] == REPO

    wharf.cli("repository", "update", "--image", f"{REPO}:v1", "--write-enabled", "true")
    gone = wharf.cli_json("repository", "delete", "--repository", REPO, "--yes")
    assert gone["tagsDeleted"] == ["v1"]
    assert wharf.cli_json("repository", "list") == []


def test_registry_and_resource_group_are_the_servers(wharf):
    ok = wharf.cli_json("registry", "show", "-r", wharf.registry_name,
                        "-g", wharf.resource_group)
    assert ok["name"] == wharf.registry_name
    p = wharf.cli("token", "list", "-r", "elsewhere", check=False)
    assert p.returncode != 0 and p.stdout == ""
    assert '"elsewhere"' in p.stderr and f'"{wharf.registry_name}"' in p.stderr
    p = wharf.cli("webhook", "list", "-g", "other-rg", check=False)
    assert p.returncode != 0
    assert '"other-rg"' in p.stderr and f'"{wharf.resource_group}"' in p.stderr


def test_debug_traffic_carries_no_secret(wharf):
    p = wharf.cli("credential", "show", "--debug")
    creds = json.loads(p.stdout)
    assert "DEBUG: Request URL:" in p.stderr
    assert wharf.mgmt_token not in p.stderr
    for pw in creds["passwords"]:
        assert pw["value"] not in p.stderr
