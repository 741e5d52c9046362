# SPDX-License-Identifier: GPL-3.0-or-later
"""What both worker entry points do the same way (`python -m stylepass_core.worker` and the one on Ray Serve,
`python -m stylepass_core.worker.serve`): the token, the model folders, and the one JSON line on stdout that
says where the worker listens, which the add-on and the tests read."""

import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from . import protocol
from .board import WorkerConfig
from .protocol import TOKEN_ENV, Limits

log = logging.getLogger("stylepass.worker")

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def token_and_model_dirs(token: str | None, model_dirs: list[Path]) -> tuple[str, bool, tuple[Path, ...]]:
    """The token (`--token`, else `$STYLEPASS_WORKER_TOKEN`, which is then removed from the environment, else
    a new one: `generated`) and the model folders, resolved (a missing one is only warned about)."""
    token = token or os.environ.pop(TOKEN_ENV, "")
    generated = not token
    token = token or secrets.token_urlsafe(32)
    folders = tuple(Path(folder).expanduser().resolve() for folder in model_dirs)
    for folder in folders:
        if not folder.is_dir():
            log.warning("model folder %s does not exist; nothing will be found in it", folder)
    return token, generated, folders


def worker_config(args, token: str, model_dirs: tuple[Path, ...], **more: Any) -> WorkerConfig:
    """The `WorkerConfig` of the options both entry points share (`--host`, `--port`, `--max-upload-mb`,
    `--max-queued`, `--result-ttl`, `--shutdown-grace`), plus `more`."""
    return WorkerConfig(
        host=args.host,
        port=args.port,
        token=token,
        model_dirs=model_dirs,
        limits=Limits.for_upload(args.max_upload_mb << 20),
        max_queued_jobs=args.max_queued,
        result_ttl=args.result_ttl,
        shutdown_grace=args.shutdown_grace,
        **more,
    )


def announce(
    url: str, host: str, port: int, instance: str, token: str, generated: bool, **extra: Any
) -> None:
    """Print the ready line, then send stdout to stderr: a library printing to a pipe nobody reads any more
    could block the worker. The token is in the line only when the worker made it (nobody else knows it)."""
    ready = {
        "event": "listening",
        "url": url,
        "host": host,
        "port": port,
        "pid": os.getpid(),
        "protocol": protocol.PROTOCOL_VERSION,
        "version": protocol.WORKER_VERSION,
        "instance": instance,
        **extra,
    }
    if generated:
        ready["token"] = token
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if host not in LOOPBACK_HOSTS:
        log.warning("listening on %s: reachable from other machines; put TLS in front (see the README)", host)
