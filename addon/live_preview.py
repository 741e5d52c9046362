# SPDX-License-Identifier: GPL-3.0-or-later
"""The live style preview: a 3D viewport shows the stylised picture of what it shows now.

Per viewport with the preview on (`start(space)` / `stop(space)`), a `LiveView` holds a `LiveScheduler` (one
job in flight, one latest-wins slot), a `Capturer` and the last finished picture as a GPU texture. Three
things drive it, all on the main thread:

* the draw handler, on every redraw of a viewport: compares the view and window matrices with the last ones
  (a few tuples, no pixels read) to see an orbit, pan or zoom, then draws the last finished texture (opacity,
  wipe) and the readout. It never captures and never touches a datablock, so showing a picture cannot
  trigger a depsgraph update;
* depsgraph and frame-change handlers and the settings' update callbacks: an edit anywhere (geometry, materials, lights,
  the timeline, a Stylepass setting) marks every live view out of date;
* a timer (`TICK_SECONDS`): collects a finished job, and when a view is out of date and no job is running,
  captures it (so the picture started is the freshest) and submits it; identical captures hash the same, so
  a selection click or a return to a view already shown costs no job.

The engine runs where Stylise Frame runs it (`stylise.engine_inputs`: in process on a thread for the neural
style, through the warm worker for diffusion with its fast live preset), on the same settings, with
Stylepass's own finish (Strength, Keep Scene Colours, the object selection) in memory. Live requests write
no files. Turning the preview off cancels the job in flight and drops everything at once.
"""

import time
from dataclasses import dataclass

import blf
import bpy
import gpu
import numpy as np
from bpy.app.handlers import persistent
from gpu_extras.batch import batch_for_shader

from stylepass_core import imageops
from stylepass_core.engine_api import StyleRequest
from stylepass_core.errors import StylepassError
from stylepass_core.jobs import BackgroundJob
from stylepass_core.live_scheduler import LiveScheduler, Shown
from stylepass_core.settings import LiveSettings, SettingsError
from stylepass_core.stylise_job import EngineRunner, Finish

from . import properties, settings, stylise, versions
from .live_capture import Capturer, ViewFrame, frame_of, picture_rect, rect_minus
from .pass_render import renderable_objects

THREAD_NAME = "stylepass-live"
TICK_SECONDS = 0.02
SLOW_RECAPTURE = 0.1  # while a slow engine waits for edits to settle, capture at most this often
READOUT_REFRESH = 0.5  # seconds between readout redraws while work goes on


@dataclass
class LiveRequest:
    """One captured view ready for the engine thread: plain data only."""

    request: StyleRequest
    finish: Finish
    runner: EngineRunner
    frame: ViewFrame


def _run(live: LiveRequest):
    def work(progress, abort):
        result = live.runner(live.request.engine, live.request, progress, abort)
        image = live.finish.apply(result.image)
        return np.clip(image, 0.0, 1.0).astype(np.float32), live, result.info

    return work


def _start_job(live: LiveRequest) -> BackgroundJob:
    return BackgroundJob(_run(live), name=THREAD_NAME).start()


