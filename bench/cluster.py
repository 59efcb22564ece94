#!/usr/bin/env python3
"""Scale-out numbers (#16): three Berth nodes (release build) on one Postgres and one S3 bucket
(moto), HAProxy round-robin in front, all on this machine.

    python3 bench/cluster.py                  # the full run (~3 min)
    python3 bench/cluster.py --quick          # smoke (fewer images, no lease failover)

Measured, in one run:
- commit cost (push acknowledged: one Postgres transaction per blob and per manifest) and
  replication lag (committed on A -> applied on B and C by their tails, from the nodes'
  `berth_cluster_replication_lag_seconds` histograms: p50/p99 interpolated from the buckets);
  read-your-writes: a GET on C right after each push acknowledged on A (must be 200);
- consistent reads: tag HEAD latency and throughput on a node that asks the log first (the
  default) against one that reads its local view only (`consistent_reads = false`), and the
  Postgres catch-up rounds per tag read;
- group commit: commits/s of 16 clients mounting blobs (one commit each) at one node, batched
  (the default) against one commit per transaction (`commit_batch_max = 1`), and at all three;
- pull isolation: CPU seconds and requests on A while B and C serve warm pulls (goal: none);
- S3 GETs per blob across cold nodes: concurrent pulls of fresh blobs on B and C (goal: one
  read-through fill per blob per node);
- failover: kill -9 of each node under a stream of pushes through the balancer -> next
  acknowledged push (s); kill -9 of the GC lease holder -> lease taken by another node (s);
- the per-request costs the model in docs/SCALE_OUT.md scales to 10 and 100 nodes.
Absolute numbers are noisy on a shared 2-core machine; the ratios and counts are the point.
"""
import argparse
import glob
import hashlib
import http.client as httpc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import free_port, http, wait_http, digest  # noqa: E402
from tiering import cpu_secs  # noqa: E402

TOKEN = "bench-cluster-internal-token-0123456789"


