# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: what the engine worker costs on top of the engine itself.

Run with a venv's Python (no Blender needed), the repo root on PYTHONPATH for `stylepass_core` (`./run bench`
does that):  PYTHONPATH=. <venv>/bin/python bench/bench_worker.py [--repeats N]

- Round-trip overhead = submit-to-result time in the client minus the engine time the worker measured
  (`timings.run`), with a no-op engine, at 512x512 and 1920x1080, sending what the add-on sends: beauty +
  depth + normal + lineart + segmentation. Compared with a real-size SD1.5 UNet step on this CPU (3.8 s,
  FACTS.md) and a 20-step job; target: under 2 %.
- 1080p transfer = moving that set of maps in (encode + upload + decode) and the result out (encode +
  download + decode); target: under 50 ms on loopback. Shown for freshly computed maps (continuous values:
  unorm16) and maps re-read from the pass PNGs (8/16-bit values: sent bit-exact as unorm8/unorm16), in both
  wire precisions.
  Also the beauty alone: all that the neural-style engine reads.
- The neural-style engine through the worker versus in this process, for a real engine's view.
- The worker's peak resident memory.

Imported by the worker (`--engine-module bench_worker`), this file only registers the no-op engine.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylepass_core.engine_api import Engine, StyleRequest, StyleResult, register_engine
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.settings import EngineSettings

BENCH = Path(__file__).resolve().parent

SD15_STEP_SECONDS = 3.8  # FACTS.md: real-size SD1.5 UNet step, fp32, 2 threads, 512x512
SD15_JOB_SECONDS = 20 * SD15_STEP_SECONDS + 11.0  # 20 steps + KL VAE decode (FACTS.md)


@dataclass(frozen=True)
class NoOpSettings(EngineSettings):
    """The no-op engine has nothing to set."""

    ENGINE = "BENCH_NOOP"
    LABEL = "No-op"
    DESCRIPTION = "Benchmark engine: returns the beauty"
    PROPERTY = "bench_noop"


@register_engine
class NoOpEngine(Engine):
    """Returns the beauty as the result: the worker's own costs are all that is measured."""

    id = NoOpSettings.ENGINE
    label = "No-op (benchmark)"
    settings_type = NoOpSettings

    def available(self):
        return True, ""

    def run(self, request, progress=None, abort=None):
        if progress is not None:
            progress.update(1, 1, "Done")
        return StyleResult(image=request.beauty, info={"engine": self.id})


