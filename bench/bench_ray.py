# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the worker on Ray Serve against itself and against the plain worker, with tiny diffusion models.

Plain Python in the Ray venv (`./run venv ray`), with the repo root (`stylepass_core`), tests/diffusion
(`tiny_models`) and tests/ray (`ray_helpers`: processes and requests as the tests start them) on PYTHONPATH,
as `./run bench` does:

    PYTHONPATH=.:tools:tests/diffusion:tests/ray python bench/bench_ray.py [--frames 16] [--runs 15]

Measured here (2 cores, no GPU), each worker a real process started as a user starts it, torch with one
thread per replica (and in the plain worker):

1. Throughput: frames per minute of `python -m stylepass_core.worker.serve` with 2 replicas against 1 (both
   on a Ray instance of 2 CPUs, 1 CPU per replica), `--frames` independent frames (192x192, 6 steps, model
   warm) kept 2 in flight by client threads (goal: 2 replicas >= 1.7 x 1), and where the CPU went: the
   replicas, the rest of the serving stack, the client. The 2 cores carry all of it here; on a cluster the
   ingress, Serve's proxy and the clients run on other CPUs than the GPUs' replicas.
2. Request overhead: the same tiny job (64x64, 2 steps, model warm) end to end through `WorkerClient.run`,
   median of `--runs`, on the Ray path and on the plain worker in the same run; also a bare `/v1/health`.
3. Batching (`--max-batch-size 4`): frames per minute of 1 replica that runs the frames of a model 4 at a time
   in one engine call, 4 kept in flight, against the same replica one frame at a time (step 1's 1 replica);
   and in this process the engine's own `run_batch` of 4 frames against 4 `run` calls (128x128, 4 steps,
   one thread): time, and the largest difference to the single calls. A CPU gains little from a batch (its
   cores are busy with one frame already); a GPU is where a batch fills the device.

