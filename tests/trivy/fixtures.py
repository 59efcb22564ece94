#!/usr/bin/env python3
"""Test fixtures for scanning: a small Trivy vulnerability database and images Trivy can read.

  fixtures.py db OUT_DIR [--generation N]   write OUT_DIR/db/{trivy.db,metadata.json} (needs mkdb)
  fixtures.py push URL REPO TAG KIND        push an image of KIND (debian, alpine, python, npm,
                                            shared-a, shared-b, artifact); prints the manifest
                                            digest and its size
  fixtures.py push-index URL REPO TAG D1:S1 D2:S2   push an OCI index of two pushed images

The database has one advisory per ecosystem, each matching exactly one package of the images
below, plus a fixed package that must not match. Generation 2 adds an advisory for the fixed
Debian package (a "vulnerability DB update" for the rescan test).
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def vuln(title, severity, score, vector):
    return {
        "Title": title,
        "Description": f"{title}: a test advisory written by Berth's scanning tests.",
        "Severity": severity,
        "VendorSeverity": {"nvd": {"CRITICAL": 4, "HIGH": 3, "MEDIUM": 2, "LOW": 1}[severity]},
        "CVSS": {"nvd": {"V3Vector": vector, "V3Score": score}},
        "References": ["https://example.invalid/advisory"],
        "PublishedDate": "2026-01-01T00:00:00Z",
        "LastModifiedDate": "2026-01-02T00:00:00Z",
    }


def db_entries(generation):
    e = []
    def put(path, value):
        e.append({"path": path, "value": value})
    put(["debian 12", "openssl", "CVE-2099-0001"], {"FixedVersion": "3.0.99-1~deb12u1"})
    put(["debian 12", "zlib", "CVE-2099-0010"], {"FixedVersion": "1:1.2.12.dfsg-1"})  # zlib1g is newer: no match
    put(["alpine 3.19", "musl", "CVE-2099-0002"], {"FixedVersion": "1.2.4-r3"})
    put(["pip::GitHub Security Advisory pip", "requests", "CVE-2099-0003"],
        {"VulnerableVersions": ["< 2.32.0"], "PatchedVersions": ["2.32.0"]})
    put(["npm::GitHub Security Advisory npm", "lodash", "CVE-2099-0004"],
        {"VulnerableVersions": ["< 4.17.21"], "PatchedVersions": ["4.17.21"]})
    put(["debian 12", "bash", "CVE-2099-0005"], {"FixedVersion": ""})  # no fix yet
    put(["vulnerability", "CVE-2099-0001"], vuln("openssl buffer overflow", "CRITICAL", 9.8, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"))
    put(["vulnerability", "CVE-2099-0010"], vuln("zlib old issue", "HIGH", 7.5, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"))
    put(["vulnerability", "CVE-2099-0002"], vuln("musl heap issue", "HIGH", 8.1, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"))
    put(["vulnerability", "CVE-2099-0003"], vuln("requests leaks credentials", "MEDIUM", 5.6, "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:L/A:N"))
    put(["vulnerability", "CVE-2099-0004"], vuln("lodash prototype pollution", "HIGH", 7.4, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N"))
    put(["vulnerability", "CVE-2099-0005"], vuln("bash parser bug", "LOW", 3.3, "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:L"))
    if generation >= 2:
        put(["debian 12", "zlib", "CVE-2099-0011"], {"FixedVersion": "1:1.2.99.dfsg-1"})
        put(["vulnerability", "CVE-2099-0011"], vuln("zlib new issue", "CRITICAL", 9.1, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N"))
    for bucket, src in [("debian 12", {"ID": "debian", "Name": "Debian Security Tracker", "URL": "https://salsa.debian.org/security-tracker-team/security-tracker"}),
                        ("alpine 3.19", {"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"}),
                        ("pip::GitHub Security Advisory pip", {"ID": "ghsa", "Name": "GitHub Security Advisory pip", "URL": "https://github.com/advisories"}),
                        ("npm::GitHub Security Advisory npm", {"ID": "ghsa", "Name": "GitHub Security Advisory npm", "URL": "https://github.com/advisories"})]:
        put(["data-source", bucket], src)
    return e


def write_db(out_dir, generation):
    db = os.path.join(out_dir, "db")
    os.makedirs(db, exist_ok=True)
    spec = os.path.join(db, "spec.json")
    with open(spec, "w") as f:
        json.dump(db_entries(generation), f)
    mkdb = os.environ.get("BERTH_MKDB") or os.path.join(out_dir, "mkdb")
    if not os.path.exists(mkdb):
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="", GOCACHE=os.path.join(out_dir, "gocache"))
        subprocess.run(["go", "build", "-o", mkdb, os.path.join(HERE, "mkdb.go")], check=True, env=env)
    subprocess.run([mkdb, spec, os.path.join(db, "trivy.db")], check=True)
    updated = f"2026-11-{10 + generation:02d}T00:00:00Z"
    with open(os.path.join(db, "metadata.json"), "w") as f:
        json.dump({"Version": 2, "NextUpdate": "2099-01-01T00:00:00Z", "UpdatedAt": updated, "DownloadedAt": updated}, f)
    os.remove(spec)


def tar_layer(files):
    """A gzip tar of {path: bytes}; returns (compressed, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    ti.mtime = 1700000000
                    t.addfile(ti)
            data = files[path]
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    raw_bytes = raw.getvalue()
    gz = gzip.compress(raw_bytes, mtime=0)
    return gz, "sha256:" + hashlib.sha256(raw_bytes).hexdigest()


with open(os.path.join(HERE, "dpkg-status")) as _f:
    DPKG = _f.read()

APK = """C:Q1aaaaaaaaaaaaaaaaaaaaaaaaaaa=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Test
t:1700000000
c:0000000000000000000000000000000000000000

"""


def os_release(id_, version, name):
    return f'PRETTY_NAME="{name}"\nNAME="{name}"\nID={id_}\nVERSION_ID="{version}"\n'.encode()


def layers_for(kind):
    base = {"etc/os-release": os_release("debian", "12", "Debian GNU/Linux 12 (bookworm)"),
            "etc/debian_version": b"12.7\n"}
    if kind == "debian":
        return [base, {"var/lib/dpkg/status": DPKG.encode()}], "linux"
    if kind == "alpine":
        return [{"etc/os-release": os_release("alpine", "3.19.1", "Alpine Linux"), "etc/alpine-release": b"3.19.1\n",
                 "lib/apk/db/installed": APK.encode()}], "linux"
    if kind == "python":
        meta = b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: HTTP\nLicense: Apache-2.0\n"
        return [{"usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA": meta}], "linux"
    if kind == "npm":
        lock = {"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
                "packages": {"": {"name": "app", "version": "1.0.0", "dependencies": {"lodash": "4.17.20"}},
                             "node_modules/lodash": {"version": "4.17.20", "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz", "license": "MIT"}}}
        pkg = {"name": "lodash", "version": "4.17.20", "license": "MIT"}
        return [{"app/package-lock.json": json.dumps(lock).encode(),
                 "app/node_modules/lodash/package.json": json.dumps(pkg).encode()}], "linux"
    if kind == "shared-a":
        return [base, {"var/lib/dpkg/status": DPKG.encode()}, {"srv/a.txt": b"image a\n"}], "linux"
    if kind == "shared-b":
        return [base, {"var/lib/dpkg/status": DPKG.encode()}, {"srv/b.txt": b"image b\n"}], "linux"
    raise SystemExit(f"unknown kind {kind}")


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    auth = os.environ.get("BERTH_FIXTURE_AUTH")
    if auth:
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers, r.read()


def push_blob(url, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    http("POST", f"{url}/v2/{repo}/blobs/uploads/?digest={d}", data, {"Content-Type": "application/octet-stream"})
    return d


def push_manifest(url, repo, ref, body, media_type):
    http("PUT", f"{url}/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type})
    return "sha256:" + hashlib.sha256(body).hexdigest()


def push_image(url, repo, tag, kind):
    if kind == "broken":
        # An image whose only layer is not a tar archive: Trivy cannot analyse it.
        junk = b"this is not a gzip tar archive" * 10
        ld = push_blob(url, repo, junk)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(junk).hexdigest()]}}).encode()
        cd = push_blob(url, repo, config)
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
             "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": len(junk)}]}
    elif kind == "artifact":
        cfg = b"{}"
        cd = push_blob(url, repo, cfg)
        blob = b"a helm chart, or a signature"
        ld = push_blob(url, repo, blob)
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "artifactType": "application/vnd.cncf.helm.chart.v1+json",
             "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": len(cfg)},
             "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": ld, "size": len(blob)}]}
    else:
        layers, os_ = layers_for(kind)
        descs, diff_ids = [], []
        for files in layers:
            gz, diff = tar_layer(files)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": push_blob(url, repo, gz), "size": len(gz)})
            diff_ids.append(diff)
        config = json.dumps({"architecture": "amd64", "os": os_, "created": "2026-01-01T00:00:00Z",
                             "config": {"Env": ["PATH=/usr/bin:/bin"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids},
                             "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"berth test fixture {kind}"}]}).encode()
        cd = push_blob(url, repo, config)
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
             "layers": descs}
    body = json.dumps(m).encode()
    d = push_manifest(url, repo, tag, body, m["mediaType"])
    print(d, len(body))


def push_index(url, repo, tag, children):
    manifests = []
    for i, c in enumerate(children):
        d, size = c.split(":", 2)[0] + ":" + c.split(":", 2)[1], int(c.split(":", 2)[2])
        arch = ["amd64", "arm64"][i % 2]
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": size,
                          "platform": {"os": "linux", "architecture": arch}})
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}).encode()
    d = push_manifest(url, repo, tag, body, "application/vnd.oci.image.index.v1+json")
    print(d, len(body))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "db":
        gen = int(a[3]) if len(a) > 3 and a[2] == "--generation" else 1
        write_db(a[1], gen)
    elif a[0] == "push":
        push_image(a[1], a[2], a[3], a[4])
    elif a[0] == "push-index":
        push_index(a[1], a[2], a[3], a[4:])
    else:
        raise SystemExit(__doc__)
