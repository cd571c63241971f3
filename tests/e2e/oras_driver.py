#!/usr/bin/env python3
"""Small oras-py (PyPI `oras`, pinned in requirements.txt) driver for the end-to-end suite:
the tests run it through subprocess, as a client command like skopeo or podman.

Every subcommand talks plain HTTP to the registry given with --registry
(host:port), or HTTPS verified against a CA bundle with --ca-file PATH (given
before the subcommand), and prints machine-readable output on stdout;
diagnostics go to stderr. Exit status is non-zero on any failure.

  push     --registry R --ref REPO:TAG --file PATH:MEDIATYPE... --config PATH:MEDIATYPE
           [--annotation K=V]... [--chunk-size BYTES]
           -> prints the manifest digest (Docker-Content-Digest of the manifest PUT)
  pull     --registry R --ref REPO:TAG --out DIR           -> prints pulled file paths
  manifest --registry R --ref REPO:TAG|REPO@DIGEST          -> prints the manifest JSON
  blob     --registry R --repo REPO --digest D --out FILE   -> writes the blob
  tags     --registry R --repo REPO [--page-size N]         -> prints tags, one a line
           (--page-size walks the `Link: <...>; rel="next"` pagination with ?n=N)
"""

import argparse
import json
import os
import sys
import types

import oras.client  # OrasClient is an alias of oras.provider.Registry
import oras.decorator
import oras.provider

# oras-py retries failed requests (connection errors, HTTP 500) five times,
# sleeping 2+3**attempt seconds in between (~2 minutes in total). That hides
# failures and blows the e2e time budget, so make the back-off near-instant.
oras.decorator.time = types.SimpleNamespace(sleep=lambda _s: None)


CA_FILE = None  # set by --ca-file: HTTPS, verified against this bundle


def client(registry):
    # --ca-file: HTTPS, verified against that bundle (tls_verify takes a CA bundle path as
    # well as a bool, as requests' `verify` does). Otherwise plain HTTP.
    insecure = not CA_FILE
    verify = CA_FILE or True
    # ORAS_AUTH=user:password: send Basic credentials on every request, which ACR (and Wharf)
    # accept on every data-plane route. (oras-py 0.2.43's token backend keeps the first token
    # it gets, pull-scoped from a HEAD, and never asks again for push: it cannot push to any
    # registry that grants only what the challenge asked for.) No credentials file is written.
    creds = os.environ.get("ORAS_AUTH")
    if not creds:
        return oras.client.OrasClient(hostname=registry, insecure=insecure, tls_verify=verify)
    c = oras.client.OrasClient(
        hostname=registry, insecure=insecure, tls_verify=verify, auth_backend="basic"
    )
    user, _, password = creds.partition(":")
    c.auth.set_basic_auth(user, password)
    return c


def cmd_push(a):
    c = client(a.registry)
    annotations = {}
    for kv in a.annotation or []:
        k, _, v = kv.partition("=")
        annotations[k] = v
    kwargs = {}
    if a.chunk_size:
        kwargs.update(do_chunked=True, chunk_size=a.chunk_size)
    resp = c.push(
        target=f"{a.registry}/{a.ref}",
        files=a.file,
        manifest_config=a.config,
        manifest_annotations=annotations or None,
        quiet=True,
        **kwargs,
    )
    if resp.status_code != 201:
        sys.exit(f"manifest PUT answered {resp.status_code}, want 201")
    digest = resp.headers.get("Docker-Content-Digest", "")
    if not digest:
        sys.exit("manifest PUT response lacks Docker-Content-Digest")
    print(digest)


def cmd_pull(a):
    c = client(a.registry)
    files = c.pull(target=f"{a.registry}/{a.ref}", outdir=a.out)
    if not files:
        sys.exit("pull returned no files")
    for f in files:
        print(f)


def cmd_manifest(a):
    c = client(a.registry)
    m = c.get_manifest(f"{a.registry}/{a.ref}")
    print(json.dumps(m, indent=2, sort_keys=True))


def cmd_blob(a):
    c = client(a.registry)
    c.download_blob(f"{a.registry}/{a.repo}", a.digest, a.out)


def cmd_tags(a):
    c = client(a.registry)
    if not a.page_size:
        tags = c.get_tags(f"{a.registry}/{a.repo}")
    else:
        reg = c
        container = reg.get_container(f"{a.registry}/{a.repo}")
        tags, pages = [], []

        def collect(resp):
            page = resp.json().get("tags") or []
            pages.append(page)
            if len(page) > a.page_size:
                raise SystemExit(f"page of {len(page)} tags exceeds n={a.page_size}")
            tags.extend(page)
            return True  # keep following Link headers until there are none

        reg._do_paginated_request(
            f"{reg.prefix}://{container.tags_url(N=a.page_size)}", callable=collect
        )
        print(f"pages: {pages}", file=sys.stderr)
        if len(tags) != len(set(tags)):
            sys.exit(f"duplicate tags across pages: {pages}")
    for t in tags:
        print(t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ca-file", help="use HTTPS, trusting the CA certificates in this PEM file")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("push")
    s.add_argument("--registry", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--file", action="append", required=True)
    s.add_argument("--config", required=True)
    s.add_argument("--annotation", action="append")
    s.add_argument("--chunk-size", type=int, default=0)
    s.set_defaults(fn=cmd_push)

    s = sub.add_parser("pull")
    s.add_argument("--registry", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_pull)

    s = sub.add_parser("manifest")
    s.add_argument("--registry", required=True)
    s.add_argument("--ref", required=True)
    s.set_defaults(fn=cmd_manifest)

    s = sub.add_parser("blob")
    s.add_argument("--registry", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--digest", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_blob)

    s = sub.add_parser("tags")
    s.add_argument("--registry", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--page-size", type=int, default=0)
    s.set_defaults(fn=cmd_tags)

    a = p.parse_args()
    global CA_FILE
    CA_FILE = a.ca_file
    a.fn(a)


if __name__ == "__main__":
    main()