def control_set(height: int, width: int, from_png: bool, seed: int = 0) -> StyleRequest:
    """The maps the add-on sends. `from_png`: values quantised as the pass PNGs store them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    smooth = (np.sin(x / 37.0) * np.cos(y / 23.0) * 0.5 + 0.5).astype(np.float32)
    beauty = np.clip(
        smooth[..., None] * rng.random((1, 1, 3), dtype=np.float32)
        + 0.05 * rng.random((height, width, 3), dtype=np.float32),
        0,
        1,
    )
    depth = np.clip(smooth * 0.9 + 0.05, 0, 1)
    normal = np.stack([smooth, 1 - smooth, np.full_like(smooth, 0.9)], axis=-1)
    lineart = np.where(np.abs(np.sin(x / 11.0)) < 0.05, 1.0, 0.0).astype(np.float32)
    labels = (x // 200 + y // 150).astype(np.int64) % 7
    segmentation = (rng.integers(0, 256, (7, 3)).astype(np.float32) / np.float32(255))[labels]
    maps = {"depth": depth, "normal": normal, "lineart": lineart, "segmentation": segmentation}
    if from_png:
        quant = lambda a, top: np.rint(a * top).astype(np.float32) / np.float32(top)  # noqa: E731
        beauty = quant(beauty, 255)
        maps = {name: quant(a, 65535 if name == "depth" else 255) for name, a in maps.items()}
    return StyleRequest(
        beauty=beauty.astype(np.float32),
        settings=NoOpSettings(),
        controls={k: v.astype(np.float32) for k, v in maps.items()},
    )


def measure_round_trip(client, request: StyleRequest, repeats: int) -> dict[str, list[float]]:
    from stylepass_core.worker import protocol

    samples: dict[str, list[float]] = {
        k: [] for k in ("total", "engine", "overhead", "encode", "submit", "wait", "result")
    }
    client.run("BENCH_NOOP", request)  # warm: connection, engine instance
    for _ in range(repeats):
        t0 = time.perf_counter()
        protocol.encode_submit("BENCH_NOOP", request, client.precision)  # encode alone, for the breakdown
        t1 = time.perf_counter()
        job_id = client.submit("BENCH_NOOP", request)  # encodes again + upload + worker decode
        t2 = time.perf_counter()
        status = client.wait(job_id, poll_interval=0.25)
        t3 = time.perf_counter()
        client.result(job_id)
        t4 = time.perf_counter()
        engine = status.timings["run"]
        samples["encode"].append(t1 - t0)
        samples["submit"].append(t2 - t1)
        samples["wait"].append(t3 - t2)
        samples["result"].append(t4 - t3)
        samples["total"].append(t4 - t1)
        samples["engine"].append(engine)
        samples["overhead"].append(t4 - t1 - engine)
    return samples


def ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):7.1f} ms (best {1000 * min(values):6.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from stylepass_core.worker.client import WorkerClient
    from stylepass_core.worker.manager import LocalWorker

    log_path = Path(tempfile.mkdtemp(prefix="stylepass-bench-")) / "worker.log"
    worker = LocalWorker(
        sys.executable, pythonpath=[BENCH], engine_modules=["bench_worker"], log_path=log_path
    )
    print(
        f"Python {sys.version.split()[0]}, numpy {np.__version__}: worker round trips on 127.0.0.1, median of {args.repeats}"
    )
    try:
        started = time.perf_counter()
        client = worker.ensure_running()
        print(
            f"worker start to healthy: {1000 * (time.perf_counter() - started):.0f} ms; "
            f"RSS after start {client.health()['memory']['rss_bytes'] / 2**20:.0f} MiB"
        )
        token = client._session.auth._header.split(" ", 1)[1]
        auto = WorkerClient(client.base_url, token, precision="auto")

        # 1. Round-trip overhead with a no-op engine
        print(
            f"\n1. Round-trip overhead (no-op engine; beauty + depth + normal + lineart + segmentation; "
            f"{client.precision} precision, the loopback default)"
        )
        overhead_512 = None
        for height, width in ((512, 512), (1080, 1920)):
            request = control_set(height, width, from_png=False)
            s = measure_round_trip(client, request, args.repeats)
            median = statistics.median(s["overhead"])
            overhead_512 = median if width == 512 else overhead_512
            print(
                f"   {width}x{height}: overhead {ms(s['overhead'])}  [encode {ms(s['encode'])}, submit {ms(s['submit'])}, "
                f"wait {ms(s['wait'])}, result {ms(s['result'])}]"
            )
        print(
            f"   512x512 overhead vs one SD1.5 CPU step ({SD15_STEP_SECONDS} s): {overhead_512 / SD15_STEP_SECONDS:.2%}; "
            f"vs a 20-step job (~{SD15_JOB_SECONDS:.0f} s): {overhead_512 / SD15_JOB_SECONDS:.3%}  (target < 2 %)"
        )

        # 2. 1080p transfer: maps in, result out (no engine, no polling)
        print(
            "\n2. 1080p transfer: maps in (encode + upload + decode) + result out (encode + download + decode)"
        )
        for label, from_png in (("fresh maps", False), ("maps from PNG", True)):
            request = control_set(1080, 1920, from_png=from_png)
            for name, c in (("exact", client), ("auto", auto)):
                s = measure_round_trip(c, request, max(3, args.repeats // 2))
                transfer = [a + b for a, b in zip(s["submit"], s["result"], strict=True)]
                from stylepass_core.worker import protocol

                size = len(protocol.encode_submit("BENCH_NOOP", request, name)) / 2**20
                print(f"   {label:14s} {name:5s}: {ms(transfer)}  ({size:5.1f} MiB up)  (target < 50 ms)")

        request = StyleRequest(beauty=control_set(1080, 1920, from_png=False).beauty, settings=NoOpSettings())
        s = measure_round_trip(client, request, max(3, args.repeats // 2))
        transfer = [a + b for a, b in zip(s["submit"], s["result"], strict=True)]
        print(f"   beauty only (all neural style reads) exact: {ms(transfer)}")

        # 3. A real engine through the worker
        print("\n3. Neural style 512x512 (style_07): in this process vs through the worker")
        from stylepass_core.engine_api import get_engine

        request = StyleRequest(
            beauty=control_set(512, 512, False).beauty, settings=NeuralStyleSettings(style_preset="style_07")
        )
        engine = get_engine("NEURAL_STYLE")
        engine.run(request)
        local = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            engine.run(request)
            local.append(time.perf_counter() - t)
        client.run("NEURAL_STYLE", request)
        remote, remote_engine = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = client.run("NEURAL_STYLE", request)
            remote.append(time.perf_counter() - t)
            remote_engine.append(result.info["worker"]["timings"]["run"])
        over = [r - e for r, e in zip(remote, remote_engine, strict=True)]
        print(
            f"   in process {ms(local)}; through the worker {ms(remote)}; worker overhead {ms(over)} "
            f"({statistics.median(over) / statistics.median(remote_engine):.1%} of the engine's own time)"
        )

        # 4. Memory
        memory = client.health()["memory"]
        print(
            f"\n4. Worker peak RSS: {memory['peak_rss_bytes'] / 2**20:.0f} MiB (now {memory['rss_bytes'] / 2**20:.0f} MiB), "
            "after 1080p control sets and the neural-style model"
        )
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
