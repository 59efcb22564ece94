#!/usr/bin/env python3
"""Cold-pull benchmark: a blob evicted to S3 pulled through Berth (read-through, caching on the
way), against a raw GET of the same object from the same S3 server, in the same run.

    python3 bench/tiering.py                 # 3 blobs x 64 MiB, 3 rounds
    python3 bench/tiering.py --size-mib 8 --blobs 2 --rounds 1    # smoke

S3 is moto_server on 127.0.0.1 (pip moto[server]); Berth is the release build with a 1-byte
cache budget, so every blob is evicted as soon as it is safe in S3. For each blob and round:
raw GET from S3 (time to first byte, total), cold GET through Berth (same), then a warm GET
through Berth (cache hit: the read-through cached it). Reported: medians and ratios
(Berth / raw S3: TTFB and throughput). Absolute numbers are noisy on a shared machine.
"""
import argparse
import hashlib
import http.client
import os
import shutil
import sys
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import free_port, wait_http  # noqa: E402  (shared helpers)
AUTH = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request"


def timed_get(port, path, headers=None):
    """(status, ttfb s, total s, bytes, sha256 hex)"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    first = r.read(1)
    ttfb = time.perf_counter() - t0
    h = hashlib.sha256(first)
    n = len(first)
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    total = time.perf_counter() - t0
    c.close()
    return r.status, ttfb, total, n, h.hexdigest()


def cpu_secs(pid):
    """utime + stime of a process (all threads), seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """(busy, total) jiffies of all cores from /proc/stat."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class CpuMeter:
    """CPU seconds of each process and the machine's busy fraction over a block."""

    def __init__(self, pids):
        self.pids = pids

    def __enter__(self):
        self.start = {k: cpu_secs(p) for k, p in self.pids.items()}
        self.busy = machine_busy()
        return self

    def __exit__(self, *exc):
        self.used = {k: cpu_secs(p) - self.start[k] for k, p in self.pids.items()}
        b, t = machine_busy()
        self.busy_fraction = (b - self.busy[0]) / max(1, t - self.busy[1])


def sha256_secs_per_gib():
    data = os.urandom(64 << 20)
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    return (time.perf_counter() - t) * 16


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_evicted(port, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric(port, "berth_tier_pending_blobs") == 0 and metric(port, "berth_store_local_bytes") == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("blobs were not evicted")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--blobs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "--bin", "berth", "-q"], cwd=ROOT, check=True)
    berth_bin = os.path.join(target, "release", "berth")
    tmp = tempfile.mkdtemp(prefix="berth-tier-bench-")
    procs = []
    try:
        s3_port, node_port = free_port(), free_port()
        procs.append(subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                      stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/moto.log", "w")))
        wait_http(f"http://127.0.0.1:{s3_port}/")
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3_port}/bench", method="PUT"))
        env = dict(os.environ,
                   BERTH_STORAGE__S3__BUCKET="bench", BERTH_STORAGE__S3__PREFIX="registry/",
                   BERTH_STORAGE__S3__ENDPOINT=f"http://127.0.0.1:{s3_port}", BERTH_STORAGE__S3__PATH_STYLE="true",
                   BERTH_STORAGE__S3__ACCESS_KEY_ID="test", BERTH_STORAGE__S3__SECRET_ACCESS_KEY="test",
                   BERTH_CACHE__MAX_BYTES="1", BERTH_CACHE__CHECK_INTERVAL_SECS="1", RUST_LOG="warn",
                   BERTH_METRICS__PUBLIC="open")
        moto_pid = procs[0].pid
        procs.append(subprocess.Popen([berth_bin, "serve", "--listen", f"127.0.0.1:{node_port}",
                                       "--data-dir", f"{tmp}/data", "--workers", "2"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/berth.log", "w")))
        wait_http(f"http://127.0.0.1:{node_port}/v2/")
        digests = []
        for i in range(args.blobs):
            data = os.urandom(args.size_mib << 20)
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            c = http.client.HTTPConnection("127.0.0.1", node_port, timeout=600)
            c.request("POST", f"/v2/bench/cold/blobs/uploads/?digest={d}", body=data)
            assert c.getresponse().status == 201
            digests.append(d)
        rows = {"raw": [], "cold": [], "warm": []}
        pids = {"moto": moto_pid, "berth": procs[1].pid, "client": os.getpid()}
        cpu = {"raw": [], "cold": []}
        for _ in range(args.rounds):
            for d in digests:
                wait_evicted(node_port)
                with CpuMeter(pids) as m:
                    st, ttfb, total, n, h = timed_get(s3_port, f"/bench/registry/blobs/sha256/{d[7:]}", {"Authorization": AUTH})
                cpu["raw"].append((m, total))
                assert st == 200 and "sha256:" + h == d, (st, n)
                rows["raw"].append((ttfb, total, n))
                with CpuMeter(pids) as m:
                    st, ttfb, total, n, h = timed_get(node_port, f"/v2/bench/cold/blobs/{d}")
                cpu["cold"].append((m, total))
                assert st == 200 and "sha256:" + h == d, (st, n)
                rows["cold"].append((ttfb, total, n))
                # Warm: the read-through cached it (wait until it is published, before eviction).
                st, ttfb, total, n, h = timed_get(node_port, f"/v2/bench/cold/blobs/{d}")
                assert st == 200 and "sha256:" + h == d
                rows["warm"].append((ttfb, total, n))
        med = {k: (statistics.median(t for t, _, _ in v) * 1000, statistics.median(n / tot for _, tot, n in v) / 1e6)
               for k, v in rows.items()}
        fills = metric(node_port, 'berth_tier_fills_total{result="ok"}')
        print(f"blob {args.size_mib} MiB x {args.blobs} x {args.rounds} rounds; read-through fills: {fills:.0f}")
        for k in ("raw", "cold", "warm"):
            print(f"{k:5} TTFB median {med[k][0]:8.2f} ms   throughput median {med[k][1]:8.1f} MB/s")
        for k in ("raw", "cold"):
            per = {p: statistics.median(m.used[p] for m, _ in cpu[k]) * 1000 for p in pids}
            busy = statistics.median(m.busy_fraction for m, _ in cpu[k]) * 100
            print(f"{k:5} CPU ms per GET (median): " + ", ".join(f"{p} {v:.0f}" for p, v in per.items())
                  + f"; machine busy {busy:.0f}% of {os.cpu_count()} cores during the GET")
        cold_bytes = sum(n for _, _, n in rows["cold"])
        berth_cpu = sum(m.used["berth"] for m, _ in cpu["cold"])
        print(f"berth CPU per cold GiB read through: {berth_cpu / (cold_bytes / (1 << 30)):.2f} s "
              f"(single-core SHA-256 of 1 GiB alone: {sha256_secs_per_gib():.2f} s)")
        print(f"cold/raw: TTFB {med['cold'][0] / med['raw'][0]:.2f}x, throughput {med['cold'][1] / med['raw'][1]:.2f}x; "
              f"warm/raw throughput {med['warm'][1] / med['raw'][1]:.2f}x")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
