# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine side of the worker on Ray Serve: one replica of the engine deployment, and model ids.

    ingress (RayExecutor) --handle.options(stream=True, multiplexed_model_id=M).run.remote(job, request)-->
    EngineReplica.run: warm engine for M (Serve's per-replica LRU) --> engine.run on a thread
        yields {"event": "started"}, {"event": "progress"} per step, then {"event": "result"} or
        {"event": "failed"}; a cancelled call sets the engine's abort event and waits for it to stop
    with --max-batch-size > 1: the jobs of M that arrive together (@serve.batch) --> one engine.run_batch,
        each job still streaming its own events and cancellable on its own

A *model id* names what a replica keeps warm for a request: the engine and the references that pick its
pipeline (`PIPELINE_FIELDS`: for diffusion the base model and its config). ControlNets, LoRAs, the VAE and
an IP-Adapter are not in it: the engine's own cache swaps them on top of a warm base in well under a second,
where a model id per combination would load another copy of the multi-GB base for each.

Each model id gets an engine instance of its own (`WarmEngine`), so two bases never evict each other inside
one engine's single-base cache; Serve's `@serve.multiplexed` keeps at most `max_models` of them per replica
and calls `WarmEngine.__del__` on the least recently used one, which releases its models.

Ray is imported inside functions only: this module imports (for the core's import checks) where Ray is not
installed.
"""

import asyncio
import gc
import hashlib
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..engine_api import (
    Aborted,
    BatchItem,
    Engine,
    EngineUnavailable,
    StyleRequest,
    check_abort,
    get_engine,
)
from ..settings import EngineSettings
from .model_paths import MODEL_DIRS_ENV

log = logging.getLogger("stylepass.worker.ray")

PIPELINE_FIELDS: dict[str, tuple[str, ...]] = {"DIFFUSION": ("model", "model_config")}
"""Per engine, the settings fields whose model references pick the warm pipeline (see the module docstring).
Engines not listed use all their top-level model references (nested ones, in lists, are swapped by the
engine)."""

CANCEL_WAIT = 30.0  # seconds a cancelled call waits for its engine to stop at the next step
# Seconds between a job's progress events: each one is an answer to the client's long poll through Serve's
# proxy (CPU on the cluster's head for every frame in flight); two a second keep a progress bar moving.
PROGRESS_INTERVAL = 0.5


def model_id_for(engine_id: str, settings: EngineSettings) -> str:
    """The stable model id of a request: `"<ENGINE>:<name>:<digest>"`, e.g. `"DIFFUSION:sd15:3f9a0c1d2e4b5a69"`.

    The digest covers the engine id and the pipeline's references (after the worker resolved them to real
    paths), so the same model gives the same id on every ingress and across restarts; the name (the base
    model's last path part) is only there for logs and metrics.

    Args:
        engine_id: The engine, e.g. `"DIFFUSION"`.
        settings: The request's settings.
    """
    references = settings.model_references()
    wanted = PIPELINE_FIELDS.get(engine_id)
    if wanted is None:
        picked = {name: value for name, value in references.items() if "." not in name}
    else:
        picked = {name: references[name] for name in wanted if references.get(name)}
    digest = hashlib.sha256(json.dumps([engine_id, sorted(picked.items())]).encode("utf-8")).hexdigest()
    first = next(iter(picked.values()), "")
    name = PurePath(first.replace("\\", "/")).name[:40] if first else "default"
    return f"{engine_id}:{name}:{digest[:16]}"


def engine_of(model_id: str) -> str:
    """The engine id a model id starts with.

    Raises:
        ValueError: not a model id made by `model_id_for`.
    """
    engine_id, sep, rest = model_id.partition(":")
    if not sep or not engine_id or not rest:
        raise ValueError(f"not a Stylepass model id: {model_id!r} (expected '<ENGINE>:<name>:<digest>')")
    return engine_id


class WarmEngine:
    """An engine instance that serves one model id on a replica; Serve's LRU drops it with `__del__`.

    Args:
        model_id: What it serves.
        engine: A fresh instance of the engine's class (not the process-wide `get_engine` one).
        on_release: Called with the model id once its models are released.
    """

    def __init__(self, model_id: str, engine: Engine, on_release: Any = None) -> None:
        self.model_id = model_id
        self.engine = engine
        self._on_release = on_release
        self._released = False

    def release(self) -> None:
        """Free the engine's models (it waits for a run in progress); the next run loads them again."""
        self.engine.release()
        gc.collect()

    def __del__(self) -> None:
        # Serve's multiplexer calls this on eviction (then replaces it on the instance); the interpreter
        # may call it again at exit. Release once.
        if self._released:
            return
        self._released = True
        self.release()
        if self._on_release is not None:
            self._on_release(self.model_id)


class EngineReplica:
    """One replica of the engine deployment: warm engines per model id, one run at a time per slot.

    Deployed by `serve.build_application` with `num_gpus`/`num_cpus` per replica and `max_ongoing_requests` =
    `concurrency`, so Serve sends a job only to a replica that can start it. The control calls (`stats`,
    `release`, through Serve's `broadcast`) count against that limit too: they answer once a running job has
    ended, so the ingress keeps its own view of the replicas from the jobs' events (`RayExecutor.describe`).

    Args:
        model_dirs: The worker's model folders (engines read them from `$STYLEPASS_MODEL_DIRS`).
        max_models: Model ids kept warm on this replica (`@serve.multiplexed`'s LRU size).
        concurrency: Jobs this replica runs at once (the deployment's `max_ongoing_requests`).
        engine_modules: Modules to import so that they register extra engines.
        torch_threads: Threads torch may use in this replica (None: as Ray set `OMP_NUM_THREADS`).
        log_level: Level of Stylepass's own log lines here.
        max_batch_size: Jobs of one model id run as one `Engine.run_batch` call; 1: each job alone.
        batch_wait: Seconds to wait for a batch to fill once its first job arrived.
    """

    def __init__(
        self,
        model_dirs: Sequence[str] = (),
        max_models: int = 2,
        concurrency: int = 1,
        engine_modules: Sequence[str] = (),
        torch_threads: int | None = None,
        log_level: str = "INFO",
        max_batch_size: int = 1,
        batch_wait: float = 0.05,
    ) -> None:
        from ray import serve

        # 1. The process: logging, model folders, thread budget, extra engines
        configure_logging(log_level)
        os.environ[MODEL_DIRS_ENV] = os.pathsep.join(str(d) for d in model_dirs)
        if torch_threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(torch_threads)  # read by torch when an engine imports it
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(torch_threads)
        for name in engine_modules:
            importlib.import_module(name)

        # 2. Who this replica is (for records and the ingress's view of the cluster)
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id
        try:
            import ray

            self.node_id = ray.get_runtime_context().get_node_id()
        except Exception:  # outside a Ray worker (tests of this class): no node
            self.node_id = ""
        self.max_models = max_models
        self._engine_threads = ThreadPoolExecutor(concurrency, thread_name_prefix="stylepass-engine")
        self._lock = threading.Lock()
        self._warm: dict[str, WarmEngine] = {}  # what the multiplexer holds, for stats and release
        self.loads: Counter = Counter()  # model id -> times this replica made a warm engine for it
        self.evictions: Counter = Counter()  # model id -> times the LRU dropped it
        self.jobs = Counter()  # outcome -> count
        self.running: dict[str, str] = {}  # job id -> model id
        self.max_batch_size = max_batch_size
        self.batch_sizes: Counter = Counter()  # jobs in one engine call -> times
        # Wired at init (Ray 2.60 detects a multiplexed loader stored on the instance), so that the LRU
        # size comes from the deployment's arguments.
        self._warm_engine = serve.multiplexed(max_num_models_per_replica=max_models)(self._make_loader())
        # Serve's batching splits a batch by model id; the engine's `batch_key` splits it further (and runs
        # alone what cannot share a call). Wired here too, for its size to come from the arguments.
        self._batched = None
        if max_batch_size > 1:
            self._batched = serve.batch(
                max_batch_size=max_batch_size,
                batch_wait_timeout_s=batch_wait,
                max_concurrent_batches=concurrency,
            )(self._make_batch_handler())

    def _make_loader(self) -> Any:
        async def load_warm_engine(model_id: str) -> WarmEngine:
            engine_id = engine_of(model_id)
            # get_engine checks the engine is available here; the instance for this model is a fresh one.
            engine_class = type(get_engine(engine_id))
            warm = WarmEngine(model_id, engine_class(), on_release=self._evicted)
            with self._lock:
                self._warm[model_id] = warm
                self.loads[model_id] += 1
            log.info("replica %s: warm engine for %s", self.replica_id, model_id)
            return warm

        return load_warm_engine

    def _make_batch_handler(self) -> Any:
        async def run_batch(jobs: list[_BatchedJob]) -> list[None]:
            # Each job's outcome goes out as its own event (`_run_jobs`); the futures only say "done".
            await asyncio.get_running_loop().run_in_executor(self._engine_threads, self._run_jobs, jobs)
            return [None] * len(jobs)

        return run_batch

    def _run_jobs(self, jobs: list["_BatchedJob"]) -> None:
        """One engine call for the jobs of one batch (all of one model id, Serve saw to that)."""
        items: list[tuple[_BatchedJob, BatchItem]] = []
        for job in jobs:
            job.started.set()
            try:
                request = StyleRequest.from_parts(job.header, job.arrays)
            except Exception as exc:  # this job's upload is bad; its batch-mates run
                job.post({"event": "failed", "error": error_of(exc)})
                continue
            items.append((job, BatchItem(request, _StreamProgress(job.post, job.abort), job.abort)))
        if not items:
            return
        with self._lock:
            self.batch_sizes[len(items)] += 1
        try:
            outcomes = jobs[0].warm.engine.run_batch([item for _, item in items])
        except BaseException as exc:  # the engine failed as a whole: every job's failure
            outcomes = [exc] * len(items)
        for (job, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Aborted | ValueError | EngineUnavailable):
                    log.error("job %s (%s) failed on replica %s: %r", job.job_id, job.model_id,
                              self.replica_id, outcome)  # fmt: skip
                job.post({"event": "failed", "error": error_of(outcome)})
                continue
            try:
                result_header, result_arrays = outcome.to_parts()
            except Exception as exc:
                job.post({"event": "failed", "error": error_of(exc)})
                continue
            job.post({"event": "result", "header": result_header, "arrays": result_arrays})

    def _evicted(self, model_id: str) -> None:
        with self._lock:
            self._warm.pop(model_id, None)
            self.evictions[model_id] += 1
        log.info("replica %s: released %s (least recently used)", self.replica_id, model_id)

    # -- the job path -------------------------------------------------------------------------------------

    async def run(
        self, job_id: str, engine_id: str, header: dict[str, Any], arrays: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one job (a streaming call); the model id comes with the call (`multiplexed_model_id`).

        Yields:
            `{"event": "started", "replica": {...}}`, then `{"event": "progress", "done", "total",
            "message"}` per engine step, then `{"event": "result", "header", "arrays", "replica"}` (the
            result's `to_parts`) or `{"event": "failed", "error": {"kind", "type", "message"[, "reason"]}}`.
        """
        from ray import serve

        model_id = serve.get_multiplexed_model_id()
        started = time.perf_counter()
        try:
            if engine_of(model_id) != engine_id:
                raise ValueError(f"model id {model_id!r} is not one of engine {engine_id!r}")
            warm = await self._warm_engine(model_id)
        except Exception as exc:  # the engine is unknown or unavailable here
            self.jobs["failed"] += 1
            yield {"event": "failed", "error": error_of(exc), "replica": self.describe()}
            return
        with self._lock:
            self.running[job_id] = model_id
        yield {"event": "started", "replica": self.describe(), "seconds": time.perf_counter() - started}

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        abort = threading.Event()

        def post(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def work() -> None:
            try:
                request = StyleRequest.from_parts(header, arrays)
                check_abort(abort)
                result = warm.engine.run(request, _StreamProgress(post, abort), abort)
                result_header, result_arrays = result.to_parts()
                post({"event": "result", "header": result_header, "arrays": result_arrays})
            except BaseException as exc:  # every failure is the job's, reported as the board would
                if not isinstance(exc, Aborted | ValueError | EngineUnavailable):
                    log.exception("job %s (%s) failed on replica %s", job_id, model_id, self.replica_id)
                post({"event": "failed", "error": error_of(exc)})

        batched: _BatchedJob | None = None
        if self._batched is not None:
            batched = _BatchedJob(job_id, model_id, warm, header, arrays, post, abort)
            running = asyncio.ensure_future(self._batched(batched))

            def settled(future: asyncio.Future) -> None:
                # The batch machinery itself failed (not the engine: `_run_jobs` reports those): say so, or
                # this job's stream would wait for an event that never comes.
                if not future.cancelled() and future.exception() is not None:
                    post({"event": "failed", "error": error_of(future.exception())})

            running.add_done_callback(settled)
        else:
            running = loop.run_in_executor(self._engine_threads, work)
        outcome = "failed"
        getter: asyncio.Future | None = None
        held: dict[str, Any] | None = None  # the latest progress not sent yet
        sent = -PROGRESS_INTERVAL
        try:
            while True:
                # At most one progress event per PROGRESS_INTERVAL, the latest state winning: a fast GPU's
                # steps would otherwise be a stream of events, status changes and client polls per job.
                getter = getter or asyncio.ensure_future(events.get())
                wait = None if held is None else max(0.0, sent + PROGRESS_INTERVAL - loop.time())
                done, _ = await asyncio.wait({getter}, timeout=wait)
                if not done:
                    event, held = held, None
                else:
                    event, getter = getter.result(), None
                    if event["event"] == "progress" and (
                        held is not None or loop.time() - sent < PROGRESS_INTERVAL
                    ):
                        held = event
                        continue
                if event["event"] == "progress":
                    sent = loop.time()
                    yield event
                    continue
                if event["event"] == "result":
                    outcome = "done"
                    if held is not None:  # the last step reported before the result, not dropped
                        yield held
                elif event["error"]["kind"] == "cancelled":
                    outcome = "cancelled"
                event["replica"] = self.describe()
                yield event
                return
        except asyncio.CancelledError:
            # The ingress cancelled the call (the client cancelled the job): stop the engine at its next
            # step, and keep this replica busy until it has, so the next job does not share the device.
            outcome = "cancelled"
            abort.set()
            if batched is not None and not batched.started.is_set():
                running.cancel()  # still waiting for its batch: Serve leaves a cancelled job out of it
            try:
                await asyncio.wait_for(asyncio.shield(running), CANCEL_WAIT)
            except (TimeoutError, asyncio.CancelledError):
                log.warning(
                    "job %s: the engine did not stop within %.0f s of the cancel", job_id, CANCEL_WAIT
                )
            raise
        finally:
            abort.set()
            if getter is not None:
                getter.cancel()
            with self._lock:
                self.running.pop(job_id, None)
                self.jobs[outcome] += 1

    # -- control ----------------------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """This replica's facts now (see `describe`)."""
        return self.describe()

    async def release(self) -> list[str]:
        """Free the models of every warm engine (each waits for its own run); returns their engine ids.

        The engines stay in Serve's LRU, empty: a request for one of their models loads it again here.
        """
        with self._lock:
            warm = list(self._warm.values())
        await asyncio.get_running_loop().run_in_executor(None, _release_all, warm)
        return sorted({engine_of(w.model_id) for w in warm})

    def describe(self) -> dict[str, Any]:
        """`{"replica", "pid", "node", "max_models", "models" (warm model ids), "loads", "evictions", "jobs"
        (by outcome), "running" (job id -> model id), "max_batch_size", "batch_sizes" (jobs in one engine call ->
        times), "load_counts" (each warm engine's own load counters) and
        "loaded" (what each warm engine has in memory)}`."""
        with self._lock:
            warm = dict(self._warm)
            facts = {
                "replica": self.replica_id,
                "pid": os.getpid(),
                "node": self.node_id,
                "max_models": self.max_models,
                "models": sorted(warm),
                "loads": dict(self.loads),
                "evictions": dict(self.evictions),
                "jobs": dict(self.jobs),
                "running": dict(self.running),
                "max_batch_size": self.max_batch_size,
                "batch_sizes": dict(self.batch_sizes),
            }
        facts["load_counts"] = {
            model_id: dict(getattr(w.engine, "load_counts", {}) or {}) for model_id, w in warm.items()
        }
        facts["loaded"] = {model_id: _loaded_models(w.engine) for model_id, w in warm.items()}
        return facts


@dataclass(eq=False)
class _BatchedJob:
    """A job waiting for (or in) its batch: what `_run_jobs` needs, and how to report to its stream."""

    job_id: str
    model_id: str
    warm: WarmEngine
    header: dict[str, Any]
    arrays: dict[str, Any]
    post: Any
    abort: threading.Event
    started: threading.Event = field(default_factory=threading.Event)


class _StreamProgress:
    """The `Progress` an engine on a replica reports to: each update becomes a `progress` event."""

    def __init__(self, post: Any, abort: threading.Event) -> None:
        self._post = post
        self._abort = abort

    def update(self, done: int, total: int, message: str = "") -> None:
        self._post(
            {"event": "progress", "done": int(done), "total": int(total), "message": str(message)[:500]}
        )
        check_abort(self._abort)


def _loaded_models(engine: Engine) -> list[str] | None:
    """What the engine has in memory (its optional `loaded_models` hook), or None when it does not say."""
    describe = getattr(engine, "loaded_models", None)
    return list(describe()) if callable(describe) else None


def _release_all(warm: list[WarmEngine]) -> None:
    for engine in warm:
        engine.release()
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def configure_logging(level: str) -> None:
    """Stylepass's log lines on a Ray worker (whose root logger Ray leaves unconfigured) go to stderr, which
    Ray keeps in the replica's log file."""
    logger = logging.getLogger("stylepass")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
        logger.addHandler(handler)


def error_of(exc: BaseException) -> dict[str, str]:
    """A job error as the worker reports it (`kind`, `type`, `message`, and `reason` when unavailable);
    kind `cancelled` for `Aborted`."""
    if isinstance(exc, Aborted):
        return {"kind": "cancelled", "type": "Aborted", "message": str(exc) or "stylisation aborted"}
    if isinstance(exc, EngineUnavailable):
        return {
            "kind": "engine_unavailable",
            "type": type(exc).__name__,
            "message": str(exc),
            "reason": exc.reason,
            "engine": exc.engine_id,
        }
    if isinstance(exc, ValueError):
        return {"kind": "invalid_request", "type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MemoryError):
        return {"kind": "out_of_memory", "type": "MemoryError", "message": "the replica ran out of memory"}
    return {"kind": "error", "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"}
