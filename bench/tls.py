#!/usr/bin/env python3
"""Blob and manifest GETs over TLS: Berth terminating TLS itself (rustls, no sendfile: file ->
buffer -> records -> socket) vs nginx with `ssl_certificate` on the same files and the same
certificate, same wrk, same run, best of N alternating rounds. (Issue "Security": goal >= 0.9x
for 64 MiB blobs and >= 1.0x for manifests.)

    python3 bench/tls.py [--secs 6] [--rounds 3]

Needs a release build (cargo build --release --bin berth), wrk, nginx and openssl (apt).
"""
import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Proc, free_port, push_blob, push_manifest, wait_http, write_nginx_conf, wrk  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target"))


def make_cert(tmp):
    """A CA and a P-256 server certificate for 127.0.0.1 (what a production setup would use)."""
    def ossl(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{tmp}/ca.key",
         "-out", f"{tmp}/ca.pem", "-days", "2", "-subj", "/CN=bench CA")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{tmp}/srv.key",
         "-out", f"{tmp}/srv.csr", "-subj", "/CN=localhost")
    with open(f"{tmp}/ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ossl("x509", "-req", "-in", f"{tmp}/srv.csr", "-CA", f"{tmp}/ca.pem", "-CAkey", f"{tmp}/ca.key", "-CAcreateserial",
         "-out", f"{tmp}/srv.pem", "-days", "2", "-extfile", f"{tmp}/ext")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="berth-tls-")
    make_cert(tmp)
    ctx = ssl.create_default_context(cafile=f"{tmp}/ca.pem")
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
    bport, nport = free_port(), free_port()
    env = dict(os.environ, RUST_LOG="warn", BERTH_TLS__CERT=f"{tmp}/srv.pem", BERTH_TLS__KEY=f"{tmp}/srv.key")
    berth = Proc([os.path.join(TARGET, "release", "berth"), "serve", "--listen", f"127.0.0.1:{bport}",
                  "--data-dir", f"{tmp}/data", "--workers", "2"], f"{tmp}/berth.log", env)
    os.makedirs(f"{tmp}/www")
    write_nginx_conf(tmp, nport, "open_file_cache max=10000 inactive=60s;\n  open_file_cache_valid 60s;",
                     tls=(f"{tmp}/srv.pem", f"{tmp}/srv.key"))
    nginx = Proc(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"], f"{tmp}/nginx.log")
    bbase, nbase = f"https://127.0.0.1:{bport}", f"https://127.0.0.1:{nport}"
    wait_http(bbase + "/v2/")
    wait_http(nbase + "/")
    rows = []
    try:
        big = os.urandom(64 << 20)
        config = b'{"architecture":"amd64","os":"linux"}'
        bd = push_blob(bbase, "bench/tls", big)
        cd = push_blob(bbase, "bench/tls", config)
        manifest = push_manifest(bbase, "bench/tls", "latest", config, [big])
        with open(f"{tmp}/www/big", "wb") as f:
            f.write(big)
        with open(f"{tmp}/www/manifest", "wb") as f:
            f.write(manifest)
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        cases = [("blob 64 MiB", 4, "/big", f"/v2/bench/tls/blobs/{bd}", {}),
                 ("manifest", 16, "/manifest", "/v2/bench/tls/manifests/latest", accept),
                 ("manifest", 100, "/manifest", "/v2/bench/tls/manifests/latest", accept)]
        del cd
        for name, c, npath, bpath, headers in cases:
            best = {"nginx": None, "berth": None}
            for r in range(args.rounds):
                order = ["nginx", "berth"] if r % 2 == 0 else ["berth", "nginx"]
                for who in order:
                    url = nbase + npath if who == "nginx" else bbase + bpath
                    res = wrk(url, c, args.secs, headers)
                    assert res["errors"] == 0, (who, res)
                    if best[who] is None or res["rps"] > best[who]["rps"]:
                        best[who] = res
            rows.append((name, c, best))
    finally:
        berth.stop()
        nginx.stop()
    print("| GET over TLS | c | nginx (ssl, open_file_cache) | Berth (rustls) | Berth p50 / p99 ms | Berth/nginx |")
    print("|---|---|---|---|---|---|")
    for name, c, b in rows:
        if name.startswith("blob"):
            fmt = lambda r: f"{r['bps'] / 1e9:.2f} GB/s"  # noqa: E731
            ratio = b["berth"]["bps"] / b["nginx"]["bps"]
        else:
            fmt = lambda r: f"{r['rps']:.0f} req/s"  # noqa: E731
            ratio = b["berth"]["rps"] / b["nginx"]["rps"]
        print(f"| {name} | {c} | {fmt(b['nginx'])} | {fmt(b['berth'])} | "
              f"{b['berth']['p50']:.2f} / {b['berth']['p99']:.2f} | **{ratio:.2f}x** |")


if __name__ == "__main__":
    main()