def metrics(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:
        return ""


def metric_sum(text, name, skip=()):
    total = 0.0
    for line in text.splitlines():
        if any(x in line for x in skip):
            continue
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram(text, name):
    """[(le, cumulative count)] of a Prometheus histogram."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return out


def quantile(buckets, q):
    """histogram_quantile as Prometheus computes it (linear within a bucket)."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def merge(*hs):
    out = {}
    for h in hs:
        for le, c in h:
            out[le] = out.get(le, 0) + c
    return sorted(out.items())


class Postgres:
    def __init__(self, tmp):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise SystemExit("Postgres is not installed (apt install postgresql)")
        self.bin = bins[-1]
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres")
        os.chmod(tmp, 0o755)
        self.port = free_port()
        self.pg(["initdb", "-D", self.dir, "-A", "trust", "-U", "postgres"])
        self.start()
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "CREATE DATABASE berth"],
                       check=True, stdout=subprocess.DEVNULL)

    def pg(self, args):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bin, args[0])] + args[1:],
                       check=True, stdout=subprocess.DEVNULL)

    def start(self):
        # Durable like production (fsync on): commits are what pushes wait for.
        self.pg(["pg_ctl", "-D", self.dir, "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}",
                 "-l", os.path.join(self.dir, "log"), "-w", "start"])

    def stop(self):
        self.pg(["pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop"])

    def conn(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=berth"


class Node:
    def __init__(self, bin, tmp, name, pg, s3_port, **extra):
        self.bin, self.name = bin, name
        self.port, self.internal = free_port(), free_port()
        self.dir = os.path.join(tmp, name)
        self.env = dict(os.environ,
                        BERTH_STORAGE__S3__BUCKET="bench", BERTH_STORAGE__S3__ENDPOINT=f"http://127.0.0.1:{s3_port}",
                        BERTH_STORAGE__S3__PATH_STYLE="true", BERTH_STORAGE__S3__ACCESS_KEY_ID="test",
                        BERTH_STORAGE__S3__SECRET_ACCESS_KEY="test", BERTH_STORAGE__DELETE_ENABLED="true",
                        BERTH_INTERNAL__LISTEN=f"127.0.0.1:{self.internal}", BERTH_INTERNAL__TOKEN=TOKEN,
                        BERTH_LIMITS__MAX_CONNECTIONS_PER_ADDRESS="0", BERTH_METRICS__PUBLIC="open",
                        BERTH_CLUSTER__NODE=name, BERTH_CLUSTER__POSTGRES_URL=pg.conn(),
                        BERTH_CLUSTER__INTERNAL_URL=f"http://127.0.0.1:{self.internal}", RUST_LOG="warn", **extra)
        self.log = open(os.path.join(tmp, f"{name}.log"), "a")
        self.start()

    def start(self):
        self.proc = subprocess.Popen([self.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir,
                                      "--workers", "2"], env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=60)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def base(self):
        return f"http://127.0.0.1:{self.port}"


def push_blob(base, repo, data):
    d = digest(data)
    s, _, body = http("POST", f"{base}/v2/{repo}/blobs/uploads/?digest={d}", data=data)
    if s != 201:
        raise RuntimeError(f"blob {s} {body[:200]}")
    return d


def push_image(base, repo, tag, layers):
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    descs = []
    push_blob(base, repo, config)
    for l in layers:
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(base, repo, l), "size": len(l)})
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                               "size": len(config)}, "layers": descs}).encode()
    s, _, body = http("PUT", f"{base}/v2/{repo}/manifests/{tag}", data=m,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    if s != 201:
        raise RuntimeError(f"manifest {s} {body[:200]}")
    return digest(m)


def get(port, path):
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("GET", path, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    h = hashlib.sha256()
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
    c.close()
    return r.status, "sha256:" + h.hexdigest()


def mount_storm(targets, per_node, secs, source_digest):
    """`per_node` threads per target node mounting one blob into fresh repositories for
    `secs` (each mount is one commit and nothing else: no body, no S3 request); returns
    (mounts acknowledged, wall seconds)."""
    stop = time.perf_counter() + secs
    counts = []
    lock = threading.Lock()

    def worker(n, k):
        c = httpc.HTTPConnection("127.0.0.1", n.port, timeout=60)
        done, i = 0, 0
        tag = os.urandom(4).hex()
        while time.perf_counter() < stop:
            i += 1
            c.request("POST", f"/v2/bench/storm-{tag}-{k}-{i}/blobs/uploads/?mount={source_digest}&from=bench/storm",
                      body=b"", headers={"Content-Length": "0"})
            r = c.getresponse()
            r.read()
            if r.status == 201:
                done += 1
        c.close()
        with lock:
            counts.append(done)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n, k)) for n in targets for k in range(per_node)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - t0


