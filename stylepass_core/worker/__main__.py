# SPDX-License-Identifier: GPL-3.0-or-later
"""`python -m stylepass_core.worker`: serve every engine this Python can run.

With `stylepass_core` importable: its wheel installed (`pip install stylepass_core-<version>-py3-none-any.whl`,
built into dist/ by `./run build`), or the repo root on PYTHONPATH:

    python -m stylepass_core.worker --host 127.0.0.1 --port 0 --model-dir ~/models

The token comes from `--token`, else the `STYLEPASS_WORKER_TOKEN` environment variable (which the worker
then removes from its environment), else a random one. Once listening, the worker prints one JSON line
on stdout: `{"event": "listening", "url": ..., "port": ..., "pid": ..., "protocol": 1, ...}`, with `"token"`
only when it generated the token itself. Everything else goes to stderr.

SIGTERM or SIGINT shuts the worker down gracefully (new jobs refused, queued ones cancelled, the running job
finished and its result fetched, for at most `--shutdown-grace` seconds; a second signal stops at once); it
then exits 0.
"""

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from . import lifeline, protocol, startup
from .model_paths import MODEL_DIRS_ENV
from .protocol import TOKEN_ENV

ENGINE_MODULES_ENV = "STYLEPASS_WORKER_ENGINE_MODULES"
log = logging.getLogger("stylepass.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stylepass_core.worker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port, printed)")
    parser.add_argument(
        "--token",
        help=f"bearer token clients must send (default: ${TOKEN_ENV}, else a random one that is printed); "
        "other local users can read command lines, so prefer the environment variable",
    )
    parser.add_argument(
        "--model-dir",
        action="append",
        default=[],
        type=Path,
        help="a folder model references may point into (repeatable)",
    )
    parser.add_argument(
        "--engine-module",
        action="append",
        default=[],
        help=f"import this module to register extra engines (repeatable; also ${ENGINE_MODULES_ENV}, comma-separated)",
    )
    parser.add_argument(
        "--max-upload-mb", type=int, default=1024, help="largest job upload in MiB (default 1024)"
    )
    parser.add_argument(
        "--max-queued", type=int, default=16, help="jobs that may wait behind the running one"
    )
    parser.add_argument("--result-ttl", type=float, default=600.0, help="seconds an unfetched result is kept")
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection has to send its request line and headers (default 10)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=120.0,
        help="seconds a connection may idle, or stall while sending a body or reading a reply (default 120)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=60.0,
        help="longest a graceful shutdown waits for the running job and its result's fetch (default 60)",
    )
    parser.add_argument("--parent-pid", type=int, help="exit when this process ends")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent gone)"
    )
    parser.add_argument(
        "--die-with-parent",
        action="store_true",
        help="Linux: be killed by the kernel when the parent thread ends (PR_SET_PDEATHSIG)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if args.max_upload_mb < 1:
        parser.error(f"--max-upload-mb must be >= 1, got {args.max_upload_mb}")
    if args.max_queued < 0 or args.result_ttl <= 0:
        parser.error("--max-queued must be >= 0 and --result-ttl > 0")
    for name in ("header_timeout", "idle_timeout"):
        if not 0 < getattr(args, name) <= 3600:
            parser.error(
                f"--{name.replace('_', '-')} must be in (0, 3600] seconds, got {getattr(args, name)}"
            )
    if not 0 <= args.shutdown_grace <= 3600:
        parser.error(f"--shutdown-grace must be in [0, 3600] seconds, got {args.shutdown_grace}")
    return args


def _parent_gone(reason: str) -> None:
    log.warning("%s; exiting", reason)
    logging.shutdown()
    os._exit(3)  # nobody is left to serve; skip interpreter teardown, which may wait on engine threads


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s [worker %(process)d] %(message)s",
    )

    # 1. Lifelines first, so a parent that dies during the imports below still takes the worker along
    if args.die_with_parent:
        lifeline.die_with_parent_thread(args.parent_pid)
    if args.exit_on_stdin_eof:
        lifeline.watch_stdin(_parent_gone)
    if args.parent_pid is not None:
        lifeline.watch_parent_pid(args.parent_pid, _parent_gone)

    # 2. Token, model folders, extra engines
    token, generated, model_dirs = startup.token_and_model_dirs(args.token, args.model_dir)
    os.environ[MODEL_DIRS_ENV] = os.pathsep.join(
        str(d) for d in model_dirs
    )  # for engines: configured_model_dirs()
    modules = [*args.engine_module, *filter(None, os.environ.get(ENGINE_MODULES_ENV, "").split(","))]
    for name in modules:
        try:
            importlib.import_module(name.strip())
        except Exception as exc:  # report which module and why, then stop: the operator asked for it
            log.error("cannot import engine module %r: %s: %s", name, type(exc).__name__, exc)
            return 2

    # 3. Listen, then tell the parent where
    try:  # the HTTP stack (Starlette, uvicorn) is imported here, after the lifelines are in place
        from .server import WorkerServer
    except ModuleNotFoundError as exc:
        log.error(
            "this Python lacks %r, which the worker needs: reinstall the engine (Preferences > Add-ons > "
            "Stylepass > Install Engine) or pip install -r stylepass_core/engines/diffusion/requirements.txt",
            exc.name,
        )
        return 2
    config = startup.worker_config(
        args, token, model_dirs, header_timeout=args.header_timeout, idle_timeout=args.idle_timeout
    )
    try:
        server = WorkerServer(config)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2
    server.catch_signals()
    startup.announce(server.url, args.host, server.port, server.board.instance, token, generated)
    log.info(
        "listening on %s (protocol %d, engines from %s)",
        server.url,
        protocol.PROTOCOL_VERSION,
        modules or "core",
    )

    # 4. Serve until shutdown (`/v1/shutdown`, SIGTERM or SIGINT: graceful)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # before the signal handlers were in place
        log.info("interrupted")
    finally:
        server.board.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
