# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylised animation: every frame of a range, resumable, temporally coherent, overlapped, frame-synced.

For each frame (in order):
    1. main thread: set the frame, decide whether its result on disk is still current (skip) or not;
    2. its control passes, rendered while the engine thread still works on the frame before: in a second
       Blender from the UI (`pass_process`), so the main thread never waits on Cycles; here in background mode;
    3. engine thread: stylise; with temporal coherence, warp the previous result into this frame with
       Blender's exact Vector pass, mask occlusions (forward/backward check, depth test) and blend, unless
       the keyframe policy restarts from a fresh stylisation (first frame, every N frames, cuts);
    4. main thread: the scene-linear copy for the compositor.
At the end the Stylepass group shows the result as an image sequence matched to the scene frame.

`animation_steps()` hands these steps to `stylepass_core.frame_steps`, a step machine that never waits: while
an engine job runs it yields at once, so the modal operator keeps Blender responsive and answers ESC (which
cancels the running frame) however slow the engine is; background mode waits on the job between steps.
"""

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import bpy
import numpy as np

from stylepass_core import exr, png, temporal
from stylepass_core.errors import StylepassError
from stylepass_core.frame_steps import FrameStep, FrameTally, frame_steps, run_to_end
from stylepass_core.imageops import resize
from stylepass_core.jobs import BackgroundJob, PartProgress
from stylepass_core.output_layout import SceneLayout, resolve_output_root
from stylepass_core.settings import CoherenceSettings

from . import compositor, display_colour, images
from .pass_process import PassProcess
from .scene_passes import PassSet, develop, discard, pass_fingerprint, publish, render_here
from .stylise import (
    PASS_SHARE,
    STYLISED_IMAGE,
    CheckedFrame,
    PreparedFrame,
    RunSettings,
    build,
    build_inverse_here,
    check,
    passes_from_second_blender,
    run,
    with_frame,
)


@dataclass(frozen=True)
class AnimationOptions:
    """The range to stylise (the operator's) and how frames stay coherent (`scene.stylepass`)."""

    frame_start: int
    frame_end: int
    frame_step: int = 1
    overwrite: bool = False
    coherence: CoherenceSettings = field(default_factory=CoherenceSettings)
    overlap: bool = True

    @property
    def frames(self) -> list[int]:
        return list(range(self.frame_start, self.frame_end + 1, max(1, self.frame_step)))


@dataclass
class AnimationSummary:
    frames: list[int] = field(default_factory=list)
    tally: FrameTally = field(default_factory=FrameTally)
    keyframes: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    colour_space: str = ""

    @property
    def stylised(self) -> list[int]:
        return self.tally.stylised

    @property
    def skipped(self) -> list[int]:
        return self.tally.skipped

    @property
    def stopped_early(self) -> bool:
        return self.tally.stopped_early


@dataclass
class _FramePlan:
    """A frame checked on the main thread: its passes, when current or rendered here, or the ticket of its
    render in the second Blender; and what its record adds to the context."""

    checked: CheckedFrame
    context: dict
    passes: PassSet | None = None
    ticket: int | None = None
    inverse_ticket: int | None = None  # a new colour view's inverse, built by the second Blender first


@dataclass
class _Previous:
    """What the next frame needs of this one: the result and the raw passes, at the output size."""

    frame: int
    image: np.ndarray
    beauty: np.ndarray
    vectors: np.ndarray
    depth: np.ndarray
    frames_since_keyframe: int


def state_key(fingerprint: str, run_settings: RunSettings, anim: AnimationOptions) -> str:
    """Hash of everything that shapes this frame's result: its `pass_fingerprint`, the engine's and the frame's
    settings, and the coherence settings (every field of each, so a new setting can never be left out)."""
    settings = [run_settings.engine.to_plain(), run_settings.frame.values(), anim.coherence.values()]
    text = json.dumps([fingerprint, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _fit(array: np.ndarray, size: tuple[int, int], scale_values: bool = False) -> np.ndarray:
    """Resample a pass to the output size; motion vectors also scale with it."""
    if array.shape[:2] == size:
        return array
    out = resize(np.where(np.isfinite(array), array, 1e10).astype(np.float32), size)
    if scale_values:
        sy, sx = size[0] / array.shape[0], size[1] / array.shape[1]
        out = out * np.array([sx, sy, sx, sy], dtype=np.float32)
    return out


def _frame_inputs(prepared: PreparedFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = prepared.request.output_size
    passes = prepared.passes
    beauty = _fit(passes.maps["beauty"], (height, width))
    vectors = _fit(passes.raw["vector"], (height, width), scale_values=True)
    depth = _fit(passes.raw["depth"], (height, width))
    return beauty, vectors, depth


def _temporal_work(prepared: PreparedFrame, previous: _Previous | None, anim: AnimationOptions):
    """The engine-thread job for one frame: returns (StylisedFrame, this frame as `_Previous`, keyframe reason,
    colour space)."""
    coherence = anim.coherence
    policy = temporal.KeyframePolicy(interval=coherence.keyframe_interval)
    beauty, vectors, depth = _frame_inputs(prepared)
    warped = valid = None
    reason = "first" if previous is None else None
    # How many frames ago the last keyframe was, as seen from this frame.
    since = None if previous is None else previous.frames_since_keyframe + 1
    if coherence.temporal_coherence and previous is not None:
        warp = temporal.BackwardWarp(vectors)
        warped = warp.apply(previous.image)
        valid = temporal.occlusion_mask(vectors, previous.vectors, depth, previous.depth, warp=warp)
        score = temporal.change_score(previous.beauty, beauty, valid, vectors=vectors)
        reason = policy.keyframe_reason(since, score)
    elif not coherence.temporal_coherence:
        reason = "off"
    request = prepared.request
    continued = request.settings.continuation(coherence.temporal_denoise) if reason is None else None
    if continued is not None:
        # The engine continues from the warped previous result (fresh beauty where it was occluded) with the
        # same seed, so it repaints detail without re-inventing what is already there.
        start = np.where(valid[..., None], warped, beauty).astype(np.float32)
        start = _fit(start, request.beauty.shape[:2])  # the request's arrays stay at the pass size
        request = replace(request, beauty=start, settings=continued)

    def blend(image: np.ndarray) -> tuple[np.ndarray, dict]:
        if reason is not None:
            return image, {"keyframe": reason, "frames_since_keyframe": 0}
        out = temporal.blend_temporal(image, warped, valid, weight=coherence.temporal_weight)
        return out, {"keyframe": None, "frames_since_keyframe": since, "valid_share": float(valid.mean())}

    this_frame = replace(prepared, request=request)

    def work(progress, abort):
        frame = run(this_frame, progress, abort, postprocess=blend)
        post = frame.record["postprocess"]
        current = _Previous(
            prepared.passes.frame, frame.image, beauty, vectors, depth, post["frames_since_keyframe"]
        )
        return frame, current, post["keyframe"], prepared.compositor.colour_space

    return work


def _load_previous(layout: SceneLayout, frame: int, record: dict) -> _Previous | None:
    """A finished frame from disk, to carry the temporal chain past skipped frames."""
    try:
        image = png.read_png_float(layout.stylised_file(frame))[..., :3]
        size = image.shape[:2]
        beauty = _fit(png.read_png_float(layout.pass_file("beauty", frame))[..., :3], size)
        vector = exr.read_exr(layout.pass_file("vector", frame, "exr"))
        vectors = _fit(np.stack([vector[c] for c in "XYZW"], axis=-1), size, scale_values=True)
        depth = _fit(exr.read_exr(layout.pass_file("depth", frame, "exr"))["Z"], size)
    except (OSError, KeyError, ValueError):
        return None
    since = (record.get("postprocess") or {}).get("frames_since_keyframe", 0)
    return _Previous(frame, image, beauty, vectors, depth, since)


def _record(layout: SceneLayout, frame: int) -> dict | None:
    try:
        with open(layout.stylised_file(frame, "json"), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def animation_steps(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    run_settings: RunSettings,
    anim: AnimationOptions,
    prefs=None,
    stop: threading.Event | None = None,
    summary: AnimationSummary | None = None,
    separate_process: bool = False,
) -> Iterator[FrameStep]:
    """Stylise `anim.frames`; yields after each main-thread step and while an engine job runs (never waits).
    See the module docstring. With `separate_process` a second Blender renders the passes (`pass_process`),
    so no step holds the main thread for a render; without, each frame's render is one blocking step.

    Raises:
        StylepassError: bad input (checked before the first frame) or a frame that failed; frames finished
            before it stay on disk, so running again continues where it stopped.
    """
    stop = stop or threading.Event()
    summary = summary if summary is not None else AnimationSummary()
    frames = anim.frames
    if not frames:
        raise StylepassError(f"The frame range {anim.frame_start}-{anim.frame_end} is empty.")
    run_settings = with_frame(
        run_settings, seed_locked=True
    )  # one seed for the whole shot: coherence needs it
    if anim.coherence.temporal_coherence:
        # Cuts are found by comparing the beauty between frames: it needs its samples even when unused.
        run_settings = replace(run_settings, passes=replace(run_settings.passes, beauty_used=True))
    root, _warning = resolve_output_root(run_settings.passes.output_dir, bpy.data.filepath)
    layout = SceneLayout(root, scene.name)
    summary.frames = frames
    original = (scene.frame_current, scene.frame_subframe)
    started = time.perf_counter()
    coherent = anim.coherence.temporal_coherence
    # The temporal chain: the frame before (its result and passes), and whether a redone frame forces the rest.
    chain = {"previous": None, "redo": False, "records": {}}
    # The second Blender (started with the first frame it has to render) and every pass plan handed to it.
    renderer = {"process": None, "plans": [], "inverses": set()}

    def plan(frame: int) -> _FramePlan | None:
        scene.frame_set(frame)
        fingerprint = pass_fingerprint(scene, view_layer, run_settings.passes)
        key = state_key(fingerprint, run_settings, anim)
        record = _record(layout, frame)
        current = (
            record is not None
            and record.get("context", {}).get("state_key") == key
            and layout.stylised_file(frame).is_file()
            and layout.compositor_file(frame).is_file()
        )
        if current and not anim.overwrite and not chain["redo"]:
            chain["records"][frame] = record
            return None
        # A redone frame changes every later frame that was blended from it.
        chain["redo"] = coherent
        checked = check(scene, view_layer, run_settings, prefs=prefs, fingerprint=fingerprint)
        context = {
            "state_key": key,
            "animation": {"range": [frames[0], frames[-1]], "coherence": anim.coherence.values()},
        }
        planned = _FramePlan(checked, context)
        passes_plan = checked.plan
        target = checked.target
        if not separate_process:
            build_inverse_here(target)
        elif target.needs_inverse and target.key not in renderer["inverses"]:
            planned.inverse_ticket = second_blender().submit_inverse(target)
            renderer["inverses"].add(target.key)
        if passes_plan.reused is not None:
            planned.passes = passes_plan.reused
        elif separate_process:
            # The second Blender starts on this frame's passes at once, while the engine still works on the
            # frame before: render and engine overlap without holding Blender's main thread.
            planned.ticket = second_blender().submit(passes_plan.job)
            renderer["plans"].append(passes_plan)
        else:
            planned.passes = develop(passes_plan, render_here(scene, view_layer, passes_plan))
        return planned

    def second_blender() -> PassProcess:
        if renderer["process"] is None:
            renderer["process"] = PassProcess.start(scene, run_settings.passes.device)
        return renderer["process"]

    def launch(frame: int, planned: _FramePlan) -> BackgroundJob:
        # Launched once the frame before has been collected, so `previous` is that frame.
        previous = chain["previous"] if coherent else None
        process = renderer["process"]

        def work(progress, abort):
            passes = planned.passes or passes_from_second_blender(
                planned.checked, process, progress, abort, planned.inverse_ticket, planned.ticket
            )
            prepared = build(planned.checked, passes)
            prepared.context.update(planned.context)
            result = _temporal_work(prepared, previous, anim)(PartProgress(progress, PASS_SHARE, 1.0), abort)
            return planned, prepared, result

        return BackgroundJob(work).start()

    def skipped(frame: int) -> None:
        record = chain["records"].pop(frame)
        chain["previous"] = _load_previous(layout, frame, record) if coherent else None

    def collect(frame: int, job: BackgroundJob) -> None:
        planned, prepared, (stylised_frame, chain["previous"], keyframe, colour_space) = job.result
        if not prepared.passes.reused:
            publish(prepared.passes, planned.checked.plan)
        summary.colour_space = colour_space
        for warning in [*prepared.warnings, *(stylised_frame.alongside or ())]:
            if warning not in summary.warnings:
                summary.warnings.append(warning)
        if keyframe:
            summary.keyframes[frame] = keyframe

    try:
        yield from frame_steps(
            frames, plan, launch, collect, stop, summary.tally, overlap=anim.overlap, skipped=skipped
        )
    finally:
        process = renderer["process"]
        if process is not None:
            if process.idle:
                process.close()
            else:  # stopped or failed with frames still queued: nothing more of it is wanted
                process.kill()
        for passes_plan in renderer["plans"]:
            discard(passes_plan)  # temporary render files of frames that never finished
        if (scene.frame_current, scene.frame_subframe) != original:
            scene.frame_set(original[0], subframe=original[1])

    # The compositor shows the sequence, frame-synced
    done = [f for f in frames if layout.compositor_file(f).is_file()]
    if done:
        colour_space = summary.colour_space or display_colour.scene_linear_colour_space()
        first = layout.compositor_file(done[0])
        image = images.show_sequence(
            compositor.STYLISED_ROLE, STYLISED_IMAGE, first, colour_space, summary.warnings
        )
        compositor.install(scene, image, sequence=(done[0], done[-1] - done[0] + 1), notes=summary.warnings)
    summary.seconds = time.perf_counter() - started
    yield FrameStep(len(frames), len(frames), frames[-1], "done")


def stylise_animation(
    scene, view_layer, run_settings: RunSettings, anim: AnimationOptions, prefs=None
) -> AnimationSummary:
    """Run every step synchronously (background mode, scripts, farms)."""
    summary = AnimationSummary()
    steps = animation_steps(scene, view_layer, run_settings, anim, prefs=prefs, summary=summary)
    run_to_end(steps, lambda step: print(f"Stylepass: {step.done}/{step.total} {step.message}", flush=True))
    return summary
