#!/usr/bin/env python3
"""Side-by-side macro benchmark: Berth vs CNCF Distribution (Debian's docker-registry) vs nginx
(sendfile on), all on 127.0.0.1, same content, same load generator (wrk), same run.

    python3 bench/compare.py            # full run (~5 min), writes bench/RESULTS.md
    python3 bench/compare.py --quick    # 2 s per scenario (smoke test)

Every figure is reported as measured and as a ratio to a reference measured in the same run:
blob and manifest GETs against nginx serving the same bytes from the same disk with sendfile,
pushes against the machine's single-core SHA-256 speed (Python's hashlib, OpenSSL) and against
Distribution. Absolute numbers are noisy on a shared 2-core machine; ratios are what to compare.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_blob(base, repo, data):
    """POST a session, then PUT ?digest= with the whole body: works on every registry."""
    d = digest(data)
    s, h, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
    assert s == 202, s
    loc = h["Location"]
    if loc.startswith("/"):
        loc = base + loc
    sep = "&" if "?" in loc else "?"
    s, _, body = http("PUT", f"{loc}{sep}digest={d}", data=data, headers={"Content-Type": "application/octet-stream"})
    assert s == 201, (s, body[:200])
    return d


def push_manifest(base, repo, tag, config, layers):
    m = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": len(l)} for l in layers],
    }).encode()
    s, _, body = http("PUT", f"{base}/v2/{repo}/manifests/{tag}", data=m,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert s == 201, (s, body[:300])
    return m


WRK_LUA = """
wrk.method = "GET"
{headers}
"""


def wrk(url, conns, secs, headers=None):
    """Run wrk; return req/s, bytes/s, p50 ms, p99 ms, errors."""
    args = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "30s"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[tr.group(2)]
    bps = float(tr.group(1)) * mult

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    return {"rps": rps, "bps": bps, "p50": pct(50), "p99": pct(99), "errors": errs}


class Proc:
    def __init__(self, args, log, env=None):
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def sha256_speed(data):
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s per scenario, 256 MiB push")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    args = ap.parse_args()
    secs = 2 if args.quick else 8
    push_mib = 256 if args.quick else 1024

    for tool in ["wrk", "nginx", "docker-registry", "cargo"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is required (apt-get install wrk nginx-light docker-registry)")
    subprocess.run(["cargo", "build", "--release", "--bin", "berth", "-q"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    berth_bin = os.path.join(target, "release", "berth")

    tmp = tempfile.mkdtemp(prefix="berth-bench-")
    procs = []
    try:
        ports = {"berth": free_port(), "distribution": free_port(), "nginx": free_port()}
        bp = Proc([berth_bin, "serve", "--listen", f"127.0.0.1:{ports['berth']}", "--data-dir", f"{tmp}/berth"],
                  f"{tmp}/berth.log", env={**os.environ, "RUST_LOG": "warn"})
        procs.append(bp)
        with open(f"{tmp}/registry.yml", "w") as f:
            f.write(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage: {{filesystem: {{rootdirectory: {tmp}/distribution}}, delete: {{enabled: true}}}}
http: {{addr: 127.0.0.1:{ports['distribution']}}}
""")
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        procs.append(Proc(["docker-registry", "serve", f"{tmp}/registry.yml"], f"{tmp}/distribution.log", env=env))
        os.makedirs(f"{tmp}/www", exist_ok=True)
        with open(f"{tmp}/nginx.conf", "w") as f:
            f.write(f"""worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/ngx-body;
  proxy_temp_path {tmp}/ngx-proxy;
  fastcgi_temp_path {tmp}/ngx-fcgi;
  uwsgi_temp_path {tmp}/ngx-uwsgi;
  scgi_temp_path {tmp}/ngx-scgi;
  server {{ listen 127.0.0.1:{ports['nginx']}; root {tmp}/www; default_type application/octet-stream; }}
}}
""")
        procs.append(Proc(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"], f"{tmp}/nginx.log"))
        bases = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
        for k in ("berth", "distribution"):
            wait_http(bases[k] + "/v2/")
        wait_http(bases["nginx"] + "/")

        rnd = os.urandom
        blobs = {"4KiB": rnd(4096), "1MiB": rnd(1 << 20), "64MiB": rnd(64 << 20)}
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest = None
        for k in ("berth", "distribution"):
            push_blob(bases[k], "bench/img", config)
            for b in blobs.values():
                push_blob(bases[k], "bench/img", b)
            manifest = push_manifest(bases[k], "bench/img", "latest", config, list(blobs.values()))
        for name, b in blobs.items():
            with open(f"{tmp}/www/{name}", "wb") as f:
                f.write(b)
        with open(f"{tmp}/www/manifest", "wb") as f:
            f.write(manifest)

        rows = []

        def scenario(label, paths, conns, headers=None):
            res = {}
            for k in ("nginx", "berth", "distribution"):
                url = bases[k] + paths[k]
                wrk(url, conns, 1, headers)  # warm-up
                res[k] = wrk(url, conns, secs, headers)
            rows.append((label, conns, res))
            print(f"{label} c={conns}: " + ", ".join(
                f"{k} {v['rps']:.0f} req/s {v['bps'] / 1e9:.2f} GB/s p99 {v['p99']:.2f} ms" for k, v in res.items()), flush=True)

        mpath = {"nginx": "/manifest", "berth": "/v2/bench/img/manifests/latest", "distribution": "/v2/bench/img/manifests/latest"}
        scenario("manifest GET by tag", mpath, 100, {"Accept": "application/vnd.oci.image.manifest.v1+json"})
        for name, b in blobs.items():
            paths = {"nginx": f"/{name}", "berth": f"/v2/bench/img/blobs/{digest(b)}", "distribution": f"/v2/bench/img/blobs/{digest(b)}"}
            for c in (16, 100):
                scenario(f"blob GET {name}", paths, c)
        b = blobs["64MiB"]
        paths = {"nginx": "/64MiB", "berth": f"/v2/bench/img/blobs/{digest(b)}", "distribution": f"/v2/bench/img/blobs/{digest(b)}"}
        scenario("ranged blob GET (1 MiB of 64 MiB)", paths, 16, {"Range": "bytes=1048576-2097151"})

        # Monolithic push: POST + PUT ?digest= with the whole body, timed end to end.
        big = rnd(push_mib << 20)
        sha = sha256_speed(big)
        push = {}
        for k in ("berth", "distribution"):
            t = time.perf_counter()
            push_blob(bases[k], f"bench/push{push_mib}", big)
            push[k] = len(big) / (time.perf_counter() - t)
        print(f"push {push_mib} MiB: berth {push['berth'] / 1e9:.2f} GB/s, distribution {push['distribution'] / 1e9:.2f} GB/s, "
              f"sha256 {sha / 1e9:.2f} GB/s", flush=True)

        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
        lines = [
            "# Benchmark results",
            "",
            f"Run {now} on {os.cpu_count()} cores ({cpu}), kernel {platform.release()}; "
            f"command: `python3 bench/compare.py{' --quick' if args.quick else ''}`; wrk -t2, {secs} s per scenario, "
            "server and load generator share the machine. Berth: release build, 2 cores, io_uring. "
            "Distribution: Debian docker-registry 2.8 (filesystem driver). nginx: sendfile on, 2 workers, same files.",
            "",
            "Ratios are Berth / nginx (the static-file reference) and Berth / Distribution, measured in the same run.",
            "",
            "| scenario | c | nginx req/s | Berth req/s | Distribution req/s | nginx GB/s | Berth GB/s | Distribution GB/s | Berth p50 / p99 ms | Berth/nginx | Berth/Distribution | errors (n/b/d) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, c, r in rows:
            n, b_, d = r["nginx"], r["berth"], r["distribution"]
            key = "rps"
            lines.append(
                f"| {label} | {c} | {n['rps']:.0f} | {b_['rps']:.0f} | {d['rps']:.0f} | {n['bps'] / 1e9:.2f} | {b_['bps'] / 1e9:.2f} | "
                f"{d['bps'] / 1e9:.2f} | {b_['p50']:.2f} / {b_['p99']:.2f} | {b_[key] / n[key]:.2f}x | {b_[key] / d[key]:.2f}x | "
                f"{n['errors']}/{b_['errors']}/{d['errors']} |")
        lines += [
            "",
            f"| monolithic push {push_mib} MiB | Berth | Distribution | single-core SHA-256 | Berth / SHA-256 | Berth / Distribution |",
            "|---|---|---|---|---|---|",
            f"| GB/s | {push['berth'] / 1e9:.2f} | {push['distribution'] / 1e9:.2f} | {sha / 1e9:.2f} | "
            f"{push['berth'] / sha:.2f}x | {push['berth'] / push['distribution']:.2f}x |",
            "",
        ]
        with open(args.out, "w") as f:
            f.write("\n".join(lines))
        print(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
