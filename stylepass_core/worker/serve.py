# SPDX-License-Identifier: GPL-3.0-or-later
"""`python -m stylepass_core.worker.serve`: the same worker application on Ray Serve, for many GPUs.

    client (WorkerClient, unchanged) --HTTP /v1--> Serve proxy --> StylepassIngress (1 replica, num_cpus=0)
        create_app(config, JobBoard(config, RayExecutor))           the plain worker's ASGI app and board
            runner threads (slots = replicas x jobs per replica x batch size) --DeploymentHandle, streaming-->
        EngineReplica x N (num_gpus=1 or num_cpus each): warm engines per model id (@serve.multiplexed LRU),
            optionally frames of one model batched into one engine call (@serve.batch, `--max-batch-size`)

The ingress serves the very application the plain worker serves (`app.create_app`: token, limits, model
folder confinement, long polls, events, cancel, results handed out once); only the board's executor differs:
`ray_executor.RayExecutor` sends each job to the engine deployment with its model id, so Serve routes it to
a replica that has that model warm (spilling over to another when those are busy), streams the engine's
progress back into the board, cancels the Ray call when the client cancels the job, and runs a job whose
replica died once more on another one.

    python -m stylepass_core.worker.serve --replicas 2 --num-cpus-per-replica 1 --model-dir ~/models
    python -m stylepass_core.worker.serve --address auto --replicas 8 --num-gpus-per-replica 1 \\
        --host 0.0.0.0 --port 8765 --model-dir /shared/models

The token comes from `--token`, else `$STYLEPASS_WORKER_TOKEN` (then removed from this process's
environment), else a random one. Once the application is up it prints the plain worker's JSON ready line on
stdout (`{"event": "listening", "url", "port", "pid", "protocol", "version", "instance", ...}` plus `"ray"`,
and `"token"` only when generated). SIGTERM or SIGINT (or `POST /v1/shutdown`) drains the board (new jobs
refused, queued ones cancelled, a followed running job finished), deletes the application, and stops the
Ray instance this process started (on `--address`, the cluster and its Serve instance stay).

For `serve run`, `serve deploy` or a KubeRay `RayService`, `app_builder` builds the same application from a
config's `args` (the token from `$STYLEPASS_WORKER_TOKEN` in the cluster's environment).

Ray is imported inside functions only: the core's modules import where Ray is not installed.
"""

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import startup
from .board import JobBoard, WorkerConfig
from .protocol import TOKEN_ENV, Limits
from .ray_engines import EngineReplica, configure_logging
from .ray_executor import RayExecutor

log = logging.getLogger("stylepass.worker")

APP_NAME = "stylepass"
INGRESS_NAME = "StylepassIngress"
ENGINE_NAME = "StylepassEngine"
MODEL_AFFINITY_ENV = "RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S"
INGRESS_MAX_ONGOING = 256  # HTTP requests in the ingress at once (long polls hold one each up to 30 s)