class LiveView:
    """One viewport's live preview."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.scheduler = LiveScheduler(_start_job)
        self.capturer = Capturer()
        self.out_of_date = True
        self.view_signature: tuple | None = None
        self.texture: gpu.types.GPUTexture | None = None
        self.picture: np.ndarray | None = None  # the shown picture, (H, W, 3) float32, row 0 at the top
        self.picture_camera = False  # the shown picture is the camera's frame
        self.shown_request: StyleRequest | None = None
        self.shown_info: dict = {}
        self.error = ""
        self.last_capture = 0.0
        self.last_readout = 0.0
        self.captures = 0
        self.shown_count = 0
        self.capture_seconds: list[float] = []  # main-thread seconds of recent captures
        self.draw_seconds: list[float] = []  # main-thread seconds of recent redraws (change check + draw)
        self._inputs: tuple | None = None  # (generation, RunSettings, EngineInputs, settings, key part)
        self.drawn_look: tuple | None = None  # (opacity, wipe) of the last redraw

    # -- timer side -----------------------------------------------------------------------------------------

    def step(self, found: tuple, generation: int) -> bool:
        """Collect, capture and submit as needed; True when the viewport should redraw."""
        now = time.monotonic()
        redraw = False
        # The view is also checked here, not only when the viewport redraws: the capture (and the engine)
        # can start before Blender's own redraw of the orbit step, which on a software GPU takes ~120 ms.
        self.see_view(found[3], found[2].region_3d)
        edited = self.out_of_date
        shown = self.scheduler.tick()
        if shown is not None:
            self._show(shown)
            redraw = True
        if self.scheduler.errors:
            error = self.scheduler.errors[-1]
            self.scheduler.errors.clear()
            self.error = (
                str(error) if isinstance(error, StylepassError) else f"{type(error).__name__}: {error}"
            )
            redraw = True
        slow = (self.scheduler.stats.mean_job or 0.0) > self.scheduler.slow_job
        if (
            self.out_of_date
            and not self.scheduler.in_flight
            and (not slow or now - self.last_capture >= SLOW_RECAPTURE)
        ):
            self.out_of_date = False
            self.last_capture = now
            redraw |= self._capture_and_submit(found, generation)
        if edited and _live_settings(found[0].scene).look != self.drawn_look:
            redraw = True  # opacity or wipe changed: redraw, though no job starts
        # The readout's "working…" is refreshed while a slow job runs; a job start alone asks for no redraw
        # (each redraw delays the picture on its way, and the new picture redraws anyway).
        if self.scheduler.working and now - self.last_readout >= READOUT_REFRESH:
            redraw = True
        if redraw:
            self.last_readout = now
        return redraw

    def _capture_and_submit(self, found: tuple, generation: int) -> bool:
        window, _area, space, region = found
        scene, view_layer = window.scene, window.view_layer
        try:
            run, inputs, engine, inputs_key = self._engine_inputs(scene, view_layer, generation)
            live = properties.read(scene.stylepass, LiveSettings)
            depsgraph = view_layer.depsgraph
            frame = frame_of(scene, depsgraph, region, space.region_3d, live.long_side)
            start = time.perf_counter()
            context = {
                "scene": scene,
                "view_layer": view_layer,
                "depsgraph": depsgraph,
                "space": space,
                "region": region,
            }
            captured = self.capturer.capture(
                context,
                frame,
                engine.control_maps(),
                run.passes,
                object_index=run.frame.object_filter != "ALL",  # the finish's object selection needs it
            )
            self.capture_seconds = [*self.capture_seconds[-63:], time.perf_counter() - start]
            self.captures += 1
        except (StylepassError, SettingsError) as error:
            self.error = str(error)
            return True
        request = StyleRequest(
            beauty=captured.colour,
            settings=engine,
            controls=captured.maps,
            images=inputs.pictures,
            seed=run.frame.seed,
        )
        finish = Finish(
            frame=run.frame,
            beauty=captured.colour,
            object_index=captured.object_index,
            selection=_selection_indices(view_layer, inputs.selected)
            if captured.object_index is not None
            else (),
        )
        self.error = ""
        self.scheduler.submit(
            f"{inputs_key}:{captured.digest()}", LiveRequest(request, finish, inputs.runner, frame)
        )
        self.scheduler.tick()  # starts it now when nothing runs
        return False

    def _engine_inputs(self, scene, view_layer, generation: int):
        """The run's settings and checked engine inputs, read again only after an edit (not per orbit step)."""
        if self._inputs is None or self._inputs[0] != generation:
            prefs = settings.preferences()
            run = stylise.RunSettings.from_scene(scene, prefs)
            inputs = stylise.engine_inputs(scene, view_layer, run, prefs)
            engine = inputs.settings.live()
            key = repr(
                (engine.to_plain(), run.frame.values(), sorted(inputs.pictures), _digests(inputs.pictures))
            )
            self._inputs = (generation, run, inputs, engine, str(hash(key)))
        _, run, inputs, engine, key = self._inputs
        return run, inputs, engine, key

    def _show(self, shown: Shown) -> None:
        image, live, info = shown.result
        height, width = image.shape[:2]
        rgba = np.empty((height, width, 4), np.float32)
        rgba[..., :3] = image[::-1]  # GPU rows start at the bottom
        if versions.VIEWPORT_OVERLAY_ENCODES_SRGB:
            rgba[..., :3] = imageops.srgb_to_linear(rgba[..., :3])
        rgba[..., 3] = 1.0
        buffer = gpu.types.Buffer("FLOAT", rgba.size, rgba.ravel())
        self.texture = gpu.types.GPUTexture((width, height), format="RGBA16F", data=buffer)
        self.picture = image
        self.shown_count += 1
        self.picture_camera = live.frame.camera
        # What the shown picture was made from, and the engine's facts (models loaded, notes): for the tests.
        self.shown_request = live.request
        self.shown_info = info

    # -- draw side ------------------------------------------------------------------------------------------

    def see_view(self, region: bpy.types.Region, region_3d: bpy.types.RegionView3D) -> None:
        """Mark the view out of date when the viewport's matrices or shape changed since the last redraw."""
        signature = (
            tuple(map(tuple, region_3d.view_matrix)),
            tuple(map(tuple, region_3d.window_matrix)),
            region.width,
            region.height,
            region_3d.view_perspective,
        )
        if signature != self.view_signature:
            self.view_signature = signature
            self.out_of_date = True

    def draw(self, scene, region, region_3d) -> None:
        live = _live_settings(scene)
        self.drawn_look = live.look
        # The readout first, and the picture around it: text drawn after a full-viewport quad waits for the
        # quad's fill (4-5 ms per redraw on a software GPU), text drawn before it does not.
        readout = _draw_readout(self, region)
        if self.texture is not None and live.live_opacity > 0.0 and live.live_wipe > 0.0:
            rect = picture_rect(scene, region, region_3d, self.picture_camera)
            if rect is not None:
                _draw_picture(self.texture, rect, live.live_opacity, live.live_wipe, readout)

    def stop(self) -> None:
        self.scheduler.stop()
        self.capturer.free()
        self.texture = None


