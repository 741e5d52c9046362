# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylised animation: every frame of a range, resumable, temporally coherent, overlapped, frame-synced.

Before the first frame: every scene frame's fingerprint, the keyframes (`fusion.keyframe_schedule`: first,
every *Keyframe Interval* rendered frames, cuts, last) and each frame's key, so a frame is redone only when
what it depends on changed or its files are missing. Then for each rendered frame (in order):
    1. main thread: set the frame; skip it when current;
    2. its control passes (and the motion-only passes of frames a frame step skips), rendered while the engine
       thread still works on the frame before: in a second Blender from the UI (`pass_process`), so the main
       thread never waits on Cycles; here in background mode;
    3. engine thread: is it a cut (too much of it unseen in, or changed from, the frame before)? Stylise it
       (an engine that can continue, like diffusion, starts from the keyframe before carried here). A keyframe
       is written at once, and then the frames waiting since the keyframe before are fused (`fusion`): each
       samples both keyframes' pictures once along the composed motion, its own picture where neither sees;
    4. main thread: the passes are shown and kept for reuse.
At the end the Stylepass group shows the result as an image sequence matched to the scene frame.

`animation_steps()` hands these steps to `stylepass_core.frame_steps`, a step machine that never waits: while
an engine job runs it yields at once, so the modal operator keeps Blender responsive and answers ESC (which
cancels the running frame) however slow the engine is; background mode waits on the job between steps.
"""

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import bpy
import numpy as np

from stylepass_core import exr, fusion, png, temporal
from stylepass_core.compositor_layers import VIEW_LAYER, pass_names
from stylepass_core.engine_api import StyleResult, check_abort
from stylepass_core.errors import StylepassError
from stylepass_core.frame_steps import Collected, FrameStep, FrameTally, frame_steps, run_to_end
from stylepass_core.imageops import resize
from stylepass_core.jobs import BackgroundJob, PartProgress
from stylepass_core.output_layout import SceneLayout, resolve_output_root
from stylepass_core.settings import CoherenceSettings

from . import compositor, display_colour, images
from .pass_process import PassProcess
from .scene_passes import (
    PassPlan,
    PassSet,
    develop,
    discard,
    pass_fingerprint,
    plan_passes,
    publish,
    read_raw,
    render_here,
)
from .stylise import (
    PASS_SHARE,
    STYLISED_IMAGE,
    CheckedFrame,
    PreparedFrame,
    RunSettings,
    build,
    build_inverse_here,
    check,
    grouped_finish,
    output_size,
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
    # A render farm's chunk: the whole shot (first, last frame) the range is part of. Keyframes are then placed
    # as for the whole shot, and the chunk also stylises the rest of the spans it starts or ends in, so chunks
    # stylised apart give the frames one run of the shot gives. None: the range is the shot.
    shot: tuple[int, int] | None = None

    @property
    def frames(self) -> list[int]:
        """The frames to stylise: the range, or for a chunk the range widened to the keyframes around it."""
        frames, _offset = self.span_of_work()
        return frames

    def span_of_work(self) -> tuple[list[int], int]:
        """The frames to stylise and how many rendered frames of the shot come before the first of them."""
        step = max(1, self.frame_step)
        if self.shot is None:
            return list(range(self.frame_start, self.frame_end + 1, step)), 0
        shot = list(range(self.shot[0], self.shot[1] + 1, step))
        inside = [index for index, frame in enumerate(shot) if self.frame_start <= frame <= self.frame_end]
        if not (self.shot[0] <= self.frame_start <= self.frame_end <= self.shot[1]) or not inside:
            raise StylepassError(
                f"The chunk {self.frame_start}-{self.frame_end} must lie within the shot "
                f"{self.shot[0]}-{self.shot[1]} and hold one of its frames (frame step {step})."
            )
        interval = self.coherence.keyframe_interval if self.coherence.temporal_coherence else 1
        first, last = fusion.chunk_bounds((0, len(shot) - 1), (inside[0], inside[-1]), interval)
        return shot[first : last + 1], first


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


def _group_values(item) -> list:
    """A style group's part of a frame's key: everything that shapes its layer."""
    group = item.group
    images = sorted((name, image.name_full) for name, image in item.images.items())
    return [
        group.name,
        sorted(group.objects),
        group.settings.to_plain(),
        group.strength,
        group.keep_colours,
        images,
    ]


def state_key(fingerprint: str, run_settings: RunSettings, anim: AnimationOptions) -> str:
    """Hash of everything that shapes this frame's own result: its `pass_fingerprint`, the engine's and the
    frame's settings, and the coherence settings (every field of each, so a new setting can never be left out).
    What it takes from other frames is added by `_Span`."""
    groups = [_group_values(item) for item in run_settings.groups]
    settings = [run_settings.engine.to_plain(), run_settings.frame.values(), anim.coherence.values(), groups]
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


def _record(layout: SceneLayout, frame: int) -> dict | None:
    try:
        with open(layout.stylised_file(frame, "json"), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


@dataclass
class _FramePlan:
    """A frame checked on the main thread: its passes, when current or rendered here, or the ticket of its
    render in the second Blender; the motion-only renders of the frames a step skips before it; and what its
    record adds to the context. `close_only`: the frame is current, it only closes its span (its keyframe
    picture is read from disk to fuse the frames before it that are redone)."""

    checked: CheckedFrame | None
    context: dict
    passes: PassSet | None = None
    ticket: int | None = None
    inverse_ticket: int | None = None  # a new colour view's inverse, built by the second Blender first
    motion: list[tuple[PassPlan, int | None]] = field(default_factory=list)
    close_only: bool = False
    # Its passes, built frame and engine result, started as soon as it was planned (`_early_engine`).
    early: BackgroundJob | None = None


@dataclass
class _Between:
    """A frame between two keyframes, stylised and waiting for the keyframe after it to be fused and written."""

    index: int
    prepared: PreparedFrame
    result: StyleResult


@dataclass
class _Span:
    """What the keyframes decide, worked out before the first frame from fingerprints and the records on disk.

    Keys: `own` is a frame's own `state_key`; `keys` is what its result depends on (its own key, its keyframes'
    keys and the fingerprints of every frame between them), stored in its record: a frame is redone only when
    that changed or its files are missing, so resuming redoes only what depends on a missing or changed frame.
    """

    frames: list[int]
    fingerprints: dict[int, str]  # every scene frame of the range (the skipped ones too)
    own: dict[int, str]
    cuts: set[int]  # indices into `frames`
    continuing: bool  # the engine continues from the carried picture (diffusion)
    interval: int
    # Rendered frames of the shot before frames[0] (a farm chunk's): where the keyframe grid starts.
    offset: int
    roles: dict[int, str | None] = field(default_factory=dict)  # index -> keyframe reason, None between
    neighbours: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (keyframe before, after)
    keys: dict[int, str] = field(default_factory=dict)

    def arrange(self) -> None:
        """(Re)place the keyframes and every frame's key, e.g. after a new cut was found."""
        schedule = fusion.keyframe_schedule(len(self.frames), self.interval, self.cuts, self.offset)
        roles: dict[int, str | None] = dict.fromkeys(range(len(self.frames)))
        neighbours: dict[int, tuple[int, int]] = {}
        for key in schedule:
            roles[key.index] = key.reason
        indices = [key.index for key in schedule]
        for before, after in itertools.pairwise(indices):
            for index in range(before + 1, after):
                neighbours[index] = (before, after)
        # Whole, at once: frames run ahead read the placement from their own threads (`_early_continued`).
        self.roles, self.neighbours = roles, neighbours
        previous = None
        for index in indices:
            self.keys[index] = self.keyframe_key(index, self.roles[index], previous)
            previous = index
        for index, (before, after) in self.neighbours.items():
            if self.roles[index] is None:
                self.keys[index] = self.between_key(index, before, after, self.roles[after] == "cut")

    def keyframe_before(self, index: int) -> int | None:
        return max((i for i in range(index) if self.roles[i] is not None), default=None)

    def span_key(self, first: int, last: int) -> str:
        """Every scene frame from rendered frame `first` to `last`: the motion a carried picture follows."""
        start, end = self.frames[first], self.frames[last]
        return _digest([self.fingerprints[frame] for frame in range(start, end + 1)])

    def keyframe_key(self, index: int, reason: str, previous: int | None) -> str:
        own = self.own[self.frames[index]]
        if self.continuing and reason in ("interval", "last") and previous is not None:
            return _digest([own, reason, self.keys[previous], self.span_key(previous, index)])
        return _digest([own, reason])

    def between_key(self, index: int, before: int, after: int, cut: bool) -> str:
        closing = None if cut else self.keys[after]  # across a cut only the keyframe before is carried
        parts = [self.own[self.frames[index]], self.keys[before], closing, self.span_key(before, after)]
        return _digest(parts)