@dataclass(frozen=True)
class ServeOptions:
    """How the application is laid out on the cluster.

    Attributes:
        replicas: Engine replicas (N jobs run at once, times `jobs_per_replica`).
        num_gpus_per_replica: GPUs each replica reserves (1 on a GPU cluster; 0 on CPUs).
        num_cpus_per_replica: CPUs each replica reserves.
        jobs_per_replica: Jobs (or batches) one replica runs at once (1 for one GPU: jobs would only share it).
        max_batch_size: Jobs of one model a replica gathers into one engine call (`@serve.batch`; the engine's
            `run_batch`: one denoising run for all of them). 1 (the default): no batching, and every frame
            equals a plain worker's bit for bit; more uses a GPU better, but batched kernels may change the
            last bits of a picture.
        batch_wait: Seconds a replica waits for more jobs of the same model once one arrived (batching only).
        max_models_per_replica: Model ids a replica keeps warm (`@serve.multiplexed` LRU size).
        torch_threads: Threads torch uses per replica; None: the CPUs it reserves (at least 1) on CPU
            replicas, torch's default on GPU ones.
        retries: Times a job whose replica died runs again on another replica.
        model_affinity: Seconds Serve tries only the replicas that have a job's model warm (and then those
            with the fewest models) before any replica may take it and load the model once: Serve's
            multiplexed matching timeout, for the ingress's handle. Its retry back-off (25 ms doubling to
            0.5 s) stretches the wait: 0.05 s lets an idle replica take a job after about 0.2 s; Serve's own
            default, 1 s, meant 1-2.5 s, so jobs shorter than that stayed on one replica while the other idled.
        engine_modules: Modules imported on the ingress and every replica to register extra engines.
        http_shutdown: Whether `POST /v1/shutdown` stops the application (the entry point watches for it);
            off for a deployment nobody watches (`app_builder`), where that route answers 501.
        log_level: Level of Stylepass's own log lines on the replicas.
    """

    replicas: int = 2
    num_gpus_per_replica: float = 0.0
    num_cpus_per_replica: float = 1.0
    jobs_per_replica: int = 1
    max_batch_size: int = 1
    batch_wait: float = 0.05
    max_models_per_replica: int = 2
    torch_threads: int | None = None
    retries: int = 1
    model_affinity: float = 0.05
    engine_modules: tuple[str, ...] = ()
    http_shutdown: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        checks = (
            ("replicas", self.replicas, 1, 10_000),
            ("jobs_per_replica", self.jobs_per_replica, 1, 64),
            ("max_batch_size", self.max_batch_size, 1, 64),
            ("max_models_per_replica", self.max_models_per_replica, 1, 64),
            ("retries", self.retries, 0, 10),
        )
        for name, value, low, high in checks:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
        for name in ("num_gpus_per_replica", "num_cpus_per_replica", "model_affinity", "batch_wait"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1024:
                raise ValueError(f"{name} must be a number in [0, 1024], got {value!r}")
        if self.torch_threads is not None and (
            not isinstance(self.torch_threads, int) or not 1 <= self.torch_threads <= 1024
        ):
            raise ValueError(f"torch_threads must be None or an int in [1, 1024], got {self.torch_threads!r}")

    @property
    def slots(self) -> int:
        """Jobs the whole deployment runs at once: the board's runner threads."""
        return self.replicas * self.requests_per_replica

    @property
    def requests_per_replica(self) -> int:
        """Jobs Serve may send one replica at once (its `max_ongoing_requests`): each batch's jobs."""
        return self.jobs_per_replica * self.max_batch_size

    def replica_threads(self) -> int | None:
        """Threads torch gets per replica (see `torch_threads`)."""
        if self.torch_threads is not None:
            return self.torch_threads
        if self.num_gpus_per_replica > 0:
            return None
        return max(1, int(self.num_cpus_per_replica))


# --------------------------------------------------------------------------------------------------------
# The ingress deployment


class StylepassIngress:
    """The ingress replica: the plain worker's ASGI app over a `JobBoard` whose executor is Ray's.

    Deployed with `@serve.ingress()` (late-bound: `__serve_build_asgi_app__` builds the app from the board
    made here); the methods below are for the entry point and tests, through the application's handle.

    Args:
        config: The worker's token, limits and model folders.
        engines: Handle of the engine deployment.
        options: Replicas, jobs per replica, retries, engine modules, HTTP shutdown.
    """

    def __init__(self, config: WorkerConfig, engines: Any, options: ServeOptions) -> None:
        configure_logging(options.log_level)
        for name in options.engine_modules:
            importlib.import_module(name)
        self.config = config
        self.options = options
        self.executor = RayExecutor(engines, options.slots, retries=options.retries)
        self.board = JobBoard(config, self.executor)
        self.board.start()
        self._stopped = threading.Event()  # set once a client's /v1/shutdown has drained the board
        log.info("ingress ready: %d slots on %d replicas", options.slots, options.replicas)

    def __serve_build_asgi_app__(self) -> Any:
        from .app import create_app

        on_shutdown = self._shutdown_requested if self.options.http_shutdown else None
        return create_app(self.config, self.board, on_shutdown=on_shutdown)

    def _shutdown_requested(self) -> None:
        # On the event loop, after the reply went out: drain on a thread, then tell the entry point.
        def drain() -> None:
            self.board.shut_down(self.config.shutdown_grace)
            self._stopped.set()

        threading.Thread(target=drain, name="stylepass-ray-drain", daemon=True).start()

    async def instance(self) -> str:
        """The board's instance id (the ready line's `instance`)."""
        return self.board.instance

    async def cluster(self) -> dict[str, Any]:
        """The executor's view of the replicas (`RayExecutor.describe`) and the board's job counts."""
        return {**self.executor.describe(), "jobs": self.board.counts()}

    async def replica_stats(self, timeout: float = 10.0) -> list[Any]:
        """Each engine replica's own facts (a broadcast; a replica running a job answers when it ends)."""
        return await asyncio.to_thread(self.executor.replica_stats, timeout)

    async def wait_for_shutdown(self, timeout: float) -> bool:
        """True once `POST /v1/shutdown` has drained the board; False after `timeout` s."""
        return await asyncio.to_thread(self._stopped.wait, timeout)

    async def drain(self, grace: float) -> None:
        """Graceful shutdown of the board (`JobBoard.shut_down`): the entry point calls it on SIGTERM."""
        await asyncio.to_thread(self.board.shut_down, grace)
        self._stopped.set()

    def __del__(self) -> None:
        board = getattr(self, "board", None)
        if board is not None:
            board.close()


def build_application(config: WorkerConfig, options: ServeOptions) -> Any:
    """The Serve application: the ingress bound to an engine deployment of `options.replicas` replicas.

    Raises:
        ValueError: an empty token.
    """
    from ray import serve

    if not config.token:
        raise ValueError("the worker needs a token; generate one with secrets.token_urlsafe(32)")
    env = {"OMP_NUM_THREADS": str(options.replica_threads())} if options.replica_threads() else {}
    engine_actor: dict[str, Any] = {
        "num_cpus": options.num_cpus_per_replica,
        "num_gpus": options.num_gpus_per_replica,
    }
    if env:
        engine_actor["runtime_env"] = {"env_vars": env}
    engines = serve.deployment(EngineReplica, name=ENGINE_NAME).options(
        num_replicas=options.replicas,
        ray_actor_options=engine_actor,
        # One job per slot, so Serve sends a job only to a replica that can start it now (and another
        # replica takes it, rather than a queue behind a long job); with batching, a batch's worth.
        max_ongoing_requests=options.requests_per_replica,
        graceful_shutdown_timeout_s=30,
    )
    # The handle's router runs in the ingress: it reads how long a job waits for a replica with its model.
    affinity = {MODEL_AFFINITY_ENV: f"{options.model_affinity:g}"}
    ingress = serve.deployment(serve.ingress()(StylepassIngress), name=INGRESS_NAME).options(
        num_replicas=1,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": affinity}},
        max_ongoing_requests=max(INGRESS_MAX_ONGOING, 2 * config.max_connections),
    )
    replica_args = (
        tuple(str(d) for d in config.model_dirs),
        options.max_models_per_replica,
        options.jobs_per_replica,
        options.engine_modules,
        options.replica_threads(),
        options.log_level,
        options.max_batch_size,
        options.batch_wait,
    )
    return ingress.bind(config, engines.bind(*replica_args), options)


def app_builder(args: dict[str, Any]) -> Any:
    """`serve run stylepass_core.worker.serve:app_builder replicas=2 ...`, or a Serve config's
    `import_path` with `args` (KubeRay `RayService`): the application from plain arguments.

    Keys (all optional): `replicas`, `num_gpus_per_replica`, `num_cpus_per_replica`, `jobs_per_replica`,
    `max_batch_size`, `batch_wait`,
    `max_models_per_replica`, `torch_threads`, `retries`, `model_affinity`, `engine_modules` and `model_dirs`
    (lists, or comma-separated strings on `serve run`'s command line), `max_upload_mb`, `max_queued`,
    `result_ttl`, `log_level`. The token is read from `$STYLEPASS_WORKER_TOKEN`
    where the application is built (the Serve controller's environment): set it from a secret.

    Raises:
        ValueError: no token, or a bad argument.
    """
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ValueError(
            f"set {TOKEN_ENV} in the cluster's environment (from a secret) to the worker's token"
        )
    known = {f.name for f in dataclasses.fields(ServeOptions)} - {"http_shutdown", "engine_modules"}
    worker_keys = {"model_dirs", "max_upload_mb", "max_queued", "result_ttl", "engine_modules"}
    unknown = sorted(set(args) - known - worker_keys)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; known: {sorted(known | worker_keys)}")
    numbers = {key: _number(key, value) for key, value in args.items() if key in known - {"log_level"}}
    options = ServeOptions(
        **numbers,
        engine_modules=_names(args.get("engine_modules", ())),
        log_level=str(args.get("log_level", "INFO")),
    )
    config = WorkerConfig(
        host="0.0.0.0",
        port=0,
        token=token,
        model_dirs=tuple(Path(d).expanduser().resolve() for d in _names(args.get("model_dirs", ()))),
        limits=Limits.for_upload(int(args.get("max_upload_mb", 1024)) << 20),
        max_queued_jobs=int(args.get("max_queued", 16)),
        result_ttl=float(args.get("result_ttl", 600.0)),
    )
    return build_application(config, options)


def _names(value: Any) -> tuple[str, ...]:
    """A list from a config's args, or a comma-separated string from `serve run ... model_dirs=a,b`."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)


def _number(key: str, value: Any) -> int | float | None:
    """A number from a config's args (YAML may give strings)."""
    if value is None or isinstance(value, int | float):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None


# --------------------------------------------------------------------------------------------------------
# Ray


def start_ray(address: str | None, num_cpus: int | None, ship_code: bool) -> None:
    """Connect to a cluster (`address`, e.g. "auto") or start a local Ray instance with `num_cpus`.

    Args:
        ship_code: Send this `stylepass_core` to every worker (`runtime_env` `py_modules`), so replicas run
            the ingress's code even where the core is not installed; the engines' own packages (torch,
            diffusers) must be installed on every node either way.
    """
    import ray

    runtime_env: dict[str, Any] = {}
    if ship_code:
        runtime_env["py_modules"] = [str(Path(__file__).resolve().parents[1])]
    kwargs: dict[str, Any] = {"runtime_env": runtime_env or None, "include_dashboard": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host if host not in ("0.0.0.0", "::") else "", 0))
        return int(probe.getsockname()[1])