Then, on paper, frames per hour and cost per frame on 1, 8 and 64 GPUs, from the per-frame GPU figures the
README states (SD 1.5 512x512 20 steps about 1 s, SDXL-class 1080p about 8 s, on an RTX 4090-class GPU), the
Ray path's per-frame overhead measured in step 2, and the prices given (`--gpu-hour`, `--head-hour`).
"""

import argparse
import os
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from ray_helpers import descendants, diffusion_request
from worker_process import Started, start

from stylepass_core.worker.client import WorkerClient

GPU_FRAME_SECONDS = {"SD 1.5, 512x512, 20 steps": 1.0, "SDXL-class, 1080p": 8.0}  # README, on paper
GPU_COUNTS = (1, 8, 64)
CLIENTS = 2  # frames in flight, as Blender keeps them: one per slot of the 2-replica worker
SIZE, STEPS = 192, 6  # a throughput frame: about 3 s of one core


def build_models(root: Path) -> tuple[Path, Path]:
    import tiny_models

    tiny_models.save_sd15_folder(root / "tiny-a", seed=0)
    return root, root / "tiny-a"


def start_ray_worker(replicas: int, model_root: Path, log: Path, *extra: str) -> Started:
    args = ["--replicas", str(replicas), "--num-cpus", "2", "--num-cpus-per-replica", "1"]
    args += ["--model-dir", str(model_root), "--app-name", f"bench-{replicas}", "--shutdown-grace", "5"]
    args += list(extra)
    return start("stylepass_core.worker.serve", args, secrets.token_urlsafe(16), log, 180)


def frames_per_minute(
    worker: Started, model: Path, frames: int, replicas: int, clients: int = CLIENTS
) -> tuple[float, set[str], dict[str, float], list]:
    """Warm every replica, then `frames` frames through `clients` client threads that each keep one frame in
    flight (Blender's animation keeps a worker's slots busy); frames per minute, the replicas that ran them,
    the CPU seconds per frame of the replicas, the rest of the serving stack (ingress, Serve's proxy and
    controller, Ray's own processes) and this client, and the results."""
    warm: dict[int, object] = {}
    threads = [
        threading.Thread(target=_run, args=(worker, model, 900 + i, SIZE, STEPS, warm))
        for i in range(2 * replicas)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    todo = list(range(frames))
    lock = threading.Lock()
    results: dict[int, object] = {}

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                seed = todo.pop()
            _run(worker, model, seed, SIZE, STEPS, results)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu_before, own_before = _cpu(worker.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu_after, own_after = _cpu(worker.proc.pid), resource.getrusage(resource.RUSAGE_SELF)
    cpu = {"replicas": 0.0, "serving": 0.0}
    for pid, (name, after) in cpu_after.items():
        before = cpu_before.get(pid, (name, 0.0))[1]
        cpu["replicas" if "StylepassEngine" in name else "serving"] += (after - before) / frames
    own = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    cpu["client"] = own / frames
    failed = [r for r in results.values() if isinstance(r, BaseException)]
    if failed or len(results) != frames:
        raise RuntimeError(f"{len(failed)} of {frames} frames failed: {failed[:1]}")
    replicas_used = {r.info["ray"]["replica"] for r in results.values()}
    return 60.0 * frames / seconds, replicas_used, cpu, list(results.values())


def _cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process below `pid` (Ray's and Serve's), with its command."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for child in descendants(pid) | {pid}:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[child] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def _run(worker: Started, model: Path, seed: int, size: int, steps: int, into: dict) -> None:
    try:
        with WorkerClient(worker.url, worker.token) as client:
            into[seed] = client.run("DIFFUSION", diffusion_request(model, seed, size, steps))
    except BaseException as exc:  # counted by the caller
        into[seed] = exc


def request_times(worker: Started, model: Path, runs: int) -> tuple[float, float]:
    """Median seconds of the same tiny job end to end, and of a bare health request (after warm-up)."""
    with WorkerClient(worker.url, worker.token) as client:
        request = diffusion_request(model, 1, 64, 2)
        for _ in range(3):
            client.run("DIFFUSION", request)
        jobs, health = [], []
        for _ in range(runs):
            started = time.perf_counter()
            client.run("DIFFUSION", request)
            jobs.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.health()
            health.append(time.perf_counter() - started)
    return statistics.median(jobs), statistics.median(health)


def batching(model: Path) -> dict[str, float]:
    """The engine's `run_batch` of 4 frames against 4 `run` calls (128x128, 4 steps, one thread)."""
    import torch

    from stylepass_core.engine_api import BatchItem
    from stylepass_core.engines.diffusion import DiffusionEngine

    torch.set_num_threads(1)
    engine = DiffusionEngine()
    requests = [diffusion_request(model, seed, 128, 4) for seed in (0, 1, 2, 3)]
    engine.run(requests[0])  # warm
    started = time.perf_counter()
    alone = [engine.run(request).image for request in requests]
    alone_seconds = time.perf_counter() - started
    started = time.perf_counter()
    batch = [outcome.image for outcome in engine.run_batch([BatchItem(r) for r in requests])]
    batch_seconds = time.perf_counter() - started
    engine.release()
    return {
        "alone": alone_seconds,
        "batch": batch_seconds,
        "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(alone, batch, strict=True)),
        "equal": all(np.array_equal(a, b) for a, b in zip(alone, batch, strict=True)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per throughput run (default 16)")
    parser.add_argument("--runs", type=int, default=15, help="requests per overhead median (default 15)")
    parser.add_argument("--gpu-hour", type=float, default=0.70, help="assumed price of a GPU-hour in USD")
    parser.add_argument(
        "--head-hour", type=float, default=0.20, help="assumed price of the CPU head node-hour"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stylepass-bench-ray-") as folder:
        root, model = build_models(Path(folder))
        logs = Path(folder)

        # 1. Throughput, 1 replica then 2 (one Ray instance at a time: 2 CPUs)
        fpm: dict[int, float] = {}
        spread: dict[int, set[str]] = {}
        cpu: dict[int, dict[str, float]] = {}
        overhead: dict[str, tuple[float, float]] = {}
        for replicas in (1, 2):
            worker = start_ray_worker(replicas, root, logs / f"serve-{replicas}.log")
            try:
                fpm[replicas], spread[replicas], cpu[replicas], _ = frames_per_minute(
                    worker, model, args.frames, replicas
                )
                if replicas == 2:
                    overhead["ray"] = request_times(worker, model, args.runs)
            finally:
                worker.stop(60)

        # 2. The plain worker's same tiny job (one torch thread, like a replica)
        plain = start(
            "stylepass_core.worker",
            ["--port", "0", "--model-dir", str(root)],
            secrets.token_urlsafe(16),
            logs / "plain.log",
            60,
            OMP_NUM_THREADS="1",
        )
        try:
            overhead["plain"] = request_times(plain, model, args.runs)
        finally:
            plain.stop(30)

        # 3. Batching: 1 replica, 4 frames at a time, 4 in flight; then the engine alone in this process
        worker = start_ray_worker(1, root, logs / "serve-batch.log", "--max-batch-size", "4")
        try:
            batched_fpm, _, _, batched_results = frames_per_minute(worker, model, args.frames, 1, clients=4)
        finally:
            worker.stop(60)
        sizes = [r.info.get("batch", {}).get("size", 1) for r in batched_results]
        batch = batching(model)

    ratio = fpm[2] / fpm[1]
    ray_job, ray_health = overhead["ray"]
    plain_job, plain_health = overhead["plain"]
    extra = ray_job - plain_job
    print("\nworker on Ray Serve (tiny SD1.5-architecture model, CPU, 1 torch thread per replica)")
    print(f"  throughput, {SIZE}x{SIZE} x {STEPS} steps, {args.frames} frames, {CLIENTS} in flight:")
    print(f"    1 replica : {fpm[1]:6.1f} frames/min")
    print(f"    2 replicas: {fpm[2]:6.1f} frames/min, on {len(spread[2])} replicas")
    print(f"    2 / 1     : {ratio:.2f}x  (goal >= 1.7x: {'PASS' if ratio >= 1.7 else 'MISS'})")
    for replicas in (1, 2):
        share = cpu[replicas]
        print(
            f"    CPU per frame with {replicas}: replicas {share['replicas']:.2f} s, serving stack "
            f"{share['serving']:.2f} s, this client {share['client']:.2f} s (2 cores for all of it)"
        )
    print(f"  request overhead, 64x64 x 2 steps end to end (median of {args.runs}):")
    print(f"    plain worker : {1000 * plain_job:7.1f} ms   (/v1/health {1000 * plain_health:.1f} ms)")
    print(f"    Ray path     : {1000 * ray_job:7.1f} ms   (/v1/health {1000 * ray_health:.1f} ms)")
    print(f"    Ray - plain  : {1000 * extra:+7.1f} ms, ratio {ray_job / plain_job:.2f}")
    print(f"  batching (--max-batch-size 4), 1 replica, {SIZE}x{SIZE} x {STEPS} steps, 4 in flight:")
    print(
        f"    {batched_fpm:6.1f} frames/min against {fpm[1]:.1f} one at a time: {batched_fpm / fpm[1]:.2f}x; "
        f"frames per engine call: mean {statistics.mean(sizes):.1f}, largest {max(sizes)}"
    )
    print("  the engine's run_batch of 4 frames against 4 runs (128x128 x 4 steps, 1 thread, this process):")
    print(
        f"    4 runs {batch['alone']:.2f} s, one batch {batch['batch']:.2f} s ({batch['batch'] / batch['alone']:.2f}x);"
    )
    print(f"    largest difference to the single calls {batch['max_diff']:.1e} (bit-equal: {batch['equal']})")

    print("\non paper: frames per hour and cost per frame (GPU time per frame from the README, plus the")
    print(
        f"Ray path's measured per-frame overhead {1000 * max(extra, 0.0):.0f} ms; ${args.gpu_hour:.2f} per GPU-hour,"
    )
    print(f"${args.head_hour:.2f} per hour for the CPU head node that runs the ingress; one job per GPU)")
    print(f"  {'job':28s} {'GPUs':>5s} {'frames/hour':>12s} {'USD/frame':>10s} {'2,000-frame shot':>17s}")
    for job, seconds in GPU_FRAME_SECONDS.items():
        per_frame = seconds + max(extra, 0.0)
        for gpus in GPU_COUNTS:
            per_hour = gpus * 3600.0 / per_frame
            cost = (gpus * args.gpu_hour + args.head_hour) / per_hour
            shot = 2000 / per_hour * 60
            print(f"  {job:28s} {gpus:5d} {per_hour:12,.0f} {cost:10.5f} {shot:14.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
