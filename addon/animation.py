# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylised animation: every frame of a range, resumable, temporally coherent, overlapped, frame-synced.

For each frame (in order):
    1. main thread: set the frame, decide whether its result on disk is still current (skip) or not;
    2. main thread: render its control passes -- while the engine thread still works on the frame before;
    3. engine thread: stylise; with temporal coherence, warp the previous result into this frame with
       Blender's exact Vector pass, mask occlusions (forward/backward check, depth test) and blend, unless
       the keyframe policy restarts from a fresh stylisation (first frame, every N frames, cuts);
    4. main thread: the scene-linear copy for the compositor.
At the end the Stylepass group shows the result as an image sequence matched to the scene frame.

`animation_steps()` is a generator that yields after each main-thread step, so the modal operator can keep
Blender responsive and honour ESC (stop after the current frame); background mode simply runs it through.
"""

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import bpy
import numpy as np

from . import compositor, display_colour, images
from .scene_passes import StylepassError, pass_fingerprint
from .stylepass_core import exr, png, temporal
from .stylepass_core.imageops import resize
from .stylepass_core.jobs import BackgroundJob
from .stylepass_core.output_layout import SceneLayout, resolve_output_root
from .stylise import STYLISED_IMAGE, PreparedFrame, StyleOptions, prepare, run


@dataclass
class AnimationOptions:
    """Animation settings as plain values (`scene.stylepass` + the operator's range)."""

    frame_start: int
    frame_end: int
    frame_step: int = 1
    overwrite: bool = False
    temporal: bool = True
    temporal_weight: float = 0.7
    keyframe_interval: int = 12
    overlap: bool = True
    # Diffusion: how much of the warped previous frame img2img may repaint (lower = steadier).
    temporal_denoise: float = 0.45

    @property
    def frames(self) -> list[int]:
        return list(range(self.frame_start, self.frame_end + 1, max(1, self.frame_step)))


@dataclass
class AnimationProgress:
    done: int
    total: int
    frame: int
    message: str
    seconds_left: float | None = None


@dataclass
class AnimationSummary:
    frames: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    stylised: list[int] = field(default_factory=list)
    keyframes: dict[int, str] = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    colour_space: str = ""


@dataclass
class _Previous:
    """What the next frame needs of this one: the result and the raw passes, at the output size."""

    frame: int
    image: np.ndarray
    beauty: np.ndarray
    vectors: np.ndarray
    depth: np.ndarray
    frames_since_keyframe: int


def state_key(fingerprint: str, style: StyleOptions, anim: AnimationOptions) -> str:
    """Hash of everything that shapes this frame's result, from its `pass_fingerprint` and the settings."""
    settings = {k: v for k, v in asdict(style).items() if k != "passes"}
    coherence = {
        k: getattr(anim, k) for k in ("temporal", "temporal_weight", "keyframe_interval", "temporal_denoise")
    }
    text = json.dumps([fingerprint, settings, coherence], sort_keys=True, default=str)
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
    """The engine-thread job for one frame: returns (StylisedFrame, frames since keyframe, keyframe reason)."""
    policy = temporal.KeyframePolicy(interval=anim.keyframe_interval)
    beauty, vectors, depth = _frame_inputs(prepared)
    warped = valid = None
    reason = "first" if previous is None else None
    # How many frames ago the last keyframe was, as seen from this frame.
    since = None if previous is None else previous.frames_since_keyframe + 1
    if anim.temporal and previous is not None:
        warp = temporal.BackwardWarp(vectors)
        warped = warp.apply(previous.image)
        valid = temporal.occlusion_mask(vectors, previous.vectors, depth, previous.depth, warp=warp)
        score = temporal.change_score(previous.beauty, beauty, valid, vectors=vectors)
        reason = policy.keyframe_reason(since, score)
    elif not anim.temporal:
        reason = "off"
    request = prepared.request
    if reason is None and prepared.engine != "NEURAL_STYLE":
        # Diffusion starts from the warped previous result (fresh beauty where it was occluded) with the
        # same seed, so it repaints detail without re-inventing what is already there.
        start = np.where(valid[..., None], warped, beauty).astype(np.float32)
        start = _fit(start, request.beauty.shape[:2])  # the request's arrays stay at the pass size
        steps = int(request.params.get("steps", 20))
        denoise = min(float(request.params.get("denoise", 1.0)), anim.temporal_denoise)
        # img2img runs int(steps * denoise) steps: keep at least one.
        denoise = max(denoise, min(1.0, 1.0 / max(1, steps) + 1e-6))
        params = dict(request.params, denoise=denoise)
        request = replace(request, beauty=start, params=params)

    def blend(image: np.ndarray) -> tuple[np.ndarray, dict]:
        if reason is not None:
            return image, {"keyframe": reason, "frames_since_keyframe": 0}
        out = temporal.blend_temporal(image, warped, valid, weight=anim.temporal_weight)
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
    style: StyleOptions,
    anim: AnimationOptions,
    prefs=None,
    stop: threading.Event | None = None,
    summary: AnimationSummary | None = None,
) -> Iterator[AnimationProgress]:
    """Stylise `anim.frames`; yields progress after each main-thread step. See the module docstring.

    Raises:
        StylepassError: bad input (checked before the first frame) or a frame that failed; frames finished
            before it stay on disk, so running again continues where it stopped.
    """
    stop = stop or threading.Event()
    summary = summary if summary is not None else AnimationSummary()
    frames = anim.frames
    if not frames:
        raise StylepassError(f"The frame range {anim.frame_start}-{anim.frame_end} is empty.")
    style = replace(style, seed_locked=True)  # one seed for the whole shot: coherence needs it
    root, _warning = resolve_output_root(style.passes.output_dir, bpy.data.filepath)
    layout = SceneLayout(root, scene.name)
    summary.frames = frames
    original = (scene.frame_current, scene.frame_subframe)
    started = time.perf_counter()
    previous: _Previous | None = None
    pending: tuple[BackgroundJob, int] | None = None
    redo_chain = False

    def complete() -> None:
        nonlocal pending, previous
        job, frame = pending
        pending = None
        job.wait()
        if job.error is not None:
            raise StylepassError(f"Frame {frame} failed: {job.error}") from job.error
        stylised_frame, previous, keyframe, colour_space = job.result
        summary.colour_space = colour_space
        summary.warnings.extend(w for w in stylised_frame.alongside or () if w not in summary.warnings)
        summary.stylised.append(frame)
        if keyframe:
            summary.keyframes[frame] = keyframe

    def progress(index: int, frame: int, message: str) -> AnimationProgress:
        done = len(summary.stylised) + len(summary.skipped)
        elapsed = time.perf_counter() - started
        left = elapsed / done * (len(frames) - done) if done else None
        return AnimationProgress(done, len(frames), frame, message, left)

    try:
        for index, frame in enumerate(frames):
            if stop.is_set():
                summary.stopped_early = True
                break
            scene.frame_set(frame)
            fingerprint = pass_fingerprint(scene, view_layer, style.passes)
            key = state_key(fingerprint, style, anim)
            record = _record(layout, frame)
            current = (
                record is not None
                and record.get("context", {}).get("state_key") == key
                and layout.stylised_file(frame).is_file()
                and layout.compositor_file(frame).is_file()
            )
            if current and not anim.overwrite and not redo_chain:
                if pending is not None:
                    complete()
                previous = _load_previous(layout, frame, record) if anim.temporal else None
                summary.skipped.append(frame)
                yield progress(index, frame, f"frame {frame}: up to date, skipped")
                continue
            # A redone frame changes every later frame that was blended from it.
            redo_chain = anim.temporal

            # 2. Passes on the main thread, while the engine still works on the previous frame
            prepared = prepare(scene, view_layer, style, prefs=prefs, fingerprint=fingerprint)
            prepared.context["state_key"] = key
            prepared.context["animation"] = {"range": [frames[0], frames[-1]], "temporal": anim.temporal}
            yield progress(index, frame, f"frame {frame}: passes rendered")
            if pending is not None:
                complete()
            # 3. The engine for this frame
            job = BackgroundJob(_temporal_work(prepared, previous if anim.temporal else None, anim)).start()
            pending = (job, frame)
            if not anim.overlap:
                complete()
            yield progress(index, frame, f"frame {frame}: stylising")
        if pending is not None:
            complete()
    finally:
        if pending is not None:
            # Stopped by an error: let the running frame finish writing (files are atomic either way).
            pending[0].wait()
        if (scene.frame_current, scene.frame_subframe) != original:
            scene.frame_set(original[0], subframe=original[1])

    # 4. The compositor shows the sequence, frame-synced
    done = [f for f in frames if layout.compositor_file(f).is_file()]
    if done:
        colour_space = summary.colour_space or display_colour.scene_linear_colour_space()
        first = layout.compositor_file(done[0])
        image = images.show_sequence(STYLISED_IMAGE, first, colour_space)
        compositor.install(scene, image, sequence=(done[0], done[-1] - done[0] + 1))
    summary.seconds = time.perf_counter() - started
    yield AnimationProgress(len(frames), len(frames), frames[-1], "done", 0.0)


def stylise_animation(
    scene, view_layer, style: StyleOptions, anim: AnimationOptions, prefs=None
) -> AnimationSummary:
    """Run every step synchronously (background mode, scripts, farms)."""
    summary = AnimationSummary()
    for step in animation_steps(scene, view_layer, style, anim, prefs=prefs, summary=summary):
        print(f"Stylepass: {step.done}/{step.total} {step.message}", flush=True)
    return summary
