"""Access control (`wharf serve --auth`): the first start's credentials, ACR's Bearer
challenge, the admin user and a repository-scoped token with skopeo, podman and oras, no
secret in the log or the database files, and a restart that keeps all of it."""

import re

import requests

from e2e_support import push_small_image, skopeo_push


def test_first_start_prints_the_admin_password_and_a_management_token(wharf):
    assert wharf.admin_user
    assert len(wharf.admin_password) == 32, wharf.admin_password
    assert wharf.mgmt_token.startswith("wharfm_")
    # printed on stdout, never in the log
    assert wharf.admin_password not in wharf.log()
    assert wharf.mgmt_token not in wharf.log()


def test_anonymous_pull_gets_401_with_acrs_bearer_challenge(wharf):
    r = requests.get(f"{wharf.url}/v2/e2e/auth/manifests/v1", timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer realm="{wharf.url}/oauth2/token",service="{wharf.host}",'
        'scope="repository:e2e/auth:pull"'
    )


def test_admin_user_pushes_and_pulls_with_skopeo_and_a_wrong_password_fails(
        wharf, clients, test_image):
    creds = f"{wharf.admin_user}:{wharf.admin_password}"
    assert skopeo_push(clients, wharf, test_image, "v1", "e2e/auth:v1", creds=creds) == \
        test_image.v1
    clients.skopeo("inspect", "--tls-verify=false", "--creds", creds,
                   f"docker://{wharf.host}/e2e/auth:v1")
    tags = clients.skopeo("list-tags", "--tls-verify=false", "--creds", creds,
                          f"docker://{wharf.host}/e2e/auth").stdout
    assert '"v1"' in tags
    p = clients.skopeo("inspect", "--tls-verify=false", "--creds",
                       f"{wharf.admin_user}:wrong-password", f"docker://{wharf.host}/e2e/auth:v1",
                       check=False)
    assert p.returncode != 0, "a wrong admin password was accepted"


def make_team_token(wharf) -> str:
    """A token limited to team/app (read, write, metadata read) through a scope map, made with
    the ARM API; returns its password."""
    rid = wharf.registry_id
    wharf.arm("PUT", "/scopeMaps/team-app", {"properties": {"description": "e2e", "actions": [
        "repositories/team/app/content/read", "repositories/team/app/content/write",
        "repositories/team/app/metadata/read"]}})
    wharf.arm("PUT", "/tokens/e2e-team",
              {"properties": {"scopeMapId": f"{rid}/scopeMaps/team-app"}})
    creds = wharf.arm("POST", "/generateCredentials", {"tokenId": f"{rid}/tokens/e2e-team"}).json()
    return creds["passwords"][0]["value"]


def test_scoped_token_password_is_shown_once(wharf):
    tp = make_team_token(wharf)
    assert len(tp) == 32, tp
    assert tp not in wharf.arm("GET", "/tokens/e2e-team").text, "token show prints the password"


def test_skopeo_with_the_token_works_on_its_repository_only(wharf, clients, test_image,
                                                            tmp_path):
    tp = make_team_token(wharf)
    creds = f"e2e-team:{tp}"
    skopeo_push(clients, wharf, test_image, "v1", "team/app:v1", creds=creds)
    clients.skopeo("copy", "--src-tls-verify=false", "--src-creds", creds,
                   f"docker://{wharf.host}/team/app:v1", f"oci:{tmp_path / 'pulled'}:v1")
    p = clients.skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                       f"oci:{test_image.layout}:v1", f"docker://{wharf.host}/other/app:v1",
                       check=False)
    assert p.returncode != 0, "a push outside the token's scope was accepted"
    assert re.search(r"unauthorized|denied|authentication required", p.stderr, re.I), p.stderr


