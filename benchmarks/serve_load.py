"""Serving under load: 8 concurrent clients for 30 s against `maskrcnn serve` on 127.0.0.1.

Recipe: start the real server (uvicorn, a subprocess) on a free port with ``--model-dir`` (default:
the stand-in SavedModel, ``maskrcnn.serve.standin``, whose cost is decoding and mask building, so
the figures are the server's own overhead; pass a trained model dir for model-bound figures), wait
for ``/ping``, then ``--clients`` threads post the notebook's request (a 640x480 JPEG, base64) to
``/invocations`` back to back for ``--seconds``. Once without dynamic batching and once with
``--max-batch-size`` / ``--max-batch-wait-ms``. From the server's ``/metrics``: the share of the
request latency spent encoding the response (RLE + JSON) and the mean batch size.

Prints one JSON line per configuration (failed requests, throughput, p50, p99, encode share) and a
summary table.

    .venv/bin/python benchmarks/serve_load.py [--model-dir DIR] [--clients 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image


def test_image(height: int = 480, width: int = 640) -> bytes:
    """A JPEG with three large coloured shapes (three stand-in instances above score 0.5)."""
    yy, xx = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3), np.uint8)
    img[40:400, 30:500, 0] = 230
    img[..., 1] = np.where((yy - 260) ** 2 + (xx - 330) ** 2 < 200 ** 2, 210, 0)
    img[200:, :, 2] = 200
    img = np.clip(img.astype(int) + np.random.default_rng(0).integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "maskrcnn.cli", "--log-level", "WARNING", "serve", "--model-dir", model_dir,
           "--host", "127.0.0.1", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready in 300 s")


def metric_sum(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    return sum(float(m) for m in re.findall(pattern, text, flags=re.M))


def load(url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], int, int, float]:
    """Clients post back to back until ``seconds`` have passed; returns (latencies of successes,
    failures, requests, wall seconds until the last answer)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                reply = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
                ok = reply.status_code == 200 and "annotations" in reply.json()
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0], len(latencies) + failures[0], time.perf_counter() - start


def run_config(name: str, model_dir: str, extra: list[str], body: bytes, clients: int, seconds: float) -> dict:
    port = free_port()
    proc = start_server(model_dir, port, extra)
    try:
        base = f"http://127.0.0.1:{port}"
        requests.post(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        latencies, failed, total, wall = load(f"{base}/invocations", body, clients, seconds)
        text = requests.get(f"{base}/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(30)
    request_seconds = metric_sum(text, "maskrcnn_request_seconds_sum", '{path="/invocations"}')
    encode_seconds = metric_sum(text, "maskrcnn_encode_seconds_sum")
    batches = metric_sum(text, "maskrcnn_batch_size_count")
    images = metric_sum(text, "maskrcnn_batch_size_sum")
    lat = np.asarray(latencies) * 1000
    return {
        "benchmark": "serve_load", "config": name, "clients": clients, "seconds": seconds, "requests": total,
        "failed": failed, "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "encode_share_of_latency": round(encode_seconds / request_seconds, 3) if request_seconds else None,
        "mean_batch_size": round(images / batches, 2) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="model dir (default: the stand-in SavedModel)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from maskrcnn.serve.standin import export_standin_model

            model_dir = str(export_standin_model(Path(tmp) / "standin"))
        image = test_image()
        body = json.dumps({"img_id": "bench.jpg", "img_data": base64.b64encode(image).decode()}).encode()
        configs = {
            "no batching": ["--max-batch-size", "1"],
            f"batching <= {args.max_batch_size}, {args.max_batch_wait_ms:g} ms":
                ["--max-batch-size", str(args.max_batch_size), "--max-batch-wait-ms", str(args.max_batch_wait_ms)],
        }
        rows = []
        for name, extra in configs.items():
            row = run_config(name, model_dir, extra, body, args.clients, args.seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"{'config':32} {'req':>6} {'fail':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'encode':>7} {'batch':>6}")
    for r in rows:
        print(f"{r['config']:32} {r['requests']:6d} {r['failed']:5d} {r['throughput_rps']:7.1f} {r['p50_ms']:8.1f} "
              f"{r['p99_ms']:8.1f} {r['encode_share_of_latency']:7.1%} {r['mean_batch_size']:6.2f}")


if __name__ == "__main__":
    main()
