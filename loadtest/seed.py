#!/usr/bin/env python3
"""Seed a registry with a 5-layer image (random layers of the given sizes) as REPO:TAG."""
import hashlib
import json
import sys
import urllib.request

base, repo, tag = sys.argv[1], sys.argv[2], sys.argv[3]
sizes = [int(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "65536,262144,1048576,2097152,4194304").split(",")]


def req(method, url, data=None, headers=None):
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(r, timeout=120) as resp:
        return resp.status, resp.headers


def push(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    _, h = req("POST", f"{base}/v2/{repo}/blobs/uploads/")
    loc = h["Location"]
    loc = base + loc if loc.startswith("/") else loc
    sep = "&" if "?" in loc else "?"
    s, _ = req("PUT", f"{loc}{sep}digest={d}", data, {"Content-Type": "application/octet-stream"})
    assert s == 201, s
    return {"digest": d, "size": len(data)}


import os

layers = [dict(push(os.urandom(n)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip") for n in sizes]
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
c = dict(push(config), mediaType="application/vnd.oci.image.config.v1+json")
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": layers}).encode()
s, _ = req("PUT", f"{base}/v2/{repo}/manifests/{tag}", m, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
assert s == 201, s
print(f"seeded {repo}:{tag} with {len(layers)} layers ({sum(sizes)} bytes)")
