"""Push an image-like artifact and two referrers with the oras Python SDK, then check the
registry's referrers API answers with both, filtered by artifactType, and pull one back."""
import hashlib
import json
import os
import sys
import tempfile

import oras.client
import oras.oci
import requests

reg = sys.argv[1]  # 127.0.0.1:PORT
base = f"http://{reg}"
client = oras.client.OrasClient(hostname=reg, insecure=True)
work = tempfile.mkdtemp()
os.chdir(work)

with open("app.bin", "wb") as f:
    f.write(b"application payload" * 1000)
client.push(target=f"{reg}/oras/app:v1", files=["app.bin"], do_chunked=True, chunk_size=4096)

r = requests.get(f"{base}/v2/oras/app/manifests/v1",
                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
assert r.status_code == 200, r.text
subject_bytes = r.content
subject = oras.oci.Subject(
    mediaType=r.headers["Content-Type"],
    digest="sha256:" + hashlib.sha256(subject_bytes).hexdigest(),
    size=len(subject_bytes),
)

for name, kind in [("sbom.json", "application/vnd.example.sbom.v1"), ("sig.txt", "application/vnd.example.sig.v1")]:
    with open(name, "w") as f:
        f.write(json.dumps({"for": subject.digest, "kind": kind}))
    # oras-py derives the artifact type from the config media type
    with open("config.json", "w") as f:
        f.write("{}")
    resp = client.push(target=f"{reg}/oras/app:{name.split('.')[0]}", files=[name],
                       manifest_config=f"config.json:{kind}", subject=subject)
    assert resp.status_code == 201, resp.text
    assert resp.headers.get("OCI-Subject") == subject.digest, resp.headers

r = requests.get(f"{base}/v2/oras/app/referrers/{subject.digest}")
assert r.status_code == 200, r.text
idx = r.json()
assert idx["mediaType"] == "application/vnd.oci.image.index.v1+json", idx
types = sorted(m.get("artifactType") for m in idx["manifests"])
assert types == ["application/vnd.example.sbom.v1", "application/vnd.example.sig.v1"], types

r = requests.get(f"{base}/v2/oras/app/referrers/{subject.digest}",
                 params={"artifactType": "application/vnd.example.sbom.v1"})
assert r.headers.get("OCI-Filters-Applied") == "artifactType", r.headers
assert len(r.json()["manifests"]) == 1

out = os.path.join(work, "out")
files = client.pull(target=f"{reg}/oras/app:v1", outdir=out)
with open(files[0], "rb") as f:
    assert f.read() == b"application payload" * 1000
print("oras: push, chunked push, referrers, filter and pull OK")