def _digests(pictures: dict) -> tuple:
    from stylepass_core.stylise_job import array_digest

    return tuple(array_digest(pictures[name]) for name in sorted(pictures))


def _selection_indices(view_layer, selected: frozenset[str]) -> tuple[int, ...]:
    return tuple(i for i, obj in enumerate(renderable_objects(view_layer), start=1) if obj.name in selected)


def _live_settings(scene) -> LiveSettings:
    try:
        return properties.read(scene.stylepass, LiveSettings)
    except SettingsError:
        return LiveSettings()  # a value set out of range from Python: the readout says nothing, defaults draw


# -- drawing ------------------------------------------------------------------------------------------------


def _draw_picture(texture, rect, opacity: float, wipe: float, hole: tuple | None) -> None:
    """The picture in `rect` (region pixels), its left `wipe` share only, with `hole` (the readout) left out."""
    x0, y0, x1, y1 = rect
    split = x0 + (x1 - x0) * wipe
    positions, coords, indices = [], [], []
    for px0, py0, px1, py1 in rect_minus((x0, y0, split, y1), hole):
        first = len(positions)
        for x, y in ((px0, py0), (px1, py0), (px1, py1), (px0, py1)):
            positions.append((x, y))
            coords.append(((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)))
        indices += [(first, first + 1, first + 2), (first + 2, first + 3, first)]
    shader = gpu.shader.from_builtin("IMAGE_COLOR")
    batch = batch_for_shader(shader, "TRIS", {"pos": positions, "texCoord": coords}, indices=indices)
    gpu.state.blend_set("ALPHA" if opacity < 1.0 else "NONE")  # an opaque picture needs no blending
    shader.bind()
    shader.uniform_sampler("image", texture)
    shader.uniform_float("color", (1.0, 1.0, 1.0, opacity))
    batch.draw(shader)
    if wipe < 1.0:  # the before/after line
        gpu.state.blend_set("ALPHA")
        line = gpu.shader.from_builtin("UNIFORM_COLOR")
        bar = batch_for_shader(
            line,
            "TRIS",
            {"pos": ((split - 1, y0), (split + 1, y0), (split + 1, y1), (split - 1, y1))},
            indices=((0, 1, 2), (2, 3, 0)),
        )
        line.bind()
        line.uniform_float("color", (1.0, 1.0, 1.0, 0.8))
        bar.draw(line)
    gpu.state.blend_set("NONE")