def _digest(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class _Store:
    """Pictures and motion of the current span, by scene frame: kept from the frames stylised in this run, read
    from disk (on the engine thread) for the ones that were current. Plain data; no bpy.

    Frames run ahead (`_early_continued`) add their motion from their own threads and wait for what they
    continue from: `pending` holds the scene frames whose motion this run still renders, and `changed` wakes
    the waiters whenever motion or a picture arrives."""

    def __init__(self, layout: SceneLayout, motion_layout: SceneLayout, size: tuple[int, int]) -> None:
        self.layout, self.motion_layout, self.size = layout, motion_layout, size
        self.motion: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.beauty: dict[int, np.ndarray] = {}
        self.pictures: dict[int, np.ndarray] = {}
        self.layers: dict[int, list[np.ndarray]] = {}  # the style groups' scene-linear layers
        self.pending: set[int] = set()
        self.changed = threading.Condition()

    def add_motion(self, frame: int, raw: dict[str, np.ndarray]) -> None:
        """A frame's Vector and Depth passes (`PassSet.raw`), at the output size."""
        motion = (_fit(raw["vector"], self.size, scale_values=True), _fit(raw["depth"], self.size))
        with self.changed:
            self.motion[frame] = motion
            self.pending.discard(frame)
            self.changed.notify_all()

    def motion_ready(self, start: int, end: int) -> bool:
        """Whether every scene frame from `start` to `end` has its motion here or on disk (none still rendering)."""
        with self.changed:
            return not any(frame in self.pending for frame in range(start, end + 1))

    def vectors_depth(self, frame: int, rendered: bool) -> tuple[np.ndarray, np.ndarray]:
        if frame not in self.motion:
            # A frame a step skipped has its motion-only passes; a rendered one its full passes (either may
            # have been made by an earlier run at another step).
            layouts = (self.layout, self.motion_layout) if rendered else (self.motion_layout, self.layout)
            for layout in layouts:
                try:
                    raw = {name: read_raw(layout, name, frame) for name in ("vector", "depth")}
                    break
                except (OSError, KeyError, ValueError) as error:
                    problem = error
            else:
                raise StylepassError(f"The motion passes of frame {frame} cannot be read ({problem}).")
            self.add_motion(frame, raw)
        return self.motion[frame]

    def beauty_of(self, frame: int) -> np.ndarray:
        if frame not in self.beauty:
            self.beauty[frame] = self._read(self.layout.pass_file("beauty", frame), frame)
        return self.beauty[frame]

    def keep(self, frame: int, image: np.ndarray) -> None:
        """A frame's result as its PNG stores it: a resumed run reads back the very same pixels."""
        picture = png.to_uint8(image).astype(np.float32) / np.float32(255.0)
        with self.changed:
            self.pictures[frame] = picture
            self.changed.notify_all()

    def picture(self, frame: int) -> np.ndarray:
        if frame not in self.pictures:
            picture = self._read(self.layout.stylised_file(frame), frame)
            with self.changed:
                self.pictures[frame] = picture
        return self.pictures[frame]

    def keep_layers(self, frame: int, layers: list[np.ndarray]) -> None:
        """A frame's style group layers as its layers file stores them (half floats)."""
        self.layers[frame] = [np.asarray(layer, np.float16).astype(np.float32) for layer in layers]

    def layers_of(self, frame: int, names: list[str]) -> list[np.ndarray]:
        """A frame's style group layers, in group order; `names` are the groups' names (read back by them)."""
        if frame not in self.layers:
            if not names:
                return []
            try:
                passes = exr.group_passes(exr.read_exr(self.layout.layers_file(frame)), VIEW_LAYER)
                found = [passes[item.layer] for item in pass_names(names)]
            except (OSError, KeyError, ValueError) as error:
                raise StylepassError(
                    f"The style group layers of frame {frame} cannot be read ({error})."
                ) from error
            self.layers[frame] = [_fit(layer, self.size) for layer in found]
        return self.layers[frame]

    def _read(self, path, frame: int) -> np.ndarray:
        try:
            return _fit(png.read_png_float(path)[..., :3], self.size)
        except (OSError, ValueError) as error:
            raise StylepassError(f"Frame {frame} cannot be read back ({error}).") from error

    def forget_before(self, frame: int) -> None:
        with self.changed:  # frames run ahead add to these dicts meanwhile
            for kept in (self.motion, self.beauty, self.pictures, self.layers):
                for old in [f for f in kept if f < frame]:
                    del kept[old]


def _motion_span(store: _Store, first: int, last: int, rendered: set[int]):
    frames = range(first, last + 1)
    pairs = [store.vectors_depth(frame, frame in rendered) for frame in frames]
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def _is_cut(store: _Store, previous: int, frame: int, rendered: set[int], policy) -> bool:
    """Whether `frame` starts a new shot: too much of it is unseen in, or changed from, the frame before."""
    vectors, depths = _motion_span(store, previous, frame, rendered)
    back = fusion.carry_maps(vectors, depths, forward=False)[0][-1]
    score = temporal.change_score(back.sample(store.beauty_of(previous)), store.beauty_of(frame), back.valid)
    return policy.is_cut(score)


def _close_span(
    store,
    span: _Span,
    first: int,
    last: int,
    cut: bool,
    waiting: list[_Between],
    weight: float,
    progress,
    abort,
):
    """Fuse and write the frames between keyframes `first` and `last` (indices) that were stylised this run:
    each is its keyframes' pictures sampled once along the composed motion. Where neither keyframe sees a
    surface it shows what the frame before showed there, carried one step, and its own stylisation only where
    the surface has just come into view: a region both keyframes miss stays put instead of flickering.
    After a cut only the keyframe before counts."""
    frames, rendered = span.frames, set(span.frames)
    start, end = frames[first], frames[last]
    vectors, depths = _motion_span(store, start, end, rendered)
    to_first, to_last = fusion.carry_maps(vectors, depths, forward=not cut)
    key0 = store.picture(start)
    key1 = None if cut else store.picture(end)
    names = list(waiting[0].prepared.group_names) if waiting else []
    key0_layers = store.layers_of(start, names)
    key1_layers = None if cut else store.layers_of(end, names)
    for done, between in enumerate(waiting):
        frame = frames[between.index]
        check_abort(abort)  # frames already written stay: the next run fuses only the rest
        progress.update(done, len(waiting), f"fusing frame {frame}")
        where = (frame - start) / (end - start)
        offset = frame - start
        keyframes = [(to_first[offset], key0, 1.0 - where)]
        if key1 is not None:
            keyframes.append((to_last[offset], key1, where))
        before = frames[between.index - 1]  # the keyframe, one fused here, or a current one read back
        since = slice(before - start, offset + 1)
        step = fusion.carry_maps(vectors[since], depths[since], forward=False)[0][-1]
        shown_before = (step, store.picture(before))

        def fused(image, keyframes=keyframes, shown_before=shown_before):
            out, covered = fusion.fuse_frame(image, keyframes, shown_before, weight)
            return out, {"keyframe": None, "carried_share": float(covered.mean())}

        def fused_layers(layers, offset=offset, where=where, step=step, before=before):
            # Each group's layer follows the same exact motion as the frame's picture.
            out = []
            for k, fresh in enumerate(layers):
                keyframes = [(to_first[offset], key0_layers[k], 1.0 - where)]
                if key1_layers is not None:
                    keyframes.append((to_last[offset], key1_layers[k], where))
                shown = (step, store.layers_of(before, names)[k])
                out.append(fusion.fuse_frame(fresh, keyframes, shown, weight)[0])
            return out

        result = between.result
        prepared = replace(between.prepared, runner=lambda *_args, result=result: result)
        prepared.context.update(
            state_key=span.between_key(between.index, first, last, cut),
            keyframes=[start, None if cut else end],
        )
        stylised = run(prepared, None, None, postprocess=fused, layer_postprocess=fused_layers)
        store.keep(frame, stylised.image)
        store.keep_layers(frame, stylised.alongside.layers)


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
    coherence = anim.coherence
    coherent = coherence.temporal_coherence
    if coherent:
        # Cuts are found by comparing the beauty between frames: it needs its samples even when unused.
        run_settings = replace(run_settings, passes=replace(run_settings.passes, beauty_used=True))
    root, _warning = resolve_output_root(run_settings.passes.output_dir, bpy.data.filepath)
    layout = SceneLayout(root, scene.name)
    # The frames a step skips are rendered for their motion only (one sample), in a folder of their own so they
    # never replace a frame's full passes.
    motion_options = replace(
        run_settings.passes,
        beauty_used=False,
        show_images=False,
        output_dir=str(layout.scene_dir / "motion"),
    )
    motion_layout = SceneLayout(layout.scene_dir / "motion", scene.name)
    summary.frames = frames
    original = (scene.frame_current, scene.frame_subframe)
    started = time.perf_counter()
    continued = run_settings.engine.continuation(coherence.temporal_denoise)
    offset = anim.span_of_work()[1]
    if coherent and continued is not None and offset:
        raise StylepassError(
            f"The {run_settings.engine.LABEL} engine continues each keyframe from the one before, so a shot is "
            f"one chain that cannot start at frame {frames[0]}: give the farm one task per shot (or cut), or "
            "turn Temporal Coherence off."
        )
    policy = temporal.CutPolicy()
    index_of = {frame: index for index, frame in enumerate(frames)}
    rendered = set(frames)
    width, height = output_size(scene)
    store = _Store(layout, motion_layout, (height, width))
    # The second Blender (started with the first frame it has to render) and every pass plan handed to it.
    renderer = {"process": None, "plans": [], "inverses": set()}
    # The span being stylised: the frames between keyframes waiting for the next one, and whether any of the
    # span's frames is redone (then its closing keyframe must fuse them even when it is current itself).
    chain: dict = {"waiting": [], "span_work": False}

    # 1. Before the first frame: fingerprints of every scene frame, the keyframes and each frame's key
    interval = coherence.keyframe_interval if coherent else 1
    span = _Span(frames, {}, {}, set(), continued is not None, interval, offset)
    try:
        scan = range(frames[0], frames[-1] + 1) if coherent else frames
        for frame in scan:
            scene.frame_set(frame)
            span.fingerprints[frame] = pass_fingerprint(scene, view_layer, run_settings.passes)
            if frame in rendered:
                span.own[frame] = state_key(span.fingerprints[frame], run_settings, anim)
            yield FrameStep(0, len(frames), frame, f"frame {frame}: checked")
        for index in range(1, len(frames)) if coherent else ():
            record = _record(layout, frames[index]) or {}
            fusion_record = record.get("context", {}).get("fusion", {})
            if fusion_record.get("pair") == span.span_key(index - 1, index) and fusion_record.get("cut"):
                span.cuts.add(index)
        span.arrange()
    except BaseException:
        scene.frame_set(original[0], subframe=original[1])
        raise

    def is_current(frame: int) -> bool:
        record = _record(layout, frame)
        return (
            not anim.overwrite
            and record is not None
            and record.get("context", {}).get("state_key") == span.keys[index_of[frame]]
            and layout.stylised_file(frame).is_file()
            and layout.compositor_file(frame).is_file()
        )

    current = {frame: is_current(frame) for frame in frames}
    # With an engine host that runs several jobs at once (a worker on Ray Serve's replicas), frames planned
    # ahead start their engine work at once (`_early_engine`). Where each frame continues from the keyframe
    # before it (diffusion with coherence), a frame planned ahead starts once that keyframe's picture is made
    # (`_early_continued`): the frames of a span, and the keyframe closing it, run at once; spans in order.
    chained = coherent and continued is not None
    ahead_of = _AheadContext(store, span, rendered, current, continued)
    reach = {"ahead": 1, "early": []}

    def plan(frame: int) -> _FramePlan | None:
        index = index_of[frame]
        role = span.roles[index] if coherent else "off"
        if role is not None and coherent:
            # A keyframe closes the span before it and opens the next one.
            closing = chain["span_work"]
            chain["span_work"] = False
            if current[frame]:
                if closing:
                    return _FramePlan(None, {}, close_only=True)
                return None
        elif current[frame]:
            return None
        else:
            chain["span_work"] = True
        scene.frame_set(frame)
        fingerprint = span.fingerprints[frame]
        checked = check(scene, view_layer, run_settings, prefs=prefs, fingerprint=fingerprint)
        context = {
            "state_key": span.keys[index],
            "frame_key": span.own[frame],
            "animation": {"range": [frames[0], frames[-1]], "coherence": coherence.values()},
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
        if coherent and index > 0:
            # The frames a step skips: their motion joins this frame to the one before (one-sample renders).
            for skipped_frame in range(frames[index - 1] + 1, frame):
                scene.frame_set(skipped_frame)
                motion_plan = plan_passes(scene, view_layer, motion_options, reuse=True)
                ticket = None
                if motion_plan.reused is None:
                    if separate_process:
                        ticket = second_blender().submit(motion_plan.job)
                        renderer["plans"].append(motion_plan)
                    else:
                        render_result = render_here(scene, view_layer, motion_plan)
                        motion_plan.reused = develop(motion_plan, render_result)
                planned.motion.append((motion_plan, ticket))
            scene.frame_set(frame)
        if chained:
            with store.changed:  # its motion (and the skipped frames') is on the way: frames after it wait
                store.pending.update(range(frames[index - 1] + 1 if index else frame, frame + 1))
        if not chained or span.roles[index] in ("first", "cut"):
            planned.early = _early_engine(planned, renderer["process"], reach, (width, height))
        else:
            planned.early = _early_continued(
                planned, index, renderer["process"], reach, (width, height), ahead_of
            )
        reach["early"].append(planned.early)
        return planned

    def second_blender() -> PassProcess:
        if renderer["process"] is None:
            renderer["process"] = PassProcess.start(scene, run_settings.passes.device)
        return renderer["process"]

    def launch(frame: int, planned: _FramePlan) -> BackgroundJob:
        # Launched once the frame before has been collected, so the chain holds every frame before this one.
        index = index_of[frame]
        process = renderer["process"]
        waiting = list(chain["waiting"])
        role = span.roles[index] if coherent else "off"

        def close(last: int, cut: bool, progress, abort) -> None:
            if waiting:
                first = span.neighbours[waiting[0].index][0]
                weight = coherence.temporal_weight
                _close_span(store, span, first, last, cut, waiting, weight, progress, abort)

        if planned.close_only:

            def close_work(progress, abort):
                close(index, index in span.cuts, progress, abort)
                return planned, None, None

            return BackgroundJob(close_work).start()

        def work(progress, abort):
            ran_ahead = None
            if planned.early is not None:
                passes, prepared, ran_ahead = _early_result(planned.early, progress, abort)
            else:
                passes = planned.passes or passes_from_second_blender(
                    planned.checked, process, progress, abort, planned.inverse_ticket, planned.ticket
                )
                _develop_motion(planned, process, abort)
                prepared = build(planned.checked, passes)
            for motion_plan, _ticket in planned.motion:
                if motion_plan.reused.frame not in store.motion:  # a frame run ahead added its own already
                    store.add_motion(motion_plan.reused.frame, motion_plan.reused.raw)
            prepared.context.update(planned.context)
            if frame not in store.motion:
                store.add_motion(frame, passes.raw)
            beauty = store.beauty[frame] = _fit(passes.maps["beauty"], store.size)
            reason, cut = role, False
            if coherent and index > 0:
                cut = _is_cut(store, frames[index - 1], frame, rendered, policy)
                prepared.context["fusion"] = {"pair": span.span_key(index - 1, index), "cut": cut}
                if cut:
                    reason = "cut"
            # Read now, not when planned: a cut found in the frame before may have moved the keyframes.
            prepared.context["state_key"] = span.keyframe_key(index, "cut", None) if cut else span.keys[index]
            request = prepared.request
            first = span.neighbours[index][0] if reason is None else span.keyframe_before(index)
            if continued is not None and reason in (None, "interval", "last") and first is not None:
                if ran_ahead is not None and ran_ahead.first == first:
                    # Run ahead from this very keyframe: the same request, already answered.
                    request = ran_ahead.request
                    prepared = replace(prepared, runner=_answered(prepared.runner, request, ran_ahead.result))
                else:  # not run ahead, or from a keyframe a new cut has moved since: its result is dropped
                    request = _continued(store, frames[first], frame, rendered, beauty, request, continued)
            prepared = replace(prepared, request=request)
            # A keyframe that closes a span gives the second half of its progress to fusing the frames before.
            closing = coherent and reason is not None and bool(waiting)
            part = PartProgress(progress, PASS_SHARE, 0.5 if closing else 1.0)
            if reason is None:
                result = _run_engine(prepared, request, part, abort)
                # The style groups run now too; the frame keeps their composite mix for when it is written.
                prepared = replace(prepared, finish=grouped_finish(prepared, None, abort), groups=())
                return planned, prepared, _Between(index, prepared, result)
            stylised = run(prepared, part, abort, postprocess=lambda image: (image, {"keyframe": reason}))
            store.keep(frame, stylised.image)
            store.keep_layers(frame, stylised.alongside.layers)
            if closing:
                close(index, cut, PartProgress(progress, 0.5, 1.0), abort)
            return planned, prepared, (stylised, reason)

        return BackgroundJob(work).start()

    def collect(frame: int, job: BackgroundJob) -> Collected:
        planned, prepared, outcome = job.result
        written = [frames[between.index] for between in chain["waiting"]]
        if planned.close_only:
            chain["waiting"] = []
            store.forget_before(frame)
            return Collected(stylised=written, skipped=[frame])
        if not prepared.passes.reused:
            publish(prepared.passes, planned.checked.plan)
        for motion_plan, _ticket in planned.motion:
            if motion_plan.job is not None and motion_plan.fingerprint is not None:
                publish(motion_plan.reused, motion_plan)
        summary.colour_space = prepared.compositor.colour_space
        warnings = list(prepared.warnings)
        if isinstance(outcome, _Between):
            chain["waiting"].append(outcome)  # written with the keyframe after it
            written = []
        else:
            stylised, reason = outcome
            warnings.extend(stylised.alongside.warnings)
            summary.keyframes[frame] = reason
            if reason == "cut" and index_of[frame] not in span.cuts:
                # A new cut: the keyframes after it move. Frames planned from here on see it; the one frame
                # already planned ahead (passes overlap the engine) was judged by the old placement. It can only
                # have been skipped as current if its record matched while this frame's did not: rare, and
                # then it keeps the look it had.
                span.cuts.add(index_of[frame])
                span.arrange()
            chain["waiting"] = []
            store.forget_before(frame)
            written.append(frame)
        for warning in warnings:
            if warning not in summary.warnings:
                summary.warnings.append(warning)
        return Collected(stylised=written)

    try:
        yield from frame_steps(
            frames, plan, launch, collect, stop, summary.tally, anim.overlap, ahead=lambda: reach["ahead"]
        )
    finally:
        # Stopped or failed: the frames planned ahead are not wanted. All are told at once, so their engine
        # jobs (on as many replicas) are cancelled together, and the wait for them is bounded as a whole.
        running = [early for early in reach["early"] if not early.done]
        for early in running:
            early.cancel()
        deadline = time.monotonic() + EARLY_CANCEL_WAIT
        for early in running:
            early.wait(max(0.0, deadline - time.monotonic()))
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
        names = [item.group.name for item in run_settings.groups]
        layers = compositor.show_layers(
            layout.layers_file(done[0]), names, colour_space, summary.warnings, sequence=True
        )
        sequence = (done[0], done[-1] - done[0] + 1)
        compositor.install(scene, image, sequence=sequence, notes=summary.warnings, layers=layers)
    summary.seconds = time.perf_counter() - started
    yield FrameStep(len(frames), len(frames), frames[-1], "done")


# Seconds a stopped run waits, in all, for its frames planned ahead to cancel their engine jobs (the worker
# confirms a cancel within a step); one that takes longer ends on its own thread.
EARLY_CANCEL_WAIT = 3.0

# What the frames planned ahead may hold at once (passes at output size, maps, the engine's result): about
# 100 bytes a pixel, so 2 GiB is ten 1080p frames.
AHEAD_BUDGET_BYTES = 2 << 30
AHEAD_BYTES_PER_PIXEL = 100


def _develop_motion(planned: _FramePlan, process: PassProcess | None, abort) -> None:
    """The motion-only passes of the frames a step skips before this one, from the second Blender."""
    for motion_plan, ticket in planned.motion:
        if motion_plan.reused is None:
            motion_plan.reused = develop(motion_plan, process.wait(ticket, None, abort))


def _built_ahead(
    planned: _FramePlan, process: PassProcess | None, reach: dict, size: tuple[int, int], progress, abort
) -> tuple[PassSet, PreparedFrame]:
    """A planned frame's passes (and the motion of the frames its step skips) and its built frame, on the
    thread of a frame run ahead; the first one asks the engine host how many jobs it runs at once
    (`reach["ahead"]`, bounded by `AHEAD_BUDGET_BYTES`)."""
    passes = planned.passes or passes_from_second_blender(
        planned.checked, process, progress, abort, planned.inverse_ticket, planned.ticket
    )
    _develop_motion(planned, process, abort)
    prepared = build(planned.checked, passes)
    by_memory = AHEAD_BUDGET_BYTES // max(1, size[0] * size[1] * AHEAD_BYTES_PER_PIXEL)
    reach["ahead"] = max(1, min(_engine_slots(prepared.runner), by_memory))
    return passes, prepared


def _early_engine(
    planned: _FramePlan, process: PassProcess | None, reach: dict, size: tuple[int, int]
) -> BackgroundJob:
    """Start a planned frame's passes, build and engine run now, on a thread of its own: nothing in them
    depends on the frames before it, so several frames' engine jobs run at once on a worker that has several
    replicas. The first one asks the engine host how many jobs it runs at once (`reach["ahead"]`, bounded by
    `AHEAD_BUDGET_BYTES`)."""

    def work(progress, abort):
        passes, prepared = _built_ahead(planned, process, reach, size, progress, abort)
        request = prepared.request
        result = _run_engine(prepared, request, progress, abort)
        return passes, replace(prepared, runner=_answered(prepared.runner, request, result)), None

    return BackgroundJob(work, name="stylepass-frame-ahead").start()


@dataclass(frozen=True)
class _AheadContext:
    """What a continued frame run ahead reads of the shot (`_early_continued`)."""

    store: _Store
    span: _Span
    rendered: set[int]
    current: dict[int, bool]  # frames found current: their pictures are on disk, not made in this run
    continued: object  # the engine's settings for a continued frame


@dataclass(frozen=True)
class _RanAhead:
    """A continued frame's engine run, made ahead from keyframe `first` (an index) with `request`."""

    first: int
    request: object
    result: StyleResult


def _early_continued(
    planned: _FramePlan, index: int, process: PassProcess | None, reach: dict, size: tuple[int, int],
    shot: _AheadContext,
) -> BackgroundJob:  # fmt: skip
    """Like `_early_engine` for a frame that continues from the keyframe before it (diffusion with coherence):
    its passes and motion at once, then it waits for that keyframe's picture and the motion of every frame
    between, and runs the engine from the keyframe carried here exactly as `launch` would. So the frames of a
    span run on several replicas at once. When a cut found meanwhile moves its keyframe, it stops waiting and
    leaves the frame to `launch`."""
    store, span = shot.store, shot.span
    frames = span.frames
    frame = frames[index]

    def work(progress, abort):
        passes, prepared = _built_ahead(planned, process, reach, size, progress, abort)
        for motion_plan, _ticket in planned.motion:
            store.add_motion(motion_plan.reused.frame, motion_plan.reused.raw)
        store.add_motion(frame, passes.raw)
        first = span.keyframe_before(index)
        if first is None:
            return passes, prepared, None

        def ready() -> bool | None:
            if span.keyframe_before(index) != first or span.roles.get(index) == "cut":
                return None  # moved by a new cut
            key = frames[first]
            made = key in store.pictures or shot.current.get(key, False)
            return made and store.motion_ready(key, frame)

        with store.changed:
            while (state := ready()) is False:
                check_abort(abort)
                store.changed.wait(0.1)
        if state is None:
            return passes, prepared, None
        beauty = _fit(passes.maps["beauty"], store.size)
        request = _continued(
            store, frames[first], frame, shot.rendered, beauty, prepared.request, shot.continued
        )
        result = _run_engine(prepared, request, progress, abort)
        return passes, prepared, _RanAhead(first, request, result)

    return BackgroundJob(work, name="stylepass-frame-ahead").start()


def _continued(store: _Store, key: int, frame: int, rendered: set[int], beauty, request, continued):
    """`request` made to continue from keyframe `key`'s picture carried to `frame` along the exact motion (the
    fresh `beauty` where it is not seen), with the engine's continuation settings and the same seed: the
    engine repaints what is new without re-inventing what is there."""
    vectors_span, depths_span = _motion_span(store, key, frame, rendered)
    back = fusion.carry_maps(vectors_span, depths_span, forward=False)[0][-1]
    start = np.where(back.valid[..., None], back.sample(store.picture(key)), beauty)
    start = _fit(start.astype(np.float32), request.beauty.shape[:2])
    return replace(request, beauty=start, settings=continued)


def _run_engine(prepared: PreparedFrame, request, progress, abort) -> StyleResult:
    """The frame's engine on `request`, its failures reported as `run` reports them."""
    try:
        return prepared.runner(request.engine, request, progress, abort)
    except (ValueError, OSError, MemoryError) as error:
        raise StylepassError(f"The {prepared.engine} engine failed: {error}") from error


def _early_result(early: BackgroundJob, progress, abort) -> tuple[PassSet, PreparedFrame, _RanAhead | None]:
    """What `_early_engine` or `_early_continued` made, once it is done (its progress shown here meanwhile)."""
    while not early.wait(0.05):
        check_abort(abort)
        for event in early.poll():
            progress.update(event.done, event.total, event.message)
            if event.preview is not None and hasattr(progress, "preview"):
                progress.preview(*event.preview)
    if early.error is not None:
        raise early.error
    return early.result


def _engine_slots(runner) -> int:
    """How many jobs the runner's engine host runs at once: a worker's `slots` (its replicas), else one."""
    slots = getattr(getattr(runner, "__self__", None), "slots", None)
    try:
        return max(1, int(slots())) if callable(slots) else 1
    except Exception:  # an old worker, or one that does not answer: one at a time, as before
        return 1


def _answered(runner, request, result):
    """`runner`, except that `request` (already run ahead) gets `result` at once."""

    def run(engine, given, progress=None, abort=None):
        if given is request:
            return result
        return runner(engine, given, progress, abort)

    return run


def stylise_animation(
    scene, view_layer, run_settings: RunSettings, anim: AnimationOptions, prefs=None
) -> AnimationSummary:
    """Run every step synchronously (background mode, scripts, farms)."""
    summary = AnimationSummary()
    steps = animation_steps(scene, view_layer, run_settings, anim, prefs=prefs, summary=summary)
    run_to_end(steps, lambda step: print(f"Stylepass: {step.done}/{step.total} {step.message}", flush=True))
    return summary
