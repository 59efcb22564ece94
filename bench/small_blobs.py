#!/usr/bin/env python3
"""Small-blob GETs: Berth vs nginx with open_file_cache (as a production nginx runs), same
bytes, same wrk, same run; 4 KiB and 64 KiB blobs at c=16 and c=100, best of N alternating
rounds. (Issue "Performance, round 2".)

    python3 bench/small_blobs.py [--secs 6] [--rounds 3]

Needs a release build (cargo build --release --bin berth), wrk and nginx (apt).
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Proc, digest, free_port, push_blob, wait_http, write_nginx_conf, wrk  # noqa: E402

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="4KiB,64KiB", help="comma-separated: 4KiB, 16KiB, 64KiB, 256KiB, 1MiB")
    ap.add_argument("--conns", default="16,100", help="comma-separated wrk connection counts")
    ap.add_argument("--berth", default=os.path.join(TARGET, "release", "berth"), help="the binary to measure")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="berth-small-")
    bport, nport = free_port(), free_port()
    berth = Proc([args.berth, "serve", "--listen", f"127.0.0.1:{bport}",
                  "--data-dir", f"{tmp}/data", "--workers", "2"], f"{tmp}/berth.log", dict(os.environ, RUST_LOG="warn"))
    os.makedirs(f"{tmp}/www")
    write_nginx_conf(tmp, nport, "open_file_cache max=10000 inactive=60s;\n  open_file_cache_valid 60s;")
    nginx = Proc(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"], f"{tmp}/nginx.log")
    bbase, nbase = f"http://127.0.0.1:{bport}", f"http://127.0.0.1:{nport}"
    wait_http(bbase + "/v2/")
    wait_http(nbase + "/")
    rows = []
    try:
        sizes = {"4KiB": 4096, "16KiB": 16384, "64KiB": 65536, "256KiB": 262144, "1MiB": 1 << 20}
        for name in args.sizes.split(","):
            size = sizes[name]
            data = os.urandom(size)
            push_blob(bbase, "bench/small", data)
            with open(f"{tmp}/www/{name}", "wb") as f:
                f.write(data)
            for c in [int(x) for x in args.conns.split(",")]:
                best = {"nginx": None, "berth": None}
                for r in range(args.rounds):
                    order = ["nginx", "berth"] if r % 2 == 0 else ["berth", "nginx"]
                    for who in order:
                        url = f"{nbase}/{name}" if who == "nginx" else f"{bbase}/v2/bench/small/blobs/{digest(data)}"
                        res = wrk(url, c, args.secs)
                        assert res["errors"] == 0, (who, res)
                        if best[who] is None or res["rps"] > best[who]["rps"]:
                            best[who] = res
                rows.append((name, c, best))
    finally:
        berth.stop()
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("| blob GET | c | nginx (open_file_cache) req/s | Berth req/s | Berth p50 / p99 ms | Berth/nginx |")
    print("|---|---|---|---|---|---|")
    for name, c, b in rows:
        print(f"| {name} | {c} | {b['nginx']['rps']:.0f} | {b['berth']['rps']:.0f} | {b['berth']['p50']:.2f} / {b['berth']['p99']:.2f} | "
              f"**{b['berth']['rps'] / b['nginx']['rps']:.2f}x** |")


if __name__ == "__main__":
    main()
