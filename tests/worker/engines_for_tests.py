# SPDX-License-Identifier: GPL-3.0-or-later
"""Engines the worker tests load with `--engine-module engines_for_tests`: deterministic, controllable, fast.

TEST_STEPS inverts the beauty in `steps` steps of `step_seconds` each, honouring abort within 10 ms, and can
fail on request. It records the model references it was handed (`info["received_models"]`) and resolves its
`model` setting through the worker's model folders to show that engines see them. TEST_UNAVAILABLE never
runs. TEST_NO_ENGINE has settings but no engine.

The test process imports this module too (through `worker_helpers`): a request's settings are decoded by
engine id, so both sides must have the settings classes registered.
"""

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from stylepass_core import imageops
from stylepass_core.engine_api import Engine, StyleResult, check_abort, register_engine
from stylepass_core.settings import EngineSettings, Settings, register_settings, setting
from stylepass_core.worker.model_paths import configured_model_dirs, resolve_model_path


@dataclass(frozen=True)
class ExtraModel(Settings):
    """A nested model reference (like a ControlNet unit's model), to show nested references are resolved."""

    model: str = setting("", "Model", "A nested model reference", model=True)


@dataclass(frozen=True)
class StepsSettings(EngineSettings):
    ENGINE = "TEST_STEPS"
    LABEL = "Steps"
    DESCRIPTION = "Test engine: inverts the beauty in timed steps"
    PROPERTY = "test_steps"

    steps: int = setting(3, "Steps", "Number of steps (0: return at once)", min=0, max=1000)
    step_seconds: float = setting(0.0, "Step Seconds", "How long each step takes", min=0.0, max=60.0)
    fail: str = setting("", "Fail", "'value' or 'runtime' makes the run fail that way")
    model: str = setting("", "Model", "A model reference the engine resolves", model=True)
    extras: tuple[ExtraModel, ...] = setting((), "Extras", "Nested model references", item=ExtraModel)


@dataclass(frozen=True)
class UnavailableSettings(EngineSettings):
    ENGINE = "TEST_UNAVAILABLE"
    LABEL = "Unavailable"
    DESCRIPTION = "Test engine that never runs"
    PROPERTY = "test_unavailable"


@register_settings
@dataclass(frozen=True)
class OrphanSettings(EngineSettings):
    ENGINE = "TEST_NO_ENGINE"
    LABEL = "No Engine"
    DESCRIPTION = "Test settings of an engine that is not registered"
    PROPERTY = "test_no_engine"


@register_engine
class StepsEngine(Engine):
    id = StepsSettings.ENGINE
    label = "Steps (test)"
    settings_type = StepsSettings

    def available(self):
        return True, ""

    def loaded_models(self):
        return ["nothing (test engine)"]

    def run(self, request, progress=None, abort=None):
        settings: StepsSettings = request.settings
        steps = settings.steps
        started = time.perf_counter()
        info = {
            "engine": self.id,
            "steps": steps,
            "model_dirs": [str(d) for d in configured_model_dirs()],
            "token_in_environ": "STYLEPASS_WORKER_TOKEN" in os.environ,
        }
        # What the engine was handed, before it looks anything up itself.
        info["received_models"] = settings.model_references()
        if settings.model:
            info["model_path"] = str(resolve_model_path(settings.model))
        wake = threading.Event()
        for step in range(steps):
            if progress is not None:
                progress.update(step, steps, f"step {step + 1} of {steps}")
            deadline = time.monotonic() + settings.step_seconds
            while time.monotonic() < deadline:  # short sleeps, so a cancel lands within ~10 ms
                check_abort(abort)
                wake.wait(min(0.01, max(0.0, deadline - time.monotonic())))
            check_abort(abort)
        if settings.fail == "value":
            raise ValueError("the test engine refuses this setting (fail='value')")
        if settings.fail == "runtime":
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
    id = UnavailableSettings.ENGINE
    label = "Unavailable (test)"
    settings_type = UnavailableSettings

    def available(self):
        return False, "the test says so; install nothing"

    def run(self, request, progress=None, abort=None):
        raise AssertionError("never runs")