def readout_text(view: LiveView, now: float) -> str:
    """The small readout: frames per second, the last edit-to-pixels latency, and whether more is coming."""
    if view.error:
        return f"Stylepass Live: {view.error}"
    stats = view.scheduler.stats
    parts = ["Stylepass Live"]
    if stats.last_latency is None:
        parts.append("starting…")
    else:
        fps = stats.fps(now)
        # Pictures come only when the view or the scene changes: no recent ones means up to date, not slow.
        parts.append(f"{fps:.1f} fps" if fps > 0 or view.scheduler.working else "up to date")
        parts.append(f"{stats.last_latency * 1000:.0f} ms")
        if view.scheduler.working:
            parts.append("working…")
    return "  ·  ".join(parts)


def _draw_readout(view: LiveView, region) -> tuple[float, float, float, float]:
    """Draw the readout in the region's lower left corner; returns the box it needs (kept clear of the picture)."""
    scale = bpy.context.preferences.system.ui_scale
    font = 0
    blf.size(font, 12 * scale)
    text = readout_text(view, time.monotonic())
    x, y = 12 * scale, 12 * scale
    width, height = blf.dimensions(font, text)
    pad = 4 * scale
    blf.enable(font, blf.SHADOW)
    blf.shadow(font, 3, 0.0, 0.0, 0.0, 0.8)
    colour = (1.0, 0.45, 0.4, 1.0) if view.error else (1.0, 1.0, 1.0, 0.9)
    blf.color(font, *colour)
    blf.position(font, x, y, 0)
    blf.draw(font, text)
    blf.disable(font, blf.SHADOW)
    return x - pad, y - pad, x + width + pad, y + height + pad


# -- the registry -------------------------------------------------------------------------------------------


class _State:
    views: dict[int, LiveView] = {}
    generation = 0
    draw_handle = None


def _draw_handler() -> None:
    context = bpy.context
    space = context.space_data
    view = _State.views.get(space.as_pointer()) if space is not None else None
    if view is None or context.region_data is None:
        return
    start = time.perf_counter()
    view.see_view(context.region, context.region_data)
    view.draw(context.scene, context.region, context.region_data)
    view.draw_seconds = [*view.draw_seconds[-255:], time.perf_counter() - start]