def tag_reads(port, path, count):
    """`count` HEADs of `path` on one keep-alive connection; (p50, p99) in ms."""
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(count):
        t = time.perf_counter()
        c.request("HEAD", path, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"tag HEAD {r.status}")
        times.append(time.perf_counter() - t)
    c.close()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def start_gc(node):
    body = json.dumps({"dry_run": False, "policy": {"grace_secs": 0}}).encode()
    s, _, _ = http("POST", f"http://127.0.0.1:{node.internal}/internal/v1/gc", data=body,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    images = 60 if args.quick else 300
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "--bin", "berth", "-q"], cwd=ROOT, check=True)
    bin = os.path.join(target, "release", "berth")
    tmp = tempfile.mkdtemp(prefix="berth-cluster-bench-")
    procs, nodes, pg = [], [], None
    try:
        pg = Postgres(tmp)
        s3_port = free_port()
        procs.append(subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                      stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/moto.log", "w")))
        wait_http(f"http://127.0.0.1:{s3_port}/")
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3_port}/bench", method="PUT"))
        nodes = [Node(bin, tmp, n, pg, s3_port) for n in ("a", "b", "c")]
        a, b, c = nodes
        lb_port = free_port()
        servers = "".join(f"  server {n.name} 127.0.0.1:{n.port} check inter 300ms fall 2 rise 1\n" for n in nodes)
        open(f"{tmp}/haproxy.cfg", "w").write(
            f"global\n  maxconn 2048\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n"
            f"  timeout server 120s\n  retries 2\n  option redispatch\nfrontend fe\n  bind 127.0.0.1:{lb_port}\n"
            f"  default_backend be\nbackend be\n  balance roundrobin\n  option httpchk GET /healthz\n{servers}")
        procs.append(subprocess.Popen(["haproxy", "-f", f"{tmp}/haproxy.cfg", "-db"], stdout=subprocess.DEVNULL,
                                      stderr=open(f"{tmp}/haproxy.log", "w")))
        time.sleep(1)
        lb = f"http://127.0.0.1:{lb_port}"

        # 1. Commits, replication lag, read-your-writes.
        t0 = time.perf_counter()
        ryw_fail = 0
        for i in range(images):
            d = push_image(a.base(), "bench/lag", f"t{i}", [os.urandom(4096)])
            s, got = get(c.port, f"/v2/bench/lag/manifests/t{i}")
            ryw_fail += (s != 200 or got != d)
        elapsed = time.perf_counter() - t0
        ma, mb, mc = metrics(a.port), metrics(b.port), metrics(c.port)
        commits = metric_sum(ma, 'berth_cluster_commits_total{result="ok"}')
        commit_h = histogram(ma, "berth_cluster_commit_seconds")
        lag_h = merge(histogram(mb, "berth_cluster_replication_lag_seconds"),
                      histogram(mc, "berth_cluster_replication_lag_seconds"))
        misses = metric_sum(mc, "berth_cluster_miss_catch_ups_total")
        print(f"pushes: {images} images (3 commits each) on A in {elapsed:.1f} s = {images * 3 / elapsed:.0f} commits/s "
              f"sequential; commits ok on A: {commits:.0f}")
        print(f"commit (Postgres transaction, fsync on): p50 {quantile(commit_h, .5) * 1000:.2f} ms, "
              f"p99 {quantile(commit_h, .99) * 1000:.2f} ms")
        print(f"replication lag (commit on A -> applied on B/C by the tail, {lag_h[-1][1]:.0f} entries): "
              f"p50 {quantile(lag_h, .5) * 1000:.2f} ms, p99 {quantile(lag_h, .99) * 1000:.2f} ms")
        print(f"read-your-writes: GET on C right after each push on A: {images - ryw_fail}/{images} 200 with the pushed "
              f"digest; catch-ups on a miss at C: {misses:.0f}")

        # 1b. Consistent reads: a tag read asks the log first (one query when nothing is new,
        # shared by concurrent reads). Reference: node D, the same build with
        # consistent_reads = false (local view only), in the same cluster and run.
        d = Node(bin, tmp, "d", pg, s3_port, BERTH_CLUSTER__CONSISTENT_READS="false",
                 BERTH_CLUSTER__COMMIT_BATCH_MAX="1")
        nodes.append(d)
        reads = 500 if args.quick else 3000
        path = "/v2/bench/lag/manifests/t0"
        for n in (b, d):
            tag_reads(n.port, path, 50)
        lat = {}
        for n in (b, d):
            rounds0 = metric_sum(metrics(n.port), "berth_cluster_catch_up_rounds_total")
            lat[n.name] = tag_reads(n.port, path, reads)
            lat[n.name + "_rounds"] = metric_sum(metrics(n.port), "berth_cluster_catch_up_rounds_total") - rounds0
        print(f"tag HEAD, one client, {reads} sequential (p50/p99): consistent (B) {lat['b'][0]:.3f}/{lat['b'][1]:.3f} ms, "
              f"local view (D) {lat['d'][0]:.3f}/{lat['d'][1]:.3f} ms; Postgres catch-up rounds on B: "
              f"{lat['b_rounds']:.0f} ({lat['b_rounds'] / reads:.2f} per read)")
        # Many concurrent readers (wrk: the Python client cannot keep a node busy): how far
        # the single-flight round shares one Postgres query between reads.
        if shutil.which("wrk"):
            script = os.path.join(tmp, "get.lua")
            open(script, "w").write('wrk.headers["Accept"] = '
                                    '"application/vnd.oci.image.manifest.v1+json"\n')
            conc = {}
            for n in (b, d):
                rounds0 = metric_sum(metrics(n.port), "berth_cluster_catch_up_rounds_total")
                out = subprocess.run(["wrk", "-t2", "-c64", "-d5s", "--latency", "-s", script,
                                      f"http://127.0.0.1:{n.port}{path}"], capture_output=True, text=True).stdout
                rounds = metric_sum(metrics(n.port), "berth_cluster_catch_up_rounds_total") - rounds0
                rps = float(out.split("Requests/sec:")[1].split()[0])
                total = int(out.split(" requests in ")[0].split()[-1])
                p50 = out.split(" 50% ")[1].split()[0]
                p99 = out.split(" 99% ")[1].split()[0]
                conc[n.name] = (rps, rounds / max(total, 1), p50, p99)
            print(f"tag GET, wrk 64 connections 5 s: consistent (B) {conc['b'][0]:.0f}/s p50 {conc['b'][2]} p99 "
                  f"{conc['b'][3]}, {conc['b'][1]:.3f} catch-up rounds per read; local view (D) {conc['d'][0]:.0f}/s "
                  f"p50 {conc['d'][2]} p99 {conc['d'][3]}")

        # 1c. Group commit: 16 clients at one node for 5 s, each request a cross-repository
        # mount (one commit, no body, no S3: what is measured is the log). B batches the
        # commits queued meanwhile into one transaction (the default), D commits one per
        # transaction (commit_batch_max = 1). Then 8 clients at each of A, B and C. (Blob
        # pushes are bound here by moto, the S3 server: ~85/s whatever the log does.)
        secs = 2 if args.quick else 5
        source = push_blob(a.base(), "bench/storm", os.urandom(512))
        rates = {}
        for n in (b, d):
            t0 = metric_sum(metrics(n.port), "berth_cluster_commit_transactions_total")
            done, wall = mount_storm([n], 16, secs, source)
            tx = metric_sum(metrics(n.port), "berth_cluster_commit_transactions_total") - t0
            rates[n.name] = (done / wall, done / max(tx, 1))
        print(f"group commit, 16 clients mounting a blob at one node for {secs} s: batched (B) "
              f"{rates['b'][0]:.0f} commits/s ({rates['b'][1]:.1f} per transaction), one per transaction (D) "
              f"{rates['d'][0]:.0f} commits/s ({rates['d'][1]:.1f}); ratio {rates['b'][0] / rates['d'][0]:.2f}x")
        d.kill9()
        nodes.remove(d)
        tx0 = sum(metric_sum(metrics(n.port), "berth_cluster_commit_transactions_total") for n in (a, b, c))
        done, wall = mount_storm([a, b, c], 8, secs, source)
        tx = sum(metric_sum(metrics(n.port), "berth_cluster_commit_transactions_total") for n in (a, b, c)) - tx0
        print(f"group commit, 8 clients mounting at each of A, B and C for {secs} s: {done / wall:.0f} commits/s "
              f"cluster-wide ({done / max(tx, 1):.1f} per transaction)")
        # The S3 mirror writes a link object per mount: let it finish before measuring CPU.
        mirrored = None
        for _ in range(240):
            now = [metric_sum(metrics(n.port), "berth_tier_mirrored_changes_total") for n in (a, b, c)]
            if now == mirrored:
                break
            mirrored = now
            time.sleep(1)

        # 2. Pull isolation: B and C serve warm pulls; A does nothing.
        big = os.urandom(32 << 20)
        dig = push_blob(a.base(), "bench/pull", big)
        for n in (b, c):
            assert get(n.port, f"/v2/bench/pull/blobs/{dig}") == (200, dig)
        # Registry requests only: the balancer's health checks and our metric reads are not pulls.
        ops = ('endpoint="healthz"', 'endpoint="metrics"')
        req_a0 = metric_sum(metrics(a.port), "berth_http_requests_total", ops)
        cpu0 = {n.name: cpu_secs(n.proc.pid) for n in nodes}
        pulls = 10 if args.quick else 40
        t0 = time.perf_counter()
        for _ in range(pulls):
            for n in (b, c):
                assert get(n.port, f"/v2/bench/pull/blobs/{dig}") == (200, dig)
        wall = time.perf_counter() - t0
        cpu1 = {n.name: cpu_secs(n.proc.pid) for n in nodes}
        req_a1 = metric_sum(metrics(a.port), "berth_http_requests_total", ops)
        used = {k: cpu1[k] - cpu0[k] for k in cpu0}
        print(f"pull isolation: {2 * pulls} pulls of 32 MiB from B and C in {wall:.1f} s; CPU s: A {used['a']:.3f}, "
              f"B {used['b']:.3f}, C {used['c']:.3f} (A: heartbeat, tail poll, health checks); registry requests reaching A: "
              f"{req_a1 - req_a0:.0f}")

        # 3. S3 GETs per blob across cold nodes (concurrent pulls on each).
        blobs = [os.urandom(16 << 20) for _ in range(3)]
        digs = [push_blob(a.base(), "bench/cold", x) for x in blobs]
        fills0 = {n.name: metric_sum(metrics(n.port), 'berth_tier_fills_total') for n in (b, c)}
        errors = []

        def puller(n, d):
            r = get(n.port, f"/v2/bench/cold/blobs/{d}")
            if r != (200, d):
                errors.append(r)
        threads = [threading.Thread(target=puller, args=(n, d)) for d in digs for n in (b, c) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)  # a fill is counted once verified and published, just after its last reader
        fills = {n.name: metric_sum(metrics(n.port), 'berth_tier_fills_total') - fills0[n.name] for n in (b, c)}
        print(f"cold pulls: 3 blobs x 16 MiB, 10 concurrent GETs of each on B and on C ({len(threads)} GETs, "
              f"{len(errors)} errors): S3 read-through fills B {fills['b']:.0f}, C {fills['c']:.0f} (goal: 3 each)")

        # 4. Failover of pushes: kill -9 each node under a stream of pushes through the balancer.
        stop = threading.Event()
        acks, fails = [], []

        def pusher(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    push_image(lb, "bench/failover", f"w{k}-{i}", [os.urandom(8192)])
                    acks.append((time.perf_counter(), f"w{k}-{i}"))
                except Exception:
                    fails.append(time.perf_counter())
        workers = [threading.Thread(target=pusher, args=(k,)) for k in range(2)]
        for w in workers:
            w.start()
        time.sleep(2)
        gaps = []
        for n in nodes:
            t_kill = time.perf_counter()
            n.kill9()
            while not [t for t, _ in acks if t > t_kill]:
                time.sleep(0.005)
            gaps.append(min(t for t, _ in acks if t > t_kill) - t_kill)
            time.sleep(1)
            n.start()
            time.sleep(1)
        stop.set()
        for w in workers:
            w.join()
        print(f"push failover: first push acknowledged after kill -9 of a, b, c: "
              + ", ".join(f"{g * 1000:.0f} ms" for g in gaps) + f"; {len(acks)} pushes acknowledged, {len(fails)} failed "
              f"(in flight on the killed node)")
        # Every acknowledged push is there on every node (a push that failed in flight may be
        # there too: committed, its answer lost with the node).
        lost = 0
        for n in nodes:
            s, _, body = http("GET", f"{n.base()}/v2/bench/failover/tags/list")
            lost += len({tag for _, tag in acks} - set(json.loads(body)["tags"]))
        print(f"acknowledged pushes missing from a node's tag list afterwards: {lost}")

        # 5. GC lease failover (default lease_ttl_secs = 10).
        if not args.quick:
            for i in range(200):
                d = push_image(a.base(), "bench/junk", f"j{i}", [os.urandom(1024)])
                http("DELETE", f"{a.base()}/v2/bench/junk/manifests/{d}")
            assert start_gc(c) == 202
            time.sleep(0.2)
            t_kill = time.perf_counter()
            c.kill9()
            while start_gc(a) != 202:
                time.sleep(0.1)
            print(f"GC lease failover: kill -9 of the GC lease holder mid-run -> another node's GC starts after "
                  f"{time.perf_counter() - t_kill:.1f} s (lease_ttl_secs 10)")
            c.start()
        heads = pg_query(pg, "SELECT count(*), pg_size_pretty(pg_total_relation_size('cluster_changes')) FROM cluster_changes")
        print(f"change log: {heads}")
    finally:
        for n in nodes:
            try:
                n.kill9()
            except Exception:
                pass
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if pg:
            try:
                pg.stop()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def pg_query(pg, sql):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "berth", "-At", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
