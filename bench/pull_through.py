#!/usr/bin/env python3
"""Pull-through cache: Berth in front of an upstream registry (Debian's docker-registry on
loopback) against a direct GET from that upstream, same bytes, same run.

    python3 bench/pull_through.py                       # 3 blobs x 64 MiB, 100 concurrent cold pulls
    python3 bench/pull_through.py --size-mib 8 --blobs 1 --concurrent 20    # smoke

For each blob: a direct GET from the upstream (TTFB, throughput), the first GET through Berth
(cold: fetched from the upstream while it is written, hashed and verified), a second GET
through Berth (warm: a local cache hit) and a GET of the same bytes pushed to Berth directly
(what a warm pull-through hit should equal). Then `--concurrent` clients GET one new blob at
the same moment through Berth: the upstream's access log counts how many requests reached it.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Proc, digest, free_port, push_blob, wait_http  # noqa: E402
from tiering import CpuMeter, timed_get  # noqa: E402 (same GET timing as the S3 bench)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--blobs", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--berth", help="binary to measure (default: build the release one)")
    args = ap.parse_args()
    if args.berth:
        berth_bin = args.berth
    else:
        subprocess.run(["cargo", "build", "--release", "--bin", "berth", "-q"], cwd=ROOT, check=True)
        berth_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "berth")
    tmp = tempfile.mkdtemp(prefix="berth-pt-bench-")
    procs = []
    try:
        up_port, port = free_port(), free_port()
        with open(f"{tmp}/registry.yml", "w") as f:
            f.write(f"version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n"
                    f"storage: {{filesystem: {{rootdirectory: {tmp}/upstream}}}}\nhttp: {{addr: 127.0.0.1:{up_port}}}\n")
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        procs.append(Proc(["docker-registry", "serve", f"{tmp}/registry.yml"], f"{tmp}/upstream.log", env=env))
        with open(f"{tmp}/berth.toml", "w") as f:
            f.write(f"[[proxy.upstreams]]\nname = \"up\"\nurl = \"http://127.0.0.1:{up_port}\"\n")
        procs.append(Proc([berth_bin, "serve", "--config", f"{tmp}/berth.toml", "--listen", f"127.0.0.1:{port}",
                           "--data-dir", f"{tmp}/data", "--workers", "2"], f"{tmp}/berth.log",
                          dict(os.environ, RUST_LOG="warn")))
        up, base = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{port}"
        wait_http(up + "/v2/")
        wait_http(base + "/v2/")
        rows = {"upstream": [], "cold": [], "warm": [], "pushed": []}
        pids = {"upstream": procs[0].p.pid, "berth": procs[1].p.pid, "client": os.getpid()}
        cpu = {"upstream": [], "cold": []}
        for i in range(args.blobs):
            data = os.urandom(args.size_mib << 20)
            d = push_blob(up, "bench/big", data)
            push_blob(base, "local/big", data[:-1] + b"x")  # distinct bytes, same size, pushed here
            dl = digest(data[:-1] + b"x")
            for key, p, path, want in [
                ("upstream", up_port, f"/v2/bench/big/blobs/{d}", d),
                ("cold", port, f"/v2/up/bench/big/blobs/{d}", d),
                ("warm", port, f"/v2/up/bench/big/blobs/{d}", d),
                ("pushed", port, f"/v2/local/big/blobs/{dl}", dl),
            ]:
                if key == "warm":
                    time.sleep(0.5)  # the fill publishes after its last byte is verified
                with CpuMeter(pids) as m:
                    st, ttfb, total, n, h = timed_get(p, path)
                if key in cpu:
                    cpu[key].append(m)
                assert st == 200 and "sha256:" + h == want, (key, st, n)
                rows[key].append((ttfb, total, n))
        med = {k: (statistics.median(t for t, _, _ in v) * 1000, statistics.median(n / tot for _, tot, n in v) / 1e6)
               for k, v in rows.items()}
        # Concurrent cold pulls of one new blob.
        data = os.urandom(16 << 20)
        d = push_blob(up, "bench/big", data)
        before = open(f"{tmp}/upstream.log").read().count(f"/blobs/{d}")
        ok = []
        barrier = threading.Barrier(args.concurrent)

        def one():
            barrier.wait()
            st, _, _, n, h = timed_get(port, f"/v2/up/bench/big/blobs/{d}")
            ok.append(st == 200 and "sha256:" + h == d)

        threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        conc_secs = time.perf_counter() - t
        time.sleep(0.5)
        upstream_gets = open(f"{tmp}/upstream.log").read().count(f"/blobs/{d}") - before
        print(f"blob {args.size_mib} MiB x {args.blobs}, medians:")
        for k in ("upstream", "cold", "warm", "pushed"):
            print(f"  {k:8} TTFB {med[k][0]:8.2f} ms   throughput {med[k][1]:8.1f} MB/s")
        for k in ("upstream", "cold"):
            per = {p: statistics.median(m.used[p] for m in cpu[k]) * 1000 for p in pids}
            busy = statistics.median(m.busy_fraction for m in cpu[k]) * 100
            print(f"  {k:8} CPU ms per GET (median): " + ", ".join(f"{p} {v:.0f}" for p, v in per.items())
                  + f"; machine busy {busy:.0f}% of {os.cpu_count()} cores")
        print(f"cold/upstream: TTFB {med['cold'][0] / med['upstream'][0]:.2f}x, throughput {med['cold'][1] / med['upstream'][1]:.2f}x; "
              f"warm/pushed throughput {med['warm'][1] / med['pushed'][1]:.2f}x; warm/upstream {med['warm'][1] / med['upstream'][1]:.2f}x")
        print(f"{args.concurrent} concurrent cold GETs of a 16 MiB blob: {sum(ok)} whole and verified in {conc_secs:.2f} s; "
              f"requests for it at the upstream: {upstream_gets}")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