def _find(key: int) -> tuple | None:
    """(window, area, space, region) of the 3D viewport whose space is `key`, while it is shown."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            space = area.spaces.active
            if area.type == "VIEW_3D" and space.as_pointer() == key:
                region = next((r for r in area.regions if r.type == "WINDOW"), None)
                if region is not None:
                    return window, area, space, region
    return None


def _tick() -> float | None:
    for key, view in list(_State.views.items()):
        found = _find(key)
        if found is None:  # the area was closed or shows another editor
            stop_key(key)
            continue
        try:
            if view.step(found, _State.generation):
                found[1].tag_redraw()
        except Exception as error:  # a bug: say so on the readout and drop the work; the next change retries
            import traceback

            traceback.print_exception(type(error), error, error.__traceback__)
            view.error = f"stopped after an internal error ({type(error).__name__}); see the system console"
            view.scheduler.stop()
            found[1].tag_redraw()
    return TICK_SECONDS if _State.views else None


def _edited(geometry_changed: frozenset[str] | set[str] = frozenset()) -> None:
    """Something the pictures depend on changed: every live view is out of date, its inputs read again."""
    _State.generation += 1
    for view in _State.views.values():
        view.out_of_date = True
        view.capturer.forget_geometry(geometry_changed)


@persistent
def _on_depsgraph_update(scene, depsgraph=None) -> None:
    changed = set()
    if depsgraph is not None:
        changed = {
            update.id.name
            for update in depsgraph.updates
            if update.is_updated_geometry and isinstance(update.id, bpy.types.Object)
        }
    _edited(changed)


@persistent
def _on_frame_change(scene, depsgraph=None) -> None:
    _edited()


@persistent
def _on_load(*_args) -> None:
    stop_all()


_HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update),
    (bpy.app.handlers.frame_change_post, _on_frame_change),
    (bpy.app.handlers.load_pre, _on_load),
)


def is_on(space) -> bool:
    return space is not None and space.as_pointer() in _State.views


def view_of(space) -> LiveView | None:
    return _State.views.get(space.as_pointer()) if space is not None else None


def start(space) -> LiveView:
    """Turn the live preview on in the viewport of `space` (a SpaceView3D)."""
    key = space.as_pointer()
    if key in _State.views:
        return _State.views[key]
    view = LiveView(key)
    _State.views[key] = view
    if _State.draw_handle is None:
        _State.draw_handle = bpy.types.SpaceView3D.draw_handler_add(_draw_handler, (), "WINDOW", "POST_PIXEL")
        for handlers, handler in _HANDLERS:
            if handler not in handlers:
                handlers.append(handler)
        properties.changed_listeners.append(_edited)  # a Stylepass setting changed
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=0.0)
    return view


def stop_key(key: int) -> None:
    """Turn the preview off in one viewport: the job in flight is cancelled, nothing more starts."""
    view = _State.views.pop(key, None)
    if view is not None:
        view.stop()
    if not _State.views:
        _shut_down()


def stop(space) -> None:
    stop_key(space.as_pointer())
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def stop_all() -> None:
    for key in list(_State.views):
        stop_key(key)
    _shut_down()


def _shut_down() -> None:
    if _State.draw_handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_State.draw_handle, "WINDOW")
        _State.draw_handle = None
    for handlers, handler in _HANDLERS:
        if handler in handlers:
            handlers.remove(handler)
    if _edited in properties.changed_listeners:
        properties.changed_listeners.remove(_edited)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)


def check_can_start(context) -> None:
    """Refuse to start with settings Stylise Frame would refuse (the message says what to change).

    Raises:
        StylepassError, SettingsError.
    """
    prefs = settings.preferences(context)
    run = stylise.RunSettings.from_scene(context.scene, prefs)
    properties.read(context.scene.stylepass, LiveSettings)
    stylise.engine_inputs(context.scene, context.view_layer, run, prefs)


PIN_NAME = "Stylepass Live Pin"


def pin(view: LiveView) -> bpy.types.Image:
    """Keep the live picture shown now as a new image (packed into the .blend), named 'Stylepass Live Pin'.

    A new image every time, so an earlier pin is never overwritten. Raises StylepassError without a picture.
    """
    if view.picture is None:
        raise StylepassError("The live preview has no picture yet: wait for the first one, then pin it.")
    height, width = view.picture.shape[:2]
    image = bpy.data.images.new(PIN_NAME, width, height, alpha=False)
    rgba = np.ones((height, width, 4), np.float32)
    # A byte image holds display values; Blender's rows start at the bottom.
    rgba[..., :3] = view.picture[::-1]
    image.pixels.foreach_set(rgba.ravel())
    image.pack()  # a generated image is otherwise lost when the file is saved
    return image
