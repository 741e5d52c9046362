# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI engine's own cost per request against a real ComfyUI on loopback (CPU, real-size SD 1.5 with
random weights; `tools/comfyui_server.py`).

1. 512x512 passes, the built workflow (depth ControlNet, image to image from the beauty, a LoRA, one step):
   the engine's whole time split into the server's own execution (its "started" to "done" on the websocket)
   and Stylepass's overhead (encoding and uploading the passes, queueing, following, fetching and decoding the
   picture, resizing).
   The server's wait before it answers `/view` (its housekeeping after a run: on this CPU server a garbage
   collection of the model memory can hold it for a tenth of a second) counts as the server's time.
2. 1920x1080 passes: the same overhead where generating would take minutes on this CPU: three 1080p passes
   uploaded (fresh content each round), queued through a workflow that only loads the beauty and previews it,
   followed, and the 1080p picture fetched back. That is every byte a 1080p request moves, with almost no
   server work.
3. Upload bytes over a 24-frame animation at 512x512: a first run, a run of the same frames again (another
   prompt), and a shot whose camera holds still for 8 frames.

The overhead is set against the server's execution here and against a GPU's time for the same job on paper
(README). Run: `PYTHONPATH=tools <4.5 venv>/bin/python bench/bench_comfyui.py` (as `./run bench` does).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import comfyui_server  # noqa: E402

from stylepass_core.engine_api import StyleRequest  # noqa: E402
from stylepass_core.engines.comfyui import ComfyClient, ComfyUIEngine, ComfyUISettings  # noqa: E402
from stylepass_core.engines.diffusion.settings import ControlUnit, Lora  # noqa: E402

ROUNDS = 3
# A GPU's time for the same jobs, on paper (README, "ComfyUI"): SD 1.5 at 512x512 with 20 steps on an
# RTX 4090 is about a second; SDXL at 1920x1080 (upscaled from 1024-class latents) about 8 s.
GPU_SECONDS = {"512x512": 1.0, "1920x1080": 8.0}


def _passes(height: int, width: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rows, cols = rows / (height - 1), cols / (width - 1)
    beauty = np.stack([rows, cols, rng.random((height, width), dtype=np.float32)], axis=-1)
    depth = 1.0 - rows * (0.6 + 0.4 * cols)
    lineart = (np.abs(np.sin(20 * rows + seed) * np.cos(15 * cols)) > 0.97).astype(np.float32)
    return {"beauty": beauty.astype(np.float32), "depth": depth.astype(np.float32), "lineart": lineart}


def at_512(server) -> dict:
    models = server.models
    settings = ComfyUISettings(
        comfyui_server=server.url,
        checkpoint=models.checkpoint,
        prompt="a stone hut",
        steps=2,
        denoise=0.5,  # one step of image to image
        controls=(ControlUnit(map="depth", model=models.controlnet_depth),),
        loras=(Lora(file=models.lora, weight=0.8),),
    )
    engine = ComfyUIEngine()

    def run(seed: int):
        passes = _passes(512, 512, seed)
        request = StyleRequest(passes["beauty"], settings, {"depth": passes["depth"]}, seed=seed)
        started = time.perf_counter()
        result = engine.run(request)
        return time.perf_counter() - started, result.info["timings"]

    run(100)  # loads the checkpoint, the LoRA and the ControlNet on the server
    rows = []
    for round_ in range(ROUNDS):
        total, timings = run(200 + round_)  # fresh passes: every round uploads
        server = timings["server_execution"] + timings["server_queue"] + timings["server_view"]
        rows.append((total, timings["server_execution"], total - server, timings))
    return _summary("512x512", rows)


def at_1080(server) -> dict:
    client = ComfyClient(server.url)
    rows = []
    for round_ in range(ROUNDS + 1):
        passes = _passes(1080, 1920, 300 + round_)
        started = time.perf_counter()
        names = {name: client.upload_image(picture) for name, picture in passes.items()}
        uploaded = time.perf_counter()
        graph = {
            "beauty": {"class_type": "LoadImage", "inputs": {"image": names["beauty"]}},
            "out": {"class_type": "PreviewImage", "inputs": {"images": ["beauty", 0]}},
        }
        prompt_id = client.queue(graph)
        queued = time.monotonic()
        times = client.follow(prompt_id)
        fetch_started = time.perf_counter()
        timings = {}
        image = client.image(prompt_id, timings=timings)
        ended = time.perf_counter()
        assert image.shape == (1080, 1920, 3)
        execution = times["finished"] - times.get("started", queued)
        total = ended - started
        timings.update(upload=uploaded - started, fetch=ended - fetch_started)
        if round_:  # the first round warms the connection and the server's image nodes
            rows.append((total, execution, total - execution - timings["server_view"], timings))
    return _summary("1920x1080", rows)


def _summary(size: str, rows: list) -> dict:
    median = {
        key: statistics.median(row[index] for row in rows)
        for index, key in enumerate(("total", "server", "overhead"))
    }
    parts = {
        key: statistics.median(row[3][key] for row in rows)
        for key in ("upload", "fetch", "server_view")
        if key in rows[0][3]
    }
    return {"size": size, **median, **parts}


def dedup(server) -> dict:
    client = ComfyClient(server.url, compress_level=1)  # the bytes a server on another machine is sent
    shot = [_passes(512, 512, 400 + frame) for frame in range(24)]
    held = [_passes(512, 512, 500 + min(frame, 15)) for frame in range(24)]  # frames 16-24 hold frame 16

    def upload(frames) -> tuple[int, int]:
        sent, spared = client.sent_bytes, client.spared_bytes
        for passes in frames:
            for picture in passes.values():
                client.upload_image(picture)
        return client.sent_bytes - sent, client.spared_bytes - spared

    first = upload(shot)
    again = upload(shot)
    hold = upload(held)
    return {"first": first, "again": again, "hold": hold}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stylepass-bench-comfyui-") as home:
        with comfyui_server.running(Path(home)) as server:
            print(f"ComfyUI on {server.url}: started in {server.timings['server start']:.1f} s")
            results = [at_512(server), at_1080(server)]
            print("\nPer request (median of 3; seconds, overhead also in ms):")
            print(
                "| passes | total | server execution | Stylepass overhead | upload | fetch | of which the server "
                "before answering /view | overhead / server here | overhead / GPU job on paper |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for row in results:
                print(
                    f"| {row['size']} | {row['total']:.2f} | {row['server']:.2f} | {row['overhead'] * 1000:.0f} ms "
                    f"| {row.get('upload', 0) * 1000:.0f} ms | {row.get('fetch', 0) * 1000:.0f} ms "
                    f"| {row.get('server_view', 0) * 1000:.0f} ms "
                    f"| {row['overhead'] / max(row['server'], 1e-9):.1%} "
                    f"| {row['overhead'] / GPU_SECONDS[row['size']]:.1%} (GPU {GPU_SECONDS[row['size']]:.0f} s) |"
                )
            found = dedup(server)
            print("\nUpload bytes over 24 frames at 512x512 (beauty, depth, line art):")
            for name, label in (
                ("first", "first run"),
                ("again", "the same frames again (another prompt, a resume)"),
                ("hold", "a shot whose last 8 frames hold still"),
            ):
                sent, spared = found[name]
                share = spared / max(sent + spared, 1)
                print(f"  {label}: sent {sent / 1e6:.1f} MB, spared {spared / 1e6:.1f} MB ({share:.0%})")


if __name__ == "__main__":
    main()
