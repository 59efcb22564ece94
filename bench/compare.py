#!/usr/bin/env python3
"""Side-by-side macro benchmark: Berth vs CNCF Distribution (Debian's docker-registry) vs nginx
(sendfile on), all on 127.0.0.1, same content, same load generator (wrk), same run.

    python3 bench/compare.py            # full run (~8 min), writes bench/RESULTS.md
    python3 bench/compare.py --berth /tmp/old-berth --out /tmp/before.md   # same run, another binary
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


def start_upload(base, repo):
    """POST an upload session; returns its absolute Location."""
    s, h, _ = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
    assert s == 202, s
    loc = h["Location"]
    return base + loc if loc.startswith("/") else loc


def push_blob(base, repo, data):
    """POST a session, then PUT ?digest= with the whole body: works on every registry."""
    d = digest(data)
    loc = start_upload(base, repo)
    sep = "&" if "?" in loc else "?"
    s, _, body = http("PUT", f"{loc}{sep}digest={d}", data=data, headers={"Content-Type": "application/octet-stream"})
    assert s == 201, (s, body[:200])
    return d


def push_chunked(base, repo, data, chunk):
    """POST a session, PATCH 16 MiB chunks with Content-Range, PUT ?digest=."""
    d = digest(data)
    loc = start_upload(base, repo)
    for off in range(0, len(data), chunk):
        if loc.startswith("/"):
            loc = base + loc
        part = data[off:off + chunk]
        s, h, body = http("PATCH", loc, data=part, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{off}-{off + len(part) - 1}"})
        assert s == 202, (s, body[:200])
        loc = h["Location"]
    if loc.startswith("/"):
        loc = base + loc
    sep = "&" if "?" in loc else "?"
    s, _, body = http("PUT", f"{loc}{sep}digest={d}")
    assert s == 201, (s, body[:200])


def svg_chart(rows, path):
    """A bar chart of Berth/nginx and Berth/Distribution throughput ratios per scenario."""
    w, bar, gap, left = 900, 14, 10, 330
    h = 60 + len(rows) * (2 * bar + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           '<text x="10" y="20" font-size="14">Berth throughput ratio (1.0 = equal); blue: vs nginx sendfile, orange: vs Distribution</text>']
    scale = (w - left - 60) / max(2.0, max(max(r[2]["berth"]["rps"] / r[2]["nginx"]["rps"], r[2]["berth"]["rps"] / r[2]["distribution"]["rps"]) for r in rows))
    y = 40
    for label, c, r in rows:
        out.append(f'<text x="10" y="{y + bar + 4}">{label} c={c}</text>')
        for i, (ref, color) in enumerate((("nginx", "#4878d0"), ("distribution", "#ee854a"))):
            ratio = r["berth"]["rps"] / r[ref]["rps"]
            out.append(f'<rect x="{left}" y="{y + i * bar}" width="{ratio * scale:.1f}" height="{bar - 2}" fill="{color}"/>')
            out.append(f'<text x="{left + ratio * scale + 4:.1f}" y="{y + i * bar + bar - 4}">{ratio:.2f}x</text>')
        y += 2 * bar + gap
    x1 = left + scale
    out.append(f'<line x1="{x1:.1f}" y1="35" x2="{x1:.1f}" y2="{h - 10}" stroke="#444" stroke-dasharray="4"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


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


def write_nginx_conf(tmp, port, extra="", tls=None):
    """nginx serving {tmp}/www on 127.0.0.1:port with sendfile, 2 workers (plus `extra` http
    directives, e.g. open_file_cache). `tls`: (cert, key) PEM paths to serve HTTPS instead."""
    listen = f"127.0.0.1:{port}"
    server_tls = ""
    if tls:
        listen += " ssl"
        server_tls = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3;"
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"""user root;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  {extra}
  client_body_temp_path {tmp}/ngx-body;
  proxy_temp_path {tmp}/ngx-proxy;
  fastcgi_temp_path {tmp}/ngx-fcgi;
  uwsgi_temp_path {tmp}/ngx-uwsgi;
  scgi_temp_path {tmp}/ngx-scgi;
  server {{ listen {listen}; {server_tls} root {tmp}/www; default_type application/octet-stream; }}
}}
""")


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


def durable_write_speed(path, data):
    """Write `data` to a file and fsync it: the ceiling for any push that is durable at ack."""
    t = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    e = time.perf_counter() - t
    os.remove(path)
    return len(data) / e


def sha256_speed(data):
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s per scenario, 256 MiB push")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--berth", help="measure this binary instead of building the release one (a before/after run)")
    args = ap.parse_args()
    secs = 2 if args.quick else 8
    push_mib = 256 if args.quick else 1024

    for tool in ["wrk", "nginx", "docker-registry", "cargo"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is required (apt-get install wrk nginx-light docker-registry)")
    if args.berth:
        berth_bin = args.berth
    else:
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
        # As a production nginx runs: descriptors of served files cached.
        write_nginx_conf(tmp, ports["nginx"], "open_file_cache max=10000 inactive=60s;\n  open_file_cache_valid 60s;")
        procs.append(Proc(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"], f"{tmp}/nginx.log"))
        bases = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
        for k in ("berth", "distribution"):
            wait_http(bases[k] + "/v2/")
        wait_http(bases["nginx"] + "/")

        rnd = os.urandom
        blobs = {"4KiB": rnd(4096), "64KiB": rnd(64 << 10), "1MiB": rnd(1 << 20), "64MiB": rnd(64 << 20)}
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
        for c in (16, 100):
            scenario("manifest GET by tag", mpath, c, {"Accept": "application/vnd.oci.image.manifest.v1+json"})
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
        disk = durable_write_speed(f"{tmp}/disk-probe", big)
        push = {}
        for k in ("berth", "distribution"):
            os.sync()  # start each push with no dirty pages from the previous one
            t = time.perf_counter()
            push_blob(bases[k], f"bench/push{push_mib}", big)
            push[k] = len(big) / (time.perf_counter() - t)
        from push import push_streamed  # bench/push.py (imports this module)
        chunked, streamed = {}, {}
        for k in ("berth", "distribution"):
            os.sync()
            t = time.perf_counter()
            push_chunked(bases[k], f"bench/chunked{push_mib}", big[:len(big) // 2] + b"c", 16 << 20)
            chunked[k] = (len(big) // 2 + 1) / (time.perf_counter() - t)
            os.sync()
            t = time.perf_counter()
            push_streamed(bases[k], f"bench/streamed{push_mib}", big[:len(big) // 2] + b"s")
            streamed[k] = (len(big) // 2 + 1) / (time.perf_counter() - t)
        # Whole-image pull of a 5-layer image with skopeo (a real client), Berth vs Distribution.
        skopeo = {}
        if shutil.which("skopeo"):
            layers5 = [rnd(n) for n in (1 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20)]
            for k in ("berth", "distribution"):
                for l in layers5:
                    push_blob(bases[k], "bench/five", l)
                push_blob(bases[k], "bench/five", config)
                push_manifest(bases[k], "bench/five", "v1", config, layers5)
                best = None
                for _ in range(3):
                    dest = f"{tmp}/skopeo-{k}"
                    shutil.rmtree(dest, ignore_errors=True)
                    t = time.perf_counter()
                    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                    f"docker://127.0.0.1:{ports[k]}/bench/five:v1", f"dir:{dest}"], check=True)
                    e = time.perf_counter() - t
                    best = e if best is None else min(best, e)
                skopeo[k] = best
        print(f"push {push_mib} MiB: berth {push['berth'] / 1e9:.2f} GB/s, distribution {push['distribution'] / 1e9:.2f} GB/s, "
              f"sha256 {sha / 1e9:.2f} GB/s, durable disk write {disk / 1e9:.2f} GB/s", flush=True)

        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
        lines = [
            "# Benchmark results",
            "",
            f"Run {now} on {os.cpu_count()} cores ({cpu}), kernel {platform.release()}; "
            f"command: `python3 bench/compare.py{' --quick' if args.quick else ''}`; wrk -t2, {secs} s per scenario, "
            "server and load generator share the machine. Berth: release build, 2 cores, io_uring. "
            "Distribution: Debian docker-registry 2.8 (filesystem driver). nginx: sendfile on, open_file_cache, 2 workers, same files.",
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
            "Pushes: Berth acknowledges only after the blob is fsynced; Distribution's filesystem driver never fsyncs. "
            "So the disk's durable write speed (write + fsync of the same bytes, measured in this run) is the ceiling for Berth.",
            "",
            f"| push | Berth GB/s | Distribution GB/s | single-core SHA-256 GB/s | durable disk write GB/s | Berth / SHA-256 | Berth / disk | Berth / Distribution |",
            "|---|---|---|---|---|---|---|---|",
            f"| monolithic {push_mib} MiB | {push['berth'] / 1e9:.2f} | {push['distribution'] / 1e9:.2f} | {sha / 1e9:.2f} | {disk / 1e9:.2f} | "
            f"{push['berth'] / sha:.2f}x | {push['berth'] / disk:.2f}x | {push['berth'] / push['distribution']:.2f}x |",
            f"| chunked {push_mib // 2} MiB (16 MiB chunks) | {chunked['berth'] / 1e9:.2f} | {chunked['distribution'] / 1e9:.2f} | "
            f"{sha / 1e9:.2f} | {disk / 1e9:.2f} | {chunked['berth'] / sha:.2f}x | {chunked['berth'] / disk:.2f}x | "
            f"{chunked['berth'] / chunked['distribution']:.2f}x |",
            f"| streamed PATCH {push_mib // 2} MiB (32 KiB chunked encoding, as the Docker daemon) | {streamed['berth'] / 1e9:.2f} | "
            f"{streamed['distribution'] / 1e9:.2f} | {sha / 1e9:.2f} | {disk / 1e9:.2f} | {streamed['berth'] / sha:.2f}x | "
            f"{streamed['berth'] / disk:.2f}x | {streamed['berth'] / streamed['distribution']:.2f}x |",
            "",
            f"Chunked and streamed pushes relative to Berth's monolithic push in this run: "
            f"{chunked['berth'] / push['berth']:.2f}x and {streamed['berth'] / push['berth']:.2f}x "
            "(one push each; `bench/push.py` measures them against each other over alternating rounds).",
            "",
        ]
        if skopeo:
            lines += [
                "| skopeo whole-image pull, 5 layers (61 MiB), best of 3 | Berth | Distribution | Berth / Distribution (time) |",
                "|---|---|---|---|",
                f"| seconds | {skopeo['berth']:.3f} | {skopeo['distribution']:.3f} | {skopeo['berth'] / skopeo['distribution']:.2f}x |",
                "",
            ]
        lines += ["![ratios](RESULTS.svg)", ""]
        svg_chart(rows, os.path.join(os.path.dirname(args.out), "RESULTS.svg"))
        # Keep the hand-run sections (memory, restart, k6, criterion) that follow the marker.
        marker = "<!-- other measurements -->"
        rest = ""
        if os.path.exists(args.out):
            old = open(args.out).read()
            if marker in old:
                rest = old[old.index(marker):]
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n" + (rest or marker + "\n"))
        print(f"wrote {args.out}")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
