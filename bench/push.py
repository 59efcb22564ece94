#!/usr/bin/env python3
"""Push paths against each other, same bytes, same run: monolithic (POST + PUT ?digest= with the
whole body), chunked (PATCH 16 MiB chunks with Content-Range, as skopeo/containerd do), and one
streamed PATCH without a length (Transfer-Encoding: chunked, as the Docker daemon does), plus
the disk's durable write speed (write + fsync of the same bytes) as the ceiling. Each round
`sync`s first so no push pays for the previous one's dirty pages; rounds alternate the order.
(Issue "Performance, round 2".)

    python3 bench/push.py [--mib 512] [--rounds 3] [--berth target/release/berth]
"""
import argparse
import http.client as httpc
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Proc, digest, durable_write_speed, free_port, http, push_blob, push_chunked, start_upload, wait_http  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target"))


def push_streamed(base, repo, data, piece=32 << 10):
    """POST a session, one PATCH whose body is sent with chunked transfer encoding in 32 KiB chunks
    (what the Docker daemon's io.Copy writes), PUT ?digest=."""
    d = digest(data)
    loc = start_upload(base, repo)
    u = urllib.parse.urlsplit(loc)
    conn = httpc.HTTPConnection(u.hostname, u.port, timeout=600)
    mv = memoryview(data)
    conn.request("PATCH", u.path + (f"?{u.query}" if u.query else ""),
                 body=(mv[i:i + piece] for i in range(0, len(data), piece)),
                 headers={"Content-Type": "application/octet-stream"}, encode_chunked=True)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 202, (r.status, body[:200])
    loc = r.getheader("Location")
    conn.close()
    if loc.startswith("/"):
        loc = base + loc
    sep = "&" if "?" in loc else "?"
    s, _, body = http("PUT", f"{loc}{sep}digest={d}")
    assert s == 201, (s, body[:200])


def measure(base, data, rounds, tmp):
    """Median GB/s of each push path over `rounds` alternating rounds, and the disk's speed."""
    # The lambdas read `data` when called: each push sends the round's fresh bytes.
    paths = {
        "monolithic": lambda repo: push_blob(base, repo, data),
        "chunked 16 MiB": lambda repo: push_chunked(base, repo, data, 16 << 20),
        "streamed PATCH": lambda repo: push_streamed(base, repo, data),
    }
    got = {k: [] for k in paths}
    disk = []
    for r in range(rounds):
        # Distinct bytes per round and path: no push finds its blob already there.
        for i, (name, push) in enumerate(list(paths.items())[:: 1 if r % 2 == 0 else -1]):
            data = data[:-16] + os.urandom(16)
            os.sync()
            t = time.perf_counter()
            push(f"bench/push{r}{i}")
            got[name].append(len(data) / (time.perf_counter() - t))
        os.sync()
        disk.append(durable_write_speed(f"{tmp}/disk-probe", data))
    return {k: statistics.median(v) for k, v in got.items()}, statistics.median(disk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--berth", default=os.path.join(TARGET, "release", "berth"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="berth-push-")
    port = free_port()
    berth = Proc([args.berth, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/data", "--workers", "2"],
                 f"{tmp}/berth.log", dict(os.environ, RUST_LOG="warn"))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/v2/")
    try:
        res, disk = measure(base, os.urandom(args.mib << 20), args.rounds, tmp)
    finally:
        berth.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    mono = res["monolithic"]
    print(f"| push {args.mib} MiB (median of {args.rounds}) | GB/s | / monolithic | / durable disk write ({disk / 1e9:.2f} GB/s) |")
    print("|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v / 1e9:.2f} | {v / mono:.2f}x | {v / disk:.2f}x |")


if __name__ == "__main__":
    main()
