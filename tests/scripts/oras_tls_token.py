"""oras (Python SDK) against a registry with token auth over TLS. Usage:
oras_tls_token.py HOST:PORT CA_PEM USER PASSWORD

- Push with the SDK's basic backend (Basic credentials on every request; Berth accepts them
  next to tokens). The SDK's token backend keeps the first token it got (pull scope, from the
  blob HEAD) and asks for a new one only after a 403, while registries answer a token without
  the scope with 401 + error="insufficient_scope" (Distribution does too, and docker and
  containerd rely on it), so its pushes cannot work against scope-limited tokens.
- Pull back with the token backend (a pull token is all it needs), byte for byte.
"""
import os
import sys
import tempfile

import oras.client

reg, ca, user, password = sys.argv[1:5]
work = tempfile.mkdtemp()
os.chdir(work)
payload = os.urandom(300_000)
with open("artifact.bin", "wb") as f:
    f.write(payload)

pusher = oras.client.OrasClient(hostname=reg, tls_verify=ca, auth_backend="basic")
pusher.login(username=user, password=password, hostname=reg, tls_verify=ca)
pusher.push(target=f"{reg}/team/oras:v1", files=["artifact.bin"])

puller = oras.client.OrasClient(hostname=reg, tls_verify=ca, auth_backend="token")
puller.login(username=user, password=password, hostname=reg, tls_verify=ca)
files = puller.pull(target=f"{reg}/team/oras:v1", outdir=os.path.join(work, "out"))
with open(files[0], "rb") as f:
    assert f.read() == payload, "pulled bytes differ"
print("OK")