def test_podman_with_the_token_works_on_its_repository_only(wharf, clients, test_image):
    tp = make_team_token(wharf)
    creds = f"e2e-team:{tp}"
    skopeo_push(clients, wharf, test_image, "v1", "team/app:v1", creds=creds)
    clients.podman("pull", "--tls-verify=false", "--creds", creds, f"{wharf.host}/team/app:v1")
    clients.podman("tag", f"{wharf.host}/team/app:v1", f"{wharf.host}/team/app:podman")
    clients.podman("push", "--tls-verify=false", "--creds", creds,
                   f"{wharf.host}/team/app:podman")
    clients.podman("tag", f"{wharf.host}/team/app:v1", f"{wharf.host}/other/app:podman")
    p = clients.podman("push", "--tls-verify=false", "--creds", creds,
                       f"{wharf.host}/other/app:podman", check=False)
    assert p.returncode != 0, "podman pushed outside the token's scope"


def test_oras_with_the_token_works_on_its_repository_only(wharf, clients, oras_files, tmp_path):
    auth = f"e2e-team:{make_team_token(wharf)}"
    push = ["push", "--registry", wharf.host, "--file", "note.txt:text/plain",
            "--config", "config.json:application/vnd.e2e.config+json"]
    clients.oras(*push, "--ref", "team/app:oras", cwd=oras_files, auth=auth)
    clients.oras("pull", "--registry", wharf.host, "--ref", "team/app:oras",
                 "--out", tmp_path / "pull", auth=auth)
    assert (tmp_path / "pull" / "note.txt").read_bytes() == \
        (oras_files / "note.txt").read_bytes()
    p = clients.oras(*push, "--ref", "other/app:oras", cwd=oras_files, auth=auth, check=False)
    assert p.returncode != 0, "oras pushed outside the token's scope"


def test_no_secret_in_the_most_verbose_log_or_in_the_database_files(start_wharf, clients,
                                                                    test_image, oras_files):
    # the most verbose log level: secrets must not appear in it either
    srv = start_wharf(log_level="trace")
    admin = f"{srv.admin_user}:{srv.admin_password}"
    tp = make_team_token(srv)
    # every secret used as clients use it: the token server (skopeo), Basic on every request
    # (oras), a refused password
    skopeo_push(clients, srv, test_image, "v1", "team/app:v1", creds=f"e2e-team:{tp}")
    clients.skopeo("inspect", "--tls-verify=false", "--creds", admin,
                   f"docker://{srv.host}/team/app:v1")
    clients.skopeo("inspect", "--tls-verify=false", "--creds", f"{srv.admin_user}:wrong-s3cret",
                   f"docker://{srv.host}/team/app:v1", check=False)
    clients.oras("push", "--registry", srv.host, "--file", "note.txt:text/plain",
                 "--config", "config.json:application/vnd.e2e.config+json",
                 "--ref", "team/app:oras", cwd=oras_files, auth=f"e2e-team:{tp}")
    # a webhook with secrets in its URI and a header, so they exist in the database
    srv.cli("webhook", "create", "-n", "secrethook",
            "--uri", "http://127.0.0.1:9/h?code=e2e-uri-s3cret", "--actions", "push",
            "--headers", "X-Key=e2e-header-s3cret")
    srv.arm("GET", "")
    log = srv.log()
    db = b"".join(p.read_bytes() for p in srv.data_dir.glob("wharf.db*"))
    assert db, f"no database files in {srv.data_dir}"
    for s in (srv.admin_password, srv.mgmt_token, tp, "wrong-s3cret", "e2e-uri-s3cret",
              "e2e-header-s3cret"):
        assert s not in log, "a secret is in the server log"
        assert s.encode() not in db, "a secret is in the database in clear"
    assert len(log.splitlines()) > 10, "the trace log is suspiciously short"


def test_restart_keeps_the_port_the_credentials_and_the_data(wharf):
    auth = (wharf.admin_user, wharf.admin_password)
    digest = push_small_image(wharf.url, "e2e/restart", "v1", "restart", auth=auth)
    url, token = wharf.url, wharf.mgmt_token
    wharf.restart()
    assert wharf.url == url and wharf.mgmt_token == token
    r = requests.get(f"{wharf.url}/v2/e2e/restart/manifests/v1", auth=auth, timeout=10,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    assert wharf.arm("GET", "").status_code == 200
