# SPDX-License-Identifier: GPL-3.0-or-later
"""Engines the worker tests load with `--engine-module engines_for_tests`: deterministic, controllable, fast.

TEST_STEPS inverts the beauty in `steps` steps of `step_seconds` each, honouring abort within 10 ms, and can
fail on request. It resolves `params["model"]` through the worker's model folders to show that engines see
them. TEST_UNAVAILABLE never runs.
"""

import os
import threading
import time

import numpy as np
from stylepass_core import imageops
from stylepass_core.engine_api import Engine, StyleResult, check_abort, register_engine
from stylepass_core.worker.model_paths import configured_model_dirs, resolve_model_path


@register_engine
class StepsEngine(Engine):
    id = "TEST_STEPS"
    label = "Steps (test)"
    PARAMS = {"steps", "step_seconds", "fail", "model"}

    def available(self):
        return True, ""

    def styles(self):
        return [("invert", "Invert")]

    def loaded_models(self):
        return ["nothing (test engine)"]

    def run(self, request, progress=None, abort=None):
        unknown = sorted(set(request.params) - self.PARAMS)
        if unknown:
            raise ValueError(f"unknown params {unknown} for {self.id}")
        steps = int(request.params.get("steps", 3))
        step_seconds = float(request.params.get("step_seconds", 0.0))
        fail = request.params.get("fail", "")
        started = time.perf_counter()
        info = {
            "engine": self.id,
            "steps": steps,
            "model_dirs": [str(d) for d in configured_model_dirs()],
            "token_in_environ": "STYLEPASS_WORKER_TOKEN" in os.environ,
        }
        if "model" in request.params:
            info["model_path"] = str(resolve_model_path(str(request.params["model"])))
        wake = threading.Event()
        for step in range(steps):
            if progress is not None:
                progress.update(step, steps, f"step {step + 1} of {steps}")
            deadline = time.monotonic() + step_seconds
            while time.monotonic() < deadline:  # short sleeps, so a cancel lands within ~10 ms
                check_abort(abort)
                wake.wait(min(0.01, max(0.0, deadline - time.monotonic())))
            check_abort(abort)
        if fail == "value":
            raise ValueError("the test engine refuses this setting (fail='value')")
        if fail == "runtime":
            raise RuntimeError("the test engine broke down (fail='runtime')")
        if progress is not None:
            progress.update(steps, steps, "Done")
        image = (1.0 - request.beauty).astype(np.float32)
        if image.shape[:2] != request.output_size:
            image = np.clip(imageops.resize(image, request.output_size), 0.0, 1.0)
        info["timings"] = {"compute": time.perf_counter() - started}
        return StyleResult(image=np.ascontiguousarray(image), info=info)


@register_engine
class UnavailableEngine(Engine):
    id = "TEST_UNAVAILABLE"
    label = "Unavailable (test)"

    def available(self):
        return False, "the test says so; install nothing"

    def styles(self):
        return []

    def run(self, request, progress=None, abort=None):
        raise AssertionError("never runs")