def _shown_host(host: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
    return f"[{shown}]" if ":" in shown else shown


# --------------------------------------------------------------------------------------------------------
# The entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stylepass_core.worker.serve", description=__doc__.split("\n\n")[0]
    )
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument(
        "--address",
        help="Ray cluster to join ('auto': the one this node belongs to, after `ray start`); default: start "
        "a local Ray instance",
    )
    cluster.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    cluster.add_argument("--replicas", type=int, default=2, help="engine replicas (default 2)")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--num-gpus-per-replica", type=float, help="GPUs per replica (e.g. 1)")
    where.add_argument("--num-cpus-per-replica", type=float, help="CPUs per replica (default 1 without GPUs)")
    cluster.add_argument("--jobs-per-replica", type=int, default=1, help="jobs one replica runs at once")
    cluster.add_argument(
        "--max-batch-size",
        type=int,
        default=1,
        help="jobs of one model a replica runs as one batch (default 1: none; more may use a GPU better, "
        "but pictures may differ from unbatched ones in the last bits)",
    )
    cluster.add_argument(
        "--batch-wait",
        type=float,
        default=0.05,
        help="seconds a replica waits for more jobs of a model to fill a batch (default 0.05)",
    )
    cluster.add_argument(
        "--max-models-per-replica",
        type=int,
        default=2,
        help="model ids a replica keeps warm (LRU, default 2)",
    )
    cluster.add_argument("--torch-threads", type=int, help="torch threads per replica (default: its CPUs)")
    cluster.add_argument(
        "--retries", type=int, default=1, help="runs of a job again after its replica died (default 1)"
    )
    cluster.add_argument(
        "--model-affinity",
        type=float,
        default=0.05,
        help="seconds Serve tries only replicas that have a job's model warm before another may take it and "
        "load the model (default 0.05: about 0.2 s with Serve's retry back-off)",
    )
    cluster.add_argument("--app-name", default=APP_NAME, help=f"Serve application name (default {APP_NAME})")
    cluster.add_argument(
        "--no-ship-code",
        action="store_true",
        help="do not send this stylepass_core to the workers (use the one installed on every node)",
    )
    worker = parser.add_argument_group("worker (as python -m stylepass_core.worker)")
    worker.add_argument(
        "--host", default="127.0.0.1", help="address Serve's HTTP proxies bind (default 127.0.0.1)"
    )
    worker.add_argument("--port", type=int, default=0, help="HTTP port (default 0: a free one, printed)")
    worker.add_argument(
        "--token", help=f"bearer token (default: ${TOKEN_ENV}, else a random one that is printed)"
    )
    worker.add_argument(
        "--model-dir", action="append", default=[], type=Path, help="model folder (repeatable)"
    )
    worker.add_argument("--engine-module", action="append", default=[], help="module registering engines")
    worker.add_argument("--max-upload-mb", type=int, default=1024, help="largest job upload in MiB")
    worker.add_argument("--max-queued", type=int, default=16, help="jobs that may wait for a free replica")
    worker.add_argument("--result-ttl", type=float, default=600.0, help="seconds an unfetched result is kept")
    worker.add_argument(
        "--shutdown-grace", type=float, default=60.0, help="longest a graceful shutdown waits (default 60)"
    )
    worker.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if args.max_upload_mb < 1 or args.max_queued < 0 or args.result_ttl <= 0:
        parser.error("--max-upload-mb must be >= 1, --max-queued >= 0 and --result-ttl > 0")
    if not 0 <= args.shutdown_grace <= 3600:
        parser.error(f"--shutdown-grace must be in [0, 3600] seconds, got {args.shutdown_grace}")
    if args.num_gpus_per_replica is None and args.num_cpus_per_replica is None:
        args.num_cpus_per_replica = 1.0
    return args


class _Stop:
    """Why and when the entry point stops: a signal (graceful; a second one: at once) or `/v1/shutdown`."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.signals = 0

    def on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if self.signals > 1:
            log.warning("second %s: stopping at once", signal.Signals(signum).name)
        self.reason = self.reason or signal.Signals(signum).name
        self.event.set()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s [worker.serve %(process)d] %(message)s",
    )
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)

    # 1. Token, model folders, options
    token, generated, model_dirs = startup.token_and_model_dirs(args.token, args.model_dir)
    try:
        options = ServeOptions(
            replicas=args.replicas,
            num_gpus_per_replica=args.num_gpus_per_replica or 0.0,
            num_cpus_per_replica=args.num_cpus_per_replica if args.num_cpus_per_replica is not None else 1.0,
            jobs_per_replica=args.jobs_per_replica,
            max_batch_size=args.max_batch_size,
            batch_wait=args.batch_wait,
            max_models_per_replica=args.max_models_per_replica,
            torch_threads=args.torch_threads,
            retries=args.retries,
            model_affinity=args.model_affinity,
            engine_modules=tuple(args.engine_module),
            http_shutdown=True,
            log_level=args.log_level,
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    config = startup.worker_config(args, token, model_dirs)

    # 2. Ray, Serve's HTTP proxy, the application (it is ready when serve.run returns)
    import ray
    from ray import serve

    started = time.perf_counter()
    own_cluster = not args.address
    start_ray(args.address, args.num_cpus, ship_code=not args.no_ship_code)
    # Ray's core worker installs its own SIGTERM handler (it logs and dies, leaving Ray's agents behind):
    # ours again, so a signal drains and stops everything in order.
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    try:
        port = args.port or _free_port(args.host)
        serve.start(http_options={"host": args.host, "port": port})
        handle = serve.run(build_application(config, options), name=args.app_name, route_prefix="/")
        instance = handle.instance.remote().result(timeout_s=60)
    except Exception as exc:
        log.error("cannot start the application on Ray Serve: %s: %s", type(exc).__name__, exc)
        _teardown(args.app_name, own_cluster)
        return 2

    # 3. The ready line, as the plain worker prints it
    url = f"http://{_shown_host(args.host)}:{port}"
    ray_facts = {
        "address": ray.get_runtime_context().gcs_address,
        "app": args.app_name,
        "replicas": options.replicas,
        "slots": options.slots,
        "started_seconds": round(time.perf_counter() - started, 3),
    }
    startup.announce(url, args.host, port, instance, token, generated, ray=ray_facts)
    log.info("listening on %s: %d replicas, %d jobs at once", url, options.replicas, options.slots)

    # 4. Serve until a signal or /v1/shutdown; then drain, delete the application, stop our Ray
    watcher = threading.Thread(
        target=_watch_http_shutdown, args=(handle, stop), name="stylepass-serve-watch", daemon=True
    )
    watcher.start()
    while not stop.event.wait(0.5):
        pass
    log.info("stopping (%s)", stop.reason)
    if stop.reason != "shutdown" and stop.signals < 2:
        try:
            handle.drain.remote(config.shutdown_grace).result(timeout_s=config.shutdown_grace + 30)
        except Exception as exc:  # the ingress is gone already: nothing left to drain
            log.warning("drain: %s: %s", type(exc).__name__, exc)
    _teardown(args.app_name, own_cluster)
    log.info("stopped")
    return 0


def _watch_http_shutdown(handle: Any, stop: _Stop) -> None:
    """Ask the ingress, one long call after another, whether a client asked it to shut down."""
    while not stop.event.is_set():
        try:
            if handle.wait_for_shutdown.remote(5.0).result(timeout_s=30):
                stop.reason = stop.reason or "shutdown"
                stop.event.set()
        except Exception as exc:  # the ingress is being replaced or the cluster is going: look again
            if stop.event.is_set():
                return
            log.debug("shutdown watch: %s: %s", type(exc).__name__, exc)
            time.sleep(1.0)


def _teardown(app_name: str, own_cluster: bool) -> None:
    """Delete the application; on a Ray instance this process started, stop Serve and Ray as well."""
    import ray
    from ray import serve

    try:
        if own_cluster:
            serve.shutdown()
        else:
            serve.delete(app_name)
    except Exception as exc:  # report and go on: Ray's own shutdown still ends what this process started
        log.warning("stopping Serve: %s: %s", type(exc).__name__, exc)
    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
