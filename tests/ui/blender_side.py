# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender-side half of the real-UI tests: the scene, the measurements and the answers to the host.

Runs inside Debian's Blender UI (`blender --python blender_side.py`, after the session's boot script). It
never drives the UI itself: the host does that with xdotool, as a person would. Here:

1. On the first timer tick it builds a small scene (camera, ground, cube, sphere, cone, sun; 480x270;
   Cycles on the CPU; Stylepass's output folder in the session's /tmp folder).
2. A heartbeat (`bpy.app.timers`, every 10 ms) records the time of every tick, so the host can ask for the
   longest gap between two ticks in any window: a gap is time the main thread spent away from the event
   loop (drawing, or blocked in an operator). Times are `time.monotonic()`, the same clock as the host's.
3. Hooks that only watch: the workspace status text, the invoke/modal/escape calls of Stylepass's modal
   operators, Stylepass's per-frame `prepare` in the animation, every render, and every engine run. The
   engine hook can also slow the embedded engine down (sleeps in 50 ms steps, honours `abort` by raising
   `stylepass_core.engine_api.Aborted`), so ESC can be tested against a long engine job. Main-thread steps
   of Stylise Frame (scene copy, second Blender started and closed, passes published, finish, result
   shown) are timed, so a long heartbeat gap can be pinned on one of them; the heartbeat also samples the
   status bar's progress bar (`operators.modal.StatusBar`: fraction and text, on every change).
4. Every ~100 ms it writes `state.json`; the host writes `cmd-<n>.json` and gets `reply-<n>.json`.

Files (all in $STYLEPASS_UI_DIR, written atomically): state.json, cmd-<n>.json, reply-<n>.json.
Commands: gaps {t0, t1, overlap, inside}, compositor, engine {seconds}, scene {frame_start, frame_end, cursor,
pass_samples, resolution, percentage}, settings (a snapshot of render settings), show_image {width, height} (a
reference: an EXR in the render view, without Stylepass), progress {t0, t1}, calls {t0, t1}, redraw {what:
all|status, seconds}, prefs {developer_ui}, stylepass {values} (set scene.stylepass settings), live (the live preview's state), live_check {save} (the engine
again on the shown picture's input), live_diffusion {url, token, model, controlnet | off}, live_shown, edit {object, location | frame}, make_groups {groups} (style groups made with Add Style Group),
compositor_layers (the layers file and the Stylepass node's layer outputs), workspace {name} (the main
window's workspace and areas), stylepass_node (its selection and screen position), viewer {keep, selection}
(the Viewers fed from it; nodes the test made taken away again), node_editor {values} (the
compositor node editor's backdrop and sidebar), record {frame} (a stylised frame's whole record), comfyui
{prefs, engine, values, clear_lists} (the ComfyUI engine's preferences, settings and the pickers' lists),
remote_worker {prefs, scene, diffusion, cycles_samples} (the Remote Worker preferences and the scene's
diffusion settings), clipboard {text} (what Copy / Copy Data Path over a button put there), shutdown.
For bench/bench_live.py: live_trace {t0, t1, reset_view} (the live preview's captures, shown pictures, engine
runs and redraws in a window), orbit {degrees_per_second, seconds} (a steady turntable orbit from a timer),
view_turn {degrees} (one edit), view_set {elevation, heading, distance, target} (where the viewport looks
from), live_engine {repeats} (the engine alone on the shown input), engine_threads {threads} (an experiment),
redraw_cost {iterations, rounds, step_degrees} (region redraws with the preview's draw handler and without),
draw_parts {iterations, step_degrees} and capture_parts {repeats} (where the draw handler's and a capture's
time goes).
"""

import bisect
import functools
import glob
import itertools
import json
import math
import os
import sys
import tempfile
import threading
import time
import traceback
from array import array
from collections import deque

import bmesh
import bpy
from mathutils import Euler, Quaternion, Vector

UI_DIR = os.environ["STYLEPASS_UI_DIR"]
OUTPUT_DIR = os.path.join(UI_DIR, "out")
SCENE_NAME = "UITest"
HEARTBEAT = 0.01
STATE_EVERY = 0.1

TICKS = array("d")  # time of every heartbeat tick
EVENTS: list[dict] = []  # operator calls seen by the hooks: {"op", "call", "t", "status"/"seconds"}
STATUS: list[list] = []  # [time, text] of every workspace.status_text_set
ENGINE_RUNS: list[dict] = []  # every engine run: start, end, aborted, error
PREPARES: list[dict] = []  # Stylepass's per-frame prepare in the animation: start, end, frame
RENDERS: list[dict] = []  # every render on the main thread: start, end, how it ended
MODAL_RUNS: list[dict] = []  # every modal operator seen by the heartbeat: op, seen (first tick), gone
_modal_now: dict[str, dict] = {}
WINDOWS: list[list] = []  # [time, number of windows] at every change
PROGRESS: list[list] = []  # [time, StatusBar.fraction, StatusBar.text] at every change the heartbeat sees
CALLS: list[dict] = []  # timed steps of Stylepass: {"what", "start", "seconds", "main", "error"}
COMPOSITES: list[list] = []  # [start, end, "post"|"cancel"] of every compositor run
DRAWS: deque = deque(maxlen=4000)  # (time, what) of draws: the 3D viewport, Image Editors, the status bar
ERRORS: list[str] = []
HOOKS: dict[str, bool] = {}
SLOW = {"seconds": 0.0}
REDRAW = {"what": None, "until": 0.0, "next": 0.0, "count": 0}  # a reference load of redraws
_run = {"scene_ready": False, "last_state": 0.0, "stopped": False, "status_bar": None}
_undo: list = []  # how to take every hook away again (shutdown)


def _write(name: str, data: dict) -> None:
    path = os.path.join(UI_DIR, name)
    with open(path + ".tmp", "w") as stream:
        json.dump(data, stream)
    os.replace(path + ".tmp", path)


def _error(where: str) -> None:
    ERRORS.append(f"{where}: {traceback.format_exc(limit=4)}")
    del ERRORS[:-20]
    print(f"[blender_side] {where} failed", file=sys.stderr)
    traceback.print_exc()


# -- 1. The scene ----------------------------------------------------------------------------------------


def _material(name: str, colour: tuple[float, float, float]) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    material.diffuse_color = (*colour, 1.0)
    try:
        material.use_nodes = True  # deprecated (always on) in 5.x
        principled = material.node_tree.nodes.get("Principled BSDF")
        if principled is not None:
            principled.inputs["Base Color"].default_value = (*colour, 1.0)
    except (AttributeError, KeyError, TypeError):
        pass
    return material


def _mesh_object(scene, name: str, build, location, colour) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    shape = bmesh.new()
    build(shape)
    shape.to_mesh(mesh)
    shape.free()
    mesh.materials.append(_material(name, colour))
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    scene.collection.objects.link(obj)
    return obj


def build_scene() -> None:
    """A small scene an artist could block out in a minute; replaces the factory startup's objects."""
    window = bpy.context.window_manager.windows[0]
    scene = window.scene
    scene.name = SCENE_NAME
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)

    _mesh_object(
        scene, "Ground", lambda b: bmesh.ops.create_grid(b, x_segments=2, y_segments=2, size=6), (0, 0, 0),
        (0.35, 0.5, 0.3),
    )  # fmt: skip
    _mesh_object(scene, "Cube", lambda b: bmesh.ops.create_cube(b, size=2), (0, 0, 1), (0.8, 0.25, 0.2))
    _mesh_object(
        scene, "Sphere", lambda b: bmesh.ops.create_uvsphere(b, u_segments=32, v_segments=16, radius=1),
        (-2.5, 1.2, 1), (0.2, 0.35, 0.85),
    )  # fmt: skip
    _mesh_object(
        scene, "Cone",
        lambda b: bmesh.ops.create_cone(b, cap_ends=True, segments=24, radius1=1, radius2=0, depth=2.5),
        (2.5, 1.5, 1.25), (0.9, 0.75, 0.2),
    )  # fmt: skip

    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location = (7.5, -7.5, 5.5)
    camera.rotation_euler = (Vector((0, 0, 0.8)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(camera)
    scene.camera = camera
    sun_data = bpy.data.lights.new("Sun", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("Sun", sun_data)
    sun.rotation_euler = (0.7, 0.2, 0.6)
    scene.collection.objects.link(sun)

    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 480, 270, 100
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 8
    render.use_compositing = True
    render.filepath = os.path.join(UI_DIR, "render", "")
    scene.frame_start, scene.frame_end, scene.frame_current = 1, 3, 1
    scene.cursor.location = (0, 0, 0)
    if hasattr(scene, "stylepass"):  # without the extension the tests fail on their own checks
        scene.stylepass.output_dir = os.path.join(OUTPUT_DIR, "")


# -- 3. Hooks that only watch ----------------------------------------------------------------------------


def _stylepass_module(suffix: str):
    """A module of the installed extension (`bl_ext.<repo>.stylepass.<suffix>`), or None."""
    for name, module in list(sys.modules.items()):
        if name.startswith("bl_ext.") and name.endswith(f".stylepass.{suffix}"):
            return module
    return None


def _wrap(owner, name: str, make, hook: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        HOOKS[hook] = False
        return
    setattr(owner, name, make(original))
    _undo.append(lambda: setattr(owner, name, original))
    HOOKS[hook] = True


def _watch_status() -> None:
    def make(original):
        def status_text_set(self, text):
            STATUS.append([time.monotonic(), text if text is None or isinstance(text, str) else "<draw>"])
            del STATUS[:-200]
            return original(self, text)

        return status_text_set

    _wrap(bpy.types.WorkSpace, "status_text_set", make, "status_text")


def _watch_operator(class_name: str) -> None:
    cls = getattr(bpy.types, class_name, None)
    if cls is None:
        HOOKS[class_name] = False
        return

    def record(call, start, status):
        now = time.monotonic()
        # PASS_THROUGH and RUNNING_MODAL keep a modal operator running; these two end it.
        ended = isinstance(status, set) and bool(status & {"FINISHED", "CANCELLED"})
        if call != "modal" or ended:  # modal runs 20 times a second: only its end is news
            EVENTS.append(
                {
                    "op": class_name,
                    "call": call,
                    "t": start,
                    "seconds": now - start,
                    "status": sorted(status) if isinstance(status, set) else None,
                    "ended": ended,
                }
            )
        return status

    # Blender passes a Python operator method as many arguments as its signature names, so each wrapper
    # names them (a `*args` wrapper would get no event).
    def timed(call):
        def make(original):
            if call in ("invoke", "modal"):

                def wrapper(self, context, event):
                    start = time.monotonic()
                    return record(call, start, original(self, context, event))

            else:

                def wrapper(self, context):
                    start = time.monotonic()
                    return record(call, start, original(self, context))

            return wrapper

        return make

    for call in ("invoke", "execute", "modal", "escape", "cancel"):
        if hasattr(cls, call):
            _wrap(cls, call, timed(call), f"{class_name}.{call}")


def _watch_prepare() -> None:
    animation = _stylepass_module("addon.animation")
    if animation is None:
        HOOKS["animation.prepare"] = False
        return

    def make(original):
        def prepare(scene, *args, **kwargs):
            record = {"start": time.monotonic(), "end": None, "frame": scene.frame_current}
            PREPARES.append(record)
            try:
                return original(scene, *args, **kwargs)
            finally:
                record["end"] = time.monotonic()

        return prepare

    _wrap(animation, "prepare", make, "animation.prepare")


def _on_render(kind: str):
    @bpy.app.handlers.persistent
    def handler(*_args):
        now = time.monotonic()
        windows = len(bpy.context.window_manager.windows)
        if kind == "pre":
            RENDERS.append({"start": now, "end": None, "how": None, "windows": [windows]})
        elif RENDERS and RENDERS[-1]["end"] is None:
            RENDERS[-1].update(end=now, how=kind)
            RENDERS[-1]["windows"].append(windows)

    return handler


def _watch_renders() -> None:
    for kind, handlers in (
        ("pre", bpy.app.handlers.render_pre),
        ("post", bpy.app.handlers.render_post),
        ("cancel", bpy.app.handlers.render_cancel),
    ):
        handler = _on_render(kind)
        handlers.append(handler)
        _undo.append(lambda handlers=handlers, handler=handler: handlers.remove(handler))
    HOOKS["renders"] = True
    # The compositor's own runs (a job on another thread, started when its node tree or an image it uses
    # changes): they compete with the UI for the CPU.
    for kind in ("pre", "post", "cancel"):
        handlers = getattr(bpy.app.handlers, f"composite_{kind}", None)
        if handlers is None:
            HOOKS["composites"] = False
            continue

        @bpy.app.handlers.persistent
        def handler(*_args, kind=kind):
            if kind == "pre":
                COMPOSITES.append([time.monotonic(), None])
            else:
                _end_composite(kind)

        handlers.append(handler)
        _undo.append(lambda handlers=handlers, handler=handler: handlers.remove(handler))
        HOOKS["composites"] = True


def _end_composite(kind: str) -> None:
    if COMPOSITES and COMPOSITES[-1][1] is None:
        COMPOSITES[-1][1] = time.monotonic()
        COMPOSITES[-1].append(kind)


def _watch_engine() -> None:
    """Record every run of the embedded engine; sleep first when SLOW["seconds"] > 0 (abort honoured)."""
    from stylepass_core import engine_api  # the copy the extension's wheel installed

    engine = engine_api.get_engine("NEURAL_STYLE")
    original = type(engine).run

    def run(request, progress=None, abort=None):
        record = {"start": time.monotonic(), "end": None, "aborted": False, "error": None}
        ENGINE_RUNS.append(record)
        try:
            deadline = record["start"] + SLOW["seconds"]
            while time.monotonic() < deadline:
                if abort is not None and abort.is_set():
                    record["aborted"] = True
                    raise engine_api.Aborted("aborted (slow engine of the UI tests)")
                time.sleep(0.05)
            return original(engine, request, progress, abort)
        except BaseException as error:
            record["error"] = f"{type(error).__name__}: {error}"
            raise
        finally:
            record["end"] = time.monotonic()

    engine.run = run  # the warm instance get_engine() hands to every frame
    _undo.append(lambda: engine.__dict__.pop("run", None))
    HOOKS["engine"] = True


def _time_calls(owner, name: str, what: str, drawing: bool = False) -> None:
    """Record every call of `owner.<name>` (a module's function, or a class's method or classmethod) in
    CALLS: start, seconds, thread, error. Only watches: the call's arguments and result pass through.
    `drawing`: a `draw(self, context)` that Blender calls (it passes as many arguments as the signature
    names, so the wrapper names them)."""
    raw = vars(owner).get(name)
    inherited = raw is None and isinstance(owner, type) and callable(getattr(owner, name, None))
    if inherited:  # a method from a mixin: wrapped on this class, removed again on undo
        raw = getattr(owner, name)
    if raw is None:
        HOOKS[what] = False
        return
    function = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw

    def timed(*args, **kwargs):
        record = {
            "what": what,
            "start": time.monotonic(),
            "seconds": None,
            "main": threading.current_thread() is threading.main_thread(),
            "error": None,
        }
        CALLS.append(record)
        del CALLS[:-3000]
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            record["error"] = f"{type(error).__name__}: {error}"[:300]
            raise
        finally:
            record["seconds"] = time.monotonic() - record["start"]

    if drawing:
        timed_any = timed

        def timed(self, context):
            return timed_any(self, context)

    functools.update_wrapper(timed, function)
    setattr(owner, name, type(raw)(timed) if isinstance(raw, (classmethod, staticmethod)) else timed)
    _undo.append(lambda: delattr(owner, name) if inherited else setattr(owner, name, raw))
    HOOKS[what] = True


def _watch_steps() -> None:
    """Time the main-thread steps of Stylise Frame (and the pass render on its thread), by the names the
    operator calls them through."""
    pass_process = _stylepass_module("addon.pass_process")
    stylise = _stylepass_module("addon.stylise")
    images = _stylepass_module("addon.images")
    operator = _stylepass_module("operators.stylise")
    if pass_process is not None:
        _time_calls(pass_process, "write_scene_copy", "write_scene_copy")
        for method in ("start", "render", "close", "kill"):
            _time_calls(pass_process.PassProcess, method, f"PassProcess.{method}")
    if stylise is not None:
        # Stylise Frame's steps, and the parts of its main-thread check
        for function in (
            "check", "render_and_run", "finish", "publish", "plan_passes", "missing_images", "_pictures",
            "_check_model_files",
        ):  # fmt: skip
            if function in vars(stylise):
                _time_calls(stylise, function, f"stylise.{function}")
    display_colour = _stylepass_module("addon.display_colour")
    if display_colour is not None:
        for function in ("compositor_target", "_inverse"):
            if function in vars(display_colour):
                _time_calls(display_colour, function, f"display_colour.{function}")
    runtime = _stylepass_module("addon.runtime")
    if runtime is not None and hasattr(runtime, "RUNTIME"):
        _time_calls(type(runtime.RUNTIME), "runner_for", "RUNTIME.runner_for")
        frame_job = getattr(stylise, "FrameJob", None)  # the operator's main-thread steps, where it has them
        if frame_job is not None:
            for method in ("__init__", "complete", "_close_process", "cancel", "close"):
                if method in vars(frame_job):
                    _time_calls(frame_job, method, f"FrameJob.{method}")
    if images is not None:
        for function in ("show_result_soon", "show_result"):
            _time_calls(images, function, f"images.{function}")
    if operator is not None and "publish" in vars(operator):
        _time_calls(operator, "publish", "operators.stylise.publish")
    for class_name in ("STYLEPASS_OT_stylise", "STYLEPASS_OT_stylise_animation"):
        cls = getattr(bpy.types, class_name, None)
        if cls is not None:
            for method in ("_start", "step"):
                if method in vars(cls):
                    _time_calls(cls, method, f"{class_name}.{method}")


def _watch_ui_code() -> None:
    """Time Stylepass's own drawing code (panels, menus, the status bar's progress: Python that runs inside
    Blender's redraws)."""
    for base, methods in ((bpy.types.Panel, ("draw", "draw_header")), (bpy.types.Menu, ("draw",))):
        for cls in base.__subclasses__():
            if not (cls.__module__.startswith("bl_ext.") and ".stylepass." in cls.__module__ + "."):
                continue
            for method in methods:
                if callable(getattr(cls, method, None)):
                    _time_calls(cls, method, f"{cls.__name__}.{method}", drawing=True)
    modal = _stylepass_module("operators.modal")
    if modal is not None and hasattr(modal, "draw_status_progress"):
        # Appended to the status bar header by reference: wrap it there, not on the module.
        header = bpy.types.STATUSBAR_HT_header
        functions = getattr(header.draw, "_draw_funcs", None)
        original = modal.draw_status_progress
        if functions is not None and original in functions:
            _time_calls(modal, "draw_status_progress", "draw_status_progress")
            timed = modal.draw_status_progress
            functions[functions.index(original)] = timed
            _undo.append(lambda: functions.__setitem__(functions.index(timed), original))


def _draw_marker(what: str):
    def mark(*_args):
        DRAWS.append((time.monotonic(), what))

    return mark


def _watch_draws() -> None:
    """Time stamps of the draws of the 3D viewport (and its sidebar), Image Editors, the Properties editor,
    the Outliner, the timeline and the status bar (a gap that holds them was, at least partly, spent
    drawing them)."""
    for space, region, what in (
        (bpy.types.SpaceView3D, "WINDOW", "view3d"),
        (bpy.types.SpaceView3D, "UI", "view3d_sidebar"),
        (bpy.types.SpaceImageEditor, "WINDOW", "image"),
        (bpy.types.SpaceProperties, "WINDOW", "properties"),
        (bpy.types.SpaceOutliner, "WINDOW", "outliner"),
        (bpy.types.SpaceDopeSheetEditor, "WINDOW", "timeline"),
    ):
        handle = space.draw_handler_add(_draw_marker(what), (), region, "POST_PIXEL")
        _undo.append(
            lambda space=space, handle=handle, region=region: space.draw_handler_remove(handle, region)
        )
    header = bpy.types.STATUSBAR_HT_header
    mark = _draw_marker("statusbar")
    header.append(mark)
    _undo.append(lambda: header.remove(mark))
    HOOKS["draws"] = True


def install_hooks() -> None:
    for install in (
        _watch_status, _watch_prepare, _watch_renders, _watch_engine, _watch_steps, _watch_ui_code, _watch_draws,
    ):  # fmt: skip
        try:
            install()
        except Exception:
            HOOKS[install.__name__.removeprefix("_watch_")] = False
            _error(install.__name__)
    for class_name in ("STYLEPASS_OT_stylise", "STYLEPASS_OT_stylise_animation"):
        try:
            _watch_operator(class_name)
        except Exception:
            _error(f"watch {class_name}")


# -- 2. and 4. Heartbeat, state, commands ----------------------------------------------------------------


def gaps(t0: float, t1: float, overlap: bool = False, inside: bool = False) -> dict:
    """The longest gap between two heartbeat ticks among the gaps that begin in [t0, t1) (time the main
    thread was away from the event loop, counted from something that happened in the window), with
    `inside` only those that also end by t1, or with `overlap` among all gaps that overlap the window."""
    first = bisect.bisect_right(TICKS, t0) if overlap else bisect.bisect_left(TICKS, t0) + 1
    first = max(1, first)
    last = bisect.bisect_right(TICKS, t1) - 1 if inside else bisect.bisect_left(TICKS, t1)
    last = min(len(TICKS) - 1, last)
    found = sorted(((TICKS[i] - TICKS[i - 1], TICKS[i - 1]) for i in range(first, last + 1)), reverse=True)
    found = found[:5]
    return {
        "t0": t0,
        "t1": t1,
        "ticks": max(0, last - first + 1),
        "max_gap": found[0][0] if found else None,
        "max_gap_at": found[0][1] if found else None,
        "top": [[round(gap, 4), at] for gap, at in found],
        "blame": [_blame(at, gap) for gap, at in found],
    }


def _blame(at: float, gap: float) -> dict:
    """What the main thread did in the gap that began at `at`: Stylepass's timed main-thread steps and
    operator calls that overlap it, draws seen in it, window and status text changes. Times are seconds
    after the gap's start."""
    end = at + gap

    def overlaps(start, seconds):
        return seconds is not None and start < end and start + seconds > at

    calls = [
        [c["what"], round(c["start"] - at, 3), round(c["seconds"], 3)]
        for c in CALLS
        if c["main"] and overlaps(c["start"], c["seconds"])
    ]
    calls += [
        [f"{e['op']}.{e['call']}", round(e["t"] - at, 3), round(e["seconds"], 3)]
        for e in EVENTS
        if overlaps(e["t"], e["seconds"])
    ]
    draws: dict[str, int] = {}
    for t, what in DRAWS:
        if at <= t <= end:
            draws[what] = draws.get(what, 0) + 1
    calls += [
        ["compositor (job)", round(start - at, 3), round(finish - start, 3) if finish else None]
        for start, finish, *_kind in COMPOSITES
        if start < end and (finish is None or finish > at)
    ]
    return {
        "gap": round(gap, 4),
        "at": at,
        "calls": sorted(calls, key=lambda c: c[1]),
        "draws": draws,
        "windows": [[round(t - at, 3), n] for t, n in WINDOWS if at <= t <= end + 0.02],
        "status": [[round(t - at, 3), text] for t, text in STATUS if at <= t <= end],
    }


def render_settings() -> dict:
    """A snapshot of the scene's render settings a pass render could touch (to compare before and after)."""
    scene = bpy.data.scenes[SCENE_NAME]
    render, view_layer = scene.render, scene.view_layers[0]
    return {
        "engine": render.engine,
        "cycles_samples": scene.cycles.samples,
        "cycles_device": scene.cycles.device,
        "resolution": [render.resolution_x, render.resolution_y, render.resolution_percentage],
        "file_format": render.image_settings.file_format,
        "color_depth": render.image_settings.color_depth,
        "film_transparent": render.film_transparent,
        "use_compositing": render.use_compositing,
        "filepath": render.filepath,
        "frame_current": scene.frame_current,
        "camera": scene.camera.name if scene.camera else None,
        "view_transform": scene.view_settings.view_transform,
        "passes": {
            name: getattr(view_layer, name)
            for name in ("use_pass_z", "use_pass_normal", "use_pass_object_index", "use_pass_vector")
        },
        "pass_samples": scene.stylepass.pass_samples if hasattr(scene, "stylepass") else None,
    }


def show_image(width: int, height: int) -> dict:
    """Blender's own cost of showing a picture the way Stylepass shows its result, without Stylepass: an EXR
    of that size written here, loaded from its file and shown in the render view (`render.view_show`, a new
    window as F11 opens it). The window is opened from a timer, as Stylepass's result is."""
    import numpy as np

    path = os.path.join(UI_DIR, f"reference-{width}x{height}.exr")
    if not os.path.exists(path):
        made = bpy.data.images.new("UI test reference", width, height, float_buffer=True)
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
        pixels = np.stack([columns / width, rows / height, np.full_like(rows, 0.3), np.ones_like(rows)], -1)
        made.pixels.foreach_set(pixels.ravel())
        made.filepath_raw, made.file_format = path, "OPEN_EXR"
        made.save()
        bpy.data.images.remove(made)
    image = bpy.data.images.load(path, check_existing=False)

    def show():
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window, screen=window.screen):
            bpy.ops.render.view_show("INVOKE_DEFAULT")
        for shown in bpy.context.window_manager.windows:
            for area in shown.screen.areas:
                if area.type == "IMAGE_EDITOR":
                    area.spaces.active.image = image
                    area.tag_redraw()
                    return None
        return None

    bpy.app.timers.register(show, first_interval=0.0)
    return {"path": path, "t": time.monotonic()}


def _socket(socket) -> str:
    return getattr(socket, "identifier", socket.name)


def _tree_dump(tree) -> dict:
    nodes = []
    for node in tree.nodes:
        entry = {"name": node.name, "type": node.bl_idname, "label": node.label}
        if getattr(node, "node_tree", None) is not None:
            entry["node_tree"] = node.node_tree.name
        if getattr(node, "image", None) is not None:
            image = node.image
            entry["image"] = {"name": image.name, "source": image.source, "filepath": image.filepath}
        entry["inputs"] = [_socket(s) for s in node.inputs]
        entry["outputs"] = [_socket(s) for s in node.outputs]
        nodes.append(entry)
    links = [
        {
            "from_node": link.from_node.name,
            "from_type": link.from_node.bl_idname,
            "from_socket": _socket(link.from_socket),
            "to_node": link.to_node.name,
            "to_type": link.to_node.bl_idname,
            "to_socket": _socket(link.to_socket),
        }
        for link in tree.links
    ]
    return {"name": tree.name, "nodes": nodes, "links": links}


def compositor() -> dict:
    scene = bpy.data.scenes[SCENE_NAME]
    if bpy.app.version >= (5, 0, 0):
        tree = scene.compositing_node_group
        use_nodes = tree is not None
    else:
        tree, use_nodes = scene.node_tree, scene.use_nodes
    dump = {
        "use_nodes": use_nodes,
        "use_compositing": scene.render.use_compositing,
        "tree": None,
        "groups": {},
    }
    if tree is None:
        return dump
    dump["tree"] = _tree_dump(tree)
    for node in tree.nodes:
        group = getattr(node, "node_tree", None)
        if group is not None:
            dump["groups"][group.name] = _tree_dump(group)
    return dump


def live_state() -> dict:
    """The live preview's views (captures, pictures shown, readout, timings) and its threads and handlers."""
    live = _stylepass_module("addon.live_preview")
    now = time.monotonic()
    views = []
    for view in live._State.views.values() if live else ():
        stats = view.scheduler.stats
        views.append(
            {
                "captures": view.captures,
                "shown": view.shown_count,
                "fps": stats.fps(now),
                "latency": stats.last_latency,
                "job_seconds": stats.job_seconds[-20:],
                "working": view.scheduler.working,
                "error": view.error,
                "picture": list(view.picture.shape) if view.picture is not None else None,
                "camera": view.picture_camera,
                "readout": live.readout_text(view, now),
                "draw_seconds": view.draw_seconds[-200:],
                "capture_seconds": view.capture_seconds[-50:],
            }
        )
    _, area, _ = _view3d()
    region = next((r for r in area.regions if r.type == "WINDOW"), None) if area else None
    return {
        "views": views,
        "region": [region.x, region.y, region.width, region.height] if region else None,
        "threads": [t.name for t in threading.enumerate() if t.name == getattr(live, "THREAD_NAME", "-")],
        "draw_handler": live is not None and live._State.draw_handle is not None,
        "timer": live is not None and bpy.app.timers.is_registered(live._tick),
        "images": sorted(image.name for image in bpy.data.images),
    }


def live_diffusion(command: dict) -> dict:
    """Point Stylepass at a worker over HTTP with a tiny model and a depth ControlNet (`off`: back to the
    neural style and the managed worker)."""
    scene = bpy.data.scenes[SCENE_NAME]
    prefs = next(a.preferences for k, a in bpy.context.preferences.addons.items() if k.endswith(".stylepass"))
    if command.get("off"):
        scene.stylepass.engine = "NEURAL_STYLE"
        prefs.engine_location = "MANAGED"
        return {"engine": scene.stylepass.engine}
    prefs.engine_location = "REMOTE"
    prefs.remote_url, prefs.remote_token = command["url"], command["token"]
    diffusion = scene.stylepass.diffusion
    diffusion.model = command["model"]
    diffusion.prompt = "a watercolour painting"
    diffusion.controls.clear()
    unit = diffusion.controls.add()
    unit.map, unit.model = "depth", command["controlnet"]
    scene.stylepass.engine = "DIFFUSION"
    return {"engine": scene.stylepass.engine}


def live_shown() -> dict:
    """What the picture shown was made from: the engine's settings, the control maps, what the engine loaded."""
    import numpy as np

    live = _stylepass_module("addon.live_preview")
    (view,) = live._State.views.values()
    request, info = view.shown_request, view.shown_info
    settings = request.settings
    depth = request.controls.get("depth")
    return {
        "engine": request.engine,
        "steps": getattr(settings, "steps", None),
        "denoise": getattr(settings, "denoise", None),
        "scheduler": getattr(settings, "scheduler", None),
        "controls": sorted(request.controls),
        "depth_range": [float(depth.min()), float(depth.max())] if depth is not None else None,
        "input_difference": float(np.abs(request.beauty - view.picture).mean()),
        "loaded": info.get("loaded"),
        "size": list(view.picture.shape),
    }


def live_check(save: str | None) -> dict:
    """Run the engine again, in process, on the input of the picture shown, and compare: the preview shows
    exactly the engine's output for that view. `save`: a folder for picture.npy and input.npy."""
    import numpy as np

    from stylepass_core.engine_api import NullProgress  # the extension's core, importable once it is enabled
    from stylepass_core.stylise_job import run_in_process

    live = _stylepass_module("addon.live_preview")
    (view,) = live._State.views.values()
    request = view.shown_request
    result = run_in_process(request.engine, request, NullProgress(), None)
    again = np.clip(result.image, 0, 1)
    if save:
        os.makedirs(save, exist_ok=True)
        np.save(os.path.join(save, "picture.npy"), view.picture)
        np.save(os.path.join(save, "input.npy"), request.beauty)
    return {
        "max_difference": float(np.abs(again - view.picture).max()),
        "input_difference": float(np.abs(request.beauty - view.picture).mean()),
        "shape": list(view.picture.shape),
    }


# -- The live preview benchmark (bench/bench_live.py) -----------------------------------------------------

ORBIT_STEP = 1 / 60  # the orbit timer's interval: a rotation per screen refresh, as a mouse drag sends them
LIVE_TRACE: dict = {"installed": False, "captures": [], "shows": [], "frames": {}}


def _live_trace_install() -> None:
    """Watch the live preview (single viewport): every capture (its number, its main-thread seconds, the whole
    capture-and-submit step) and every picture shown (which capture it came from, the latest capture then,
    how far the view had turned since that capture). Only watches."""
    if LIVE_TRACE["installed"]:
        return
    live = _stylepass_module("addon.live_preview")
    capturer = _stylepass_module("addon.live_capture").Capturer
    captures, shows, frames = LIVE_TRACE["captures"], LIVE_TRACE["shows"], LIVE_TRACE["frames"]

    def make_capture(original):
        def capture(self, context, frame, map_names, options):
            start = time.monotonic()
            try:
                return original(self, context, frame, map_names, options)
            finally:
                captures.append(
                    {"n": len(captures) + 1, "start": start, "end": time.monotonic(), "step": None}
                )
                frames[id(frame)] = (len(captures), frame)  # the frame travels with the request to the show
                for key in list(frames)[:-64]:
                    del frames[key]

        return capture

    def make_step(original):
        def capture_and_submit(self, found, generation):
            start, before = time.monotonic(), len(captures)
            try:
                return original(self, found, generation)
            finally:
                if len(captures) > before:
                    captures[-1]["step"] = time.monotonic() - start

        return capture_and_submit

    def make_show(original):
        def show(self, shown):
            now = time.monotonic()
            frame = shown.result[1].frame
            number = frames.get(id(frame), (None,))[0]
            record = {"t": now, "capture": number, "latest": len(captures), "submitted": shown.submitted}
            record["finished"], record["turned"] = shown.finished, _turned_since(frame)
            shows.append(record)
            return original(self, shown)

        return show

    _wrap(capturer, "capture", make_capture, "live_trace.capture")
    _wrap(live.LiveView, "_capture_and_submit", make_step, "live_trace.capture_and_submit")
    _wrap(live.LiveView, "_show", make_show, "live_trace.show")
    LIVE_TRACE["installed"] = True


def _turned_since(frame) -> float | None:
    """Degrees the first viewport's view has turned since `frame` was captured (None in camera view)."""
    _, area, _ = _view3d()
    if area is None or frame.camera:
        return None
    now = area.spaces.active.region_3d.view_matrix.to_quaternion()
    angle = frame.view_matrix.to_quaternion().rotation_difference(now).angle  # in [0, 2 pi]: q and -q
    return math.degrees(min(angle, 2 * math.pi - angle))


def live_trace(t0: float, t1: float, reset_view: bool = False) -> dict:
    """What the live preview did in [t0, t1]: captures, shown pictures (each with the first redraw of the 3D
    viewport after it: when it reached the screen), engine runs, the viewport's redraws, the heartbeat's gaps,
    and the view's own recent timings (`reset_view` empties them for the next window)."""
    _live_trace_install()
    live = _stylepass_module("addon.live_preview")
    redraws = [t for t, what in DRAWS if what == "view3d" and t0 <= t <= t1 + 1.0]
    shows = []
    for record in LIVE_TRACE["shows"]:
        if t0 <= record["t"] <= t1:
            drawn = next((t for t in redraws if t > record["t"]), None)
            shows.append({**record, "drawn": drawn})
    views = list(live._State.views.values())
    timings = {}
    if views:
        view = views[0]
        timings = {"draw_seconds": view.draw_seconds, "capture_seconds": view.capture_seconds}
        if reset_view:
            view.draw_seconds, view.capture_seconds = [], []
    return {
        "captures": [c for c in LIVE_TRACE["captures"] if t0 <= c["start"] <= t1],
        "shows": shows,
        "engine_runs": [r for r in ENGINE_RUNS if r["end"] is not None and t0 <= r["start"] <= t1],
        "redraws": [t for t in redraws if t <= t1],
        "max_gap": gaps(t0, t1)["max_gap"],
        **timings,
    }


def _viewport():
    """(window, area, WINDOW region, RegionView3D) of the first 3D viewport."""
    window, area, _ = _view3d()
    region = next(r for r in area.regions if r.type == "WINDOW")
    return window, area, region, area.spaces.active.region_3d


def orbit(degrees_per_second: float, seconds: float) -> dict:
    """Turn the first viewport's view about the world's Z axis (a turntable orbit about its pivot) at a steady
    speed for `seconds`, from a timer, as a steady hand would with the middle mouse button."""
    _, area, _, region_3d = _viewport()
    start_rotation = region_3d.view_rotation.copy()
    t0 = time.monotonic()

    def step():
        elapsed = min(time.monotonic() - t0, seconds)
        turn = Quaternion((0.0, 0.0, 1.0), math.radians(degrees_per_second * elapsed))
        region_3d.view_rotation = turn @ start_rotation
        area.tag_redraw()
        return None if elapsed >= seconds else ORBIT_STEP

    bpy.app.timers.register(step, first_interval=0.0)
    return {"t0": t0, "t1": t0 + seconds}


def view_turn(degrees: float) -> dict:
    """One edit: turn the first viewport's view `degrees` about the world's Z axis, once."""
    _, area, _, region_3d = _viewport()
    region_3d.view_rotation = Quaternion((0.0, 0.0, 1.0), math.radians(degrees)) @ region_3d.view_rotation
    area.tag_redraw()
    return {"t": time.monotonic()}


def view_set(elevation: float, heading: float, distance: float, target: list[float]) -> dict:
    """Point the first viewport's perspective view at `target` from `distance`, `elevation` degrees above the
    horizon and `heading` degrees about Z (0: looking along +Y)."""
    _, area, _, region_3d = _viewport()
    region_3d.view_perspective = "PERSP"
    region_3d.view_location = target
    region_3d.view_distance = distance
    tilt = Euler((math.radians(90.0 - elevation), 0.0, math.radians(heading)))
    region_3d.view_rotation = tilt.to_quaternion()
    area.tag_redraw()
    return {"t": time.monotonic()}


def engine_threads(threads: int) -> dict:
    """An experiment: the embedded neural-style engine's onnxruntime threads (its sessions load again)."""
    from stylepass_core import engine_api

    engine = engine_api.get_engine("NEURAL_STYLE")
    with engine._lock:
        engine.threads = int(threads)
        engine._sessions.clear()
    return {"threads": engine.threads}


def live_engine(repeats: int) -> dict:
    """The engine alone on the shown picture's input, in process on this thread, `repeats` times (seconds)."""
    from stylepass_core.engine_api import NullProgress
    from stylepass_core.stylise_job import run_in_process

    live = _stylepass_module("addon.live_preview")
    (view,) = live._State.views.values()
    request = view.shown_request
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_in_process(request.engine, request, NullProgress(), None)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "shape": list(request.beauty.shape)}


def redraw_cost(iterations: int, rounds: int, step_degrees: float) -> dict:
    """Seconds of single redraws of the first 3D viewport's region (`wm.redraw_timer` DRAW_SWAP: the region,
    then the window put together and swapped, so the software GPU's work is inside), with the live preview's
    draw handler and without it, in alternating blocks of `iterations` (machines drift). Before each redraw
    the view turns `step_degrees`, as in an orbit (the preview's change check then sees a new view; with an
    unchanged view Blender 5.2 skips the region's redraw, so `step_degrees` must not be 0). The view is put
    back afterwards; the preview's timer cannot run meanwhile (this holds the main thread), so no engine
    job competes for the CPU. Also the preview's draw handler as it times itself in these redraws."""
    if not step_degrees:
        raise ValueError("step_degrees must not be 0: Blender skips redrawing an unchanged view")
    live = _stylepass_module("addon.live_preview")
    (view,) = live._State.views.values()
    view.draw_seconds = []
    window, area, region, region_3d = _viewport()
    start_rotation = region_3d.view_rotation.copy()
    turn = Quaternion((0.0, 0.0, 1.0), math.radians(step_degrees))
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    try:
        with bpy.context.temp_override(window=window, area=area, region=region):
            for block in range(2 * rounds):
                mode = ("off", "on")[(block + block // 2) % 2]  # off on on off off on ...
                if mode == "off":
                    bpy.types.SpaceView3D.draw_handler_remove(live._State.draw_handle, "WINDOW")
                try:
                    for _ in range(iterations):
                        region_3d.view_rotation = turn @ region_3d.view_rotation
                        start = time.perf_counter()
                        bpy.ops.wm.redraw_timer(type="DRAW_SWAP", iterations=1)
                        seconds[mode].append(time.perf_counter() - start)
                finally:
                    if mode == "off":
                        live._State.draw_handle = bpy.types.SpaceView3D.draw_handler_add(
                            live._draw_handler, (), "WINDOW", "POST_PIXEL"
                        )
    finally:
        region_3d.view_rotation = start_rotation
        area.tag_redraw()
    return {**seconds, "handler": view.draw_seconds}


def draw_parts(iterations: int, step_degrees: float) -> dict:
    """Where the live preview's draw handler spends its time: its steps timed one by one from a second
    POST_PIXEL handler of ours, over `iterations` region redraws (`wm.redraw_timer`, the view turning
    `step_degrees` before each; no engine job runs meanwhile). The preview's own handler draws as usual."""
    live = _stylepass_module("addon.live_preview")
    (view,) = live._State.views.values()
    window, area, region, region_3d = _viewport()
    start_rotation = region_3d.view_rotation.copy()
    turn = Quaternion((0.0, 0.0, 1.0), math.radians(step_degrees))
    parts: dict[str, list[float]] = {
        name: [] for name in ("see_view", "settings", "readout", "rect", "picture")
    }

    def handler():
        context = bpy.context
        if context.area != area or view.texture is None:
            return
        marks = [time.perf_counter()]
        view.see_view(context.region, context.region_data)
        marks.append(time.perf_counter())
        settings = live._live_settings(context.scene)
        marks.append(time.perf_counter())
        readout = live._draw_readout(view, context.region)  # first, as the preview draws it
        marks.append(time.perf_counter())
        rect = live.picture_rect(context.scene, context.region, context.region_data, view.picture_camera)
        marks.append(time.perf_counter())
        live._draw_picture(view.texture, rect, settings.live_opacity, settings.live_wipe, readout)
        marks.append(time.perf_counter())
        for name, a, b in zip(parts, marks, marks[1:], strict=False):
            parts[name].append(b - a)

    handle = bpy.types.SpaceView3D.draw_handler_add(handler, (), "WINDOW", "POST_PIXEL")
    try:
        with bpy.context.temp_override(window=window, area=area, region=region):
            for _ in range(iterations):
                region_3d.view_rotation = turn @ region_3d.view_rotation
                bpy.ops.wm.redraw_timer(type="DRAW_SWAP", iterations=1)
    finally:
        bpy.types.SpaceView3D.draw_handler_remove(handle, "WINDOW")
        region_3d.view_rotation = start_rotation
        area.tag_redraw()
    return parts


def capture_parts(repeats: int) -> dict:
    """Where a live capture's main-thread time goes, at the live resolution set now: the off-screen draw
    (`draw_view3d`, overlays off as the capture does), the read-back, numpy's view of it, the float picture,
    the content hash. Uses the preview's own off-screen buffer."""
    import numpy as np

    live = _stylepass_module("addon.live_preview")
    live_capture = _stylepass_module("addon.live_capture")
    (view,) = live._State.views.values()
    window, area, region, region_3d = _viewport()
    space = area.spaces.active
    scene, view_layer = window.scene, window.view_layer
    long_side = int(scene.stylepass.live_resolution)
    frame = live_capture.frame_of(scene, view_layer.depsgraph, region, region_3d, long_side)
    offscreen = view.capturer._offscreen_for(frame.width, frame.height)
    names = ("draw_view3d", "read", "numpy", "float", "hash")
    parts: dict = {name: [] for name in names}
    overlays = space.overlay.show_overlays
    space.overlay.show_overlays = False
    try:
        for _ in range(repeats):
            marks = [time.perf_counter()]
            offscreen.draw_view3d(
                scene, view_layer, space, region, frame.view_matrix, frame.projection_matrix,
                do_color_management=True,
            )  # fmt: skip
            marks.append(time.perf_counter())
            buffer = offscreen.texture_color.read()
            marks.append(time.perf_counter())
            # As live_maps.texture_pixels reads it (in memory order: 4.x reports reversed strides).
            pixels = np.asarray(buffer, dtype=np.uint8).ravel(order="K").reshape(frame.height, frame.width, 4)
            marks.append(time.perf_counter())
            colour = pixels[::-1, :, :3].astype(np.float32) * np.float32(1 / 255)
            marks.append(time.perf_counter())
            live_capture.Captured(frame, colour).digest()
            marks.append(time.perf_counter())
            for name, a, b in zip(names, marks, marks[1:], strict=False):
                parts[name].append(b - a)
    finally:
        space.overlay.show_overlays = overlays
    try:
        memoryview(buffer)
        protocol = True
    except TypeError:
        protocol = False
    parts["size"] = [frame.width, frame.height]
    parts["buffer"] = (
        f"{type(buffer).__name__} {getattr(buffer, 'dimensions', None)} buffer protocol: {protocol}"
    )
    return parts


def _view3d():
    """(window, area, sidebar region) of the first 3D viewport."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                sidebar = next((r for r in area.regions if r.type == "UI"), None)
                return window, area, sidebar
    return None, None, None


def animate(frames: int) -> dict:
    """The sphere rolls across the view over frames 1..`frames` (linear keys); 0 takes the animation away and
    puts the sphere back, as the other tests expect a still scene."""
    scene = bpy.data.scenes[SCENE_NAME]
    sphere = scene.objects["Sphere"]
    sphere.animation_data_clear()
    start, end = (-2.5, 1.2, 1.0), (2.0, -1.5, 1.0)
    sphere.location = start
    for frame in range(1, frames + 1):
        t = (frame - 1) / max(1, frames - 1)
        sphere.location = [a + t * (b - a) for a, b in zip(start, end, strict=True)]
        sphere.keyframe_insert("location", frame=frame)
    if frames:
        action = sphere.animation_data.action
        curves = list(getattr(action, "fcurves", None) or ())
        if not curves:  # Blender 5.x: layered actions keep F-curves in channelbags
            curves = [c for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                      for c in bag.fcurves]  # fmt: skip
        for curve in curves:
            for point in curve.keyframe_points:
                point.interpolation = "LINEAR"
    scene.frame_set(1)
    return {"frames": frames}


def style_groups(clear: bool) -> list[dict]:
    """The scene's style groups as the panel shows them (and, with `clear`, none left afterwards)."""
    settings = bpy.data.scenes[SCENE_NAME].stylepass
    groups = [
        {
            "name": group.name,
            "objects": sorted(entry.object.name for entry in group.objects if entry.object is not None),
            "style_preset": group.neural_style.style_preset,
        }
        for group in settings.style_groups
    ]
    if clear:
        settings.style_groups.clear()
    return groups


def make_groups(specs: list[dict]) -> list[dict]:
    """Style groups as an artist makes them one by one: select the objects, Add Style Group (Stylepass's own
    operator, so each starts from the scene's style), rename it and pick its built-in style. `specs`:
    [{"name", "objects", "style_preset"}]. The selection is put back afterwards."""
    scene = bpy.data.scenes[SCENE_NAME]
    window, area, _ = _view3d()
    region = next(r for r in area.regions if r.type == "WINDOW")
    selected = [obj for obj in scene.objects if obj.select_get()]
    active = bpy.context.view_layer.objects.active
    try:
        for spec in specs:
            for obj in scene.objects:
                obj.select_set(obj.name in spec["objects"])
            bpy.context.view_layer.objects.active = scene.objects[spec["objects"][0]]
            with bpy.context.temp_override(window=window, screen=window.screen, area=area, region=region):
                result = bpy.ops.stylepass.style_group_add()
            if result != {"FINISHED"}:
                raise RuntimeError(f"Add Style Group returned {result} for {spec}")
            group = scene.stylepass.style_groups[-1]
            group.name = spec["name"]
            group.neural_style.style_preset = spec["style_preset"]
    finally:
        for obj in scene.objects:
            obj.select_set(obj in selected)
        bpy.context.view_layer.objects.active = active
    return style_groups(False)


def _compositor_tree(scene):
    return scene.compositing_node_group if bpy.app.version >= (5, 0, 0) else scene.node_tree


def _stylepass_node(tree):
    """The scene tree's group node that uses Stylepass's group (the one Stylise Frame wired in)."""
    found = [
        node
        for node in tree.nodes
        if node.bl_idname == "CompositorNodeGroup"
        and node.node_tree is not None
        and node.node_tree.get("stylepass_role") == "group"
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one Stylepass group node, found {[n.name for n in found]}")
    return found[0]


def compositor_layers() -> dict:
    """What the artist gets from the compositor layers: the frame's layers file, the Stylepass node's outputs
    by name (in order), and inside its group the Layers image node (its image, its outputs: the passes
    Blender read from the file) and which of its outputs feed the group's outputs."""
    scene = bpy.data.scenes[SCENE_NAME]
    path = os.path.join(OUTPUT_DIR, SCENE_NAME, "stylised", "layers", f"{scene.frame_current:04d}.exr")
    node = _stylepass_node(_compositor_tree(scene))
    group = node.node_tree
    shown = group.nodes.get("Layers")
    return {
        "layers_file": path,
        "layers_file_size": os.path.getsize(path) if os.path.exists(path) else None,
        "node": node.name,
        "outputs": [socket.name for socket in node.outputs],
        "layers_node": None
        if shown is None
        else {
            "type": shown.bl_idname,
            "image": None
            if shown.image is None
            else {
                "name": shown.image.name,
                "type": shown.image.type,
                "filepath": bpy.path.abspath(shown.image.filepath),
            },
            "outputs": [socket.name for socket in shown.outputs],
        },
        "links_to_outputs": sorted(
            [link.from_socket.name, link.to_socket.name]
            for link in group.links
            if link.from_node == shown and link.to_node.bl_idname == "NodeGroupOutput"
        ),
    }


def _node_editor():
    """(window, area, WINDOW region) of the first compositor node editor in the main window, or Nones."""
    window = bpy.context.window_manager.windows[0]
    for area in window.screen.areas:
        if area.type == "NODE_EDITOR" and area.spaces.active.tree_type == "CompositorNodeTree":
            return window, area, next(r for r in area.regions if r.type == "WINDOW")
    return window, None, None


def workspace(name: str | None = None) -> dict:
    """The main window's workspace (set to `name` when given: the harness's way back if keys failed), the
    workspaces in tab order, and the areas on screen: their type, rect (bottom-left origin), and for a
    compositor node editor whether its backdrop shows, for an Image Editor its image."""
    window = bpy.context.window_manager.windows[0]
    if name is not None and window.workspace.name != name:
        window.workspace = bpy.data.workspaces[name]
    areas = []
    for area in window.screen.areas:
        space = area.spaces.active
        entry = {
            "type": area.type,
            "ui_type": area.ui_type,
            "rect": [area.x, area.y, area.width, area.height],
        }
        if area.type == "NODE_EDITOR":
            entry["tree_type"] = space.tree_type
            entry["backdrop"] = getattr(space, "show_backdrop", None)
        if area.type == "IMAGE_EDITOR":
            entry["image"] = space.image.name if space.image is not None else None
        areas.append(entry)
    return {
        "workspace": window.workspace.name,
        "fullscreen": window.screen.show_fullscreen,  # an area maximised (Ctrl+Space) or full screen
        "workspaces": [w.name for w in bpy.data.workspaces],
        "window": [window.width, window.height],
        "areas": areas,
    }


def stylepass_node() -> dict:
    """The Stylepass node as a compositor node editor shows it: selected and active or not, and where its
    header's middle is on the screen (x, y from the top left), for a click; the editor's region and every
    node's box on the screen (x0, y0, x1, y1 from the top left)."""
    scene = bpy.data.scenes[SCENE_NAME]
    tree = _compositor_tree(scene)
    node = _stylepass_node(tree)
    window, _area, region = _node_editor()
    out = {
        "node": node.name,
        "select": node.select,
        "active": tree.nodes.active.name if tree.nodes.active is not None else None,
        "selected": sorted(n.name for n in tree.nodes if n.select),
        "header": None,
    }
    if region is not None:
        # Node space is the editor's view space times the UI scale (1 here); the header is ~20 px tall.
        scale = bpy.context.preferences.system.ui_scale
        x = (node.location.x + node.dimensions.x / 2) * scale
        y = node.location.y * scale - 10
        rx, ry = region.view2d.view_to_region(x, y, clip=False)
        out["header"] = [region.x + rx, window.height - (region.y + ry)]
        out["region"] = [region.x, region.y, region.width, region.height]
        out["nodes"] = {}
        for each in tree.nodes:
            x0, y0 = region.view2d.view_to_region(*(each.location * scale), clip=False)
            x1, y1 = region.view2d.view_to_region(
                (each.location.x + each.dimensions.x) * scale,
                (each.location.y - each.dimensions.y) * scale,
                clip=False,
            )
            top = window.height - region.y
            out["nodes"][each.name] = [region.x + x0, top - y0, region.x + x1, top - y1]
    return out


def node_editor(values: dict) -> dict:
    """The compositor node editor's view settings: its backdrop (the active Viewer's image behind the nodes;
    show_backdrop as the header's Backdrop button sets it, backdrop_zoom and backdrop_offset as the backdrop's
    zoom and move do) and its sidebar (show_region_ui, N). `values` sets some; returns all as they were, and
    the Viewer's image size."""
    _window, area, _region = _node_editor()
    space = area.spaces.active
    names = ("show_backdrop", "backdrop_zoom", "backdrop_offset", "show_region_ui")
    was = {name: getattr(space, name) for name in names}
    was["backdrop_offset"] = list(was["backdrop_offset"])
    for name, value in values.items():
        if name not in names:
            raise ValueError(f"not a node editor setting here: {name!r}")
        setattr(space, name, value)
    area.tag_redraw()
    viewer = bpy.data.images.get("Viewer Node")
    return {**was, "viewer_size": list(viewer.size) if viewer is not None else None}


def viewer(keep: list[str] | None = None, selection: dict | None = None) -> dict:
    """The Viewer nodes fed from the Stylepass node, and from which of its outputs (what an artist's
    Ctrl+Shift+click on it makes). With `keep` (the tree's node names before), every other node is taken away
    again and, with `selection` ({"selected": names, "active": name}, as `stylepass_node` told it), the
    tree's selection put back."""
    scene = bpy.data.scenes[SCENE_NAME]
    tree = _compositor_tree(scene)
    node = _stylepass_node(tree)
    if keep is not None:
        for other in [n for n in tree.nodes if n.name not in keep]:
            tree.nodes.remove(other)
        if selection is not None:
            for other in tree.nodes:
                other.select = other.name in selection["selected"]
            tree.nodes.active = tree.nodes.get(selection["active"] or "")
        for area in bpy.context.window_manager.windows[0].screen.areas:
            area.tag_redraw()
    viewers = [
        {
            "name": link.to_node.name,
            "from": link.from_socket.name,
            "active": tree.nodes.active == link.to_node,
        }
        for link in tree.links
        if link.from_node == node and link.to_node.bl_idname == "CompositorNodeViewer"
    ]
    return {
        "viewers": viewers,
        "nodes": sorted(n.name for n in tree.nodes),
        "selected": sorted(n.name for n in tree.nodes if n.select),
    }


def record(frame: int) -> dict | None:
    """The whole record of a stylised frame, as Stylepass wrote it beside the PNG (None: no record)."""
    path = os.path.join(OUTPUT_DIR, SCENE_NAME, "stylised", f"{frame:04d}.json")
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


COMFYUI_PREFS = ("comfyui_server", "comfyui_headers", "comfyui_timeout")
COMFYUI_LISTS = ("checkpoints", "loras", "controlnets", "samplers", "schedulers")
COMFYUI_VALUES = (
    "checkpoint",
    "prompt",
    "negative_prompt",
    "steps",
    "denoise",
    "guidance",
    "sampler",
    "scheduler",
)


def comfyui(command: dict) -> dict:
    """The ComfyUI engine as the artist sets it up: the add-on's server preferences (`prefs`), the scene's
    engine (`engine`), its ComfyUI settings (`values`), and (`clear_lists`) the pickers' lists emptied as
    a fresh session has them. Sets what is given, then returns all of it and the lists Read from Server
    filled (`wm.stylepass_comfyui`: server, status and each list's names)."""
    scene = bpy.data.scenes[SCENE_NAME]
    prefs = next(a.preferences for k, a in bpy.context.preferences.addons.items() if k.endswith(".stylepass"))
    settings = scene.stylepass.comfyui
    lists = bpy.context.window_manager.stylepass_comfyui
    for name, value in command.get("prefs", {}).items():
        if name not in COMFYUI_PREFS:
            raise ValueError(f"not a ComfyUI preference: {name!r}")
        setattr(prefs, name, value)
    if "engine" in command:
        scene.stylepass.engine = command["engine"]
    for name, value in command.get("values", {}).items():
        setattr(settings, name, value)
    if command.get("clear_lists"):
        lists.server = lists.status = ""
        for name in COMFYUI_LISTS:
            getattr(lists, name).clear()
    for area in bpy.context.window_manager.windows[0].screen.areas:
        area.tag_redraw()
    return {
        "prefs": {name: getattr(prefs, name) for name in COMFYUI_PREFS},
        "engine": scene.stylepass.engine,
        "values": {name: getattr(settings, name) for name in COMFYUI_VALUES},
        "lists": {
            "server": lists.server,
            "status": lists.status,
            **{name: [item.name for item in getattr(lists, name)] for name in COMFYUI_LISTS},
        },
    }


REMOTE_PREFS = ("engine_location", "remote_url", "remote_token")
REMOTE_SCENE = ("engine", "temporal_coherence", "keyframe_interval", "seed", "pass_samples")
REMOTE_DIFFUSION = ("model", "prompt", "steps", "denoise")


def remote_worker(command: dict) -> dict:
    """Stylepass pointed at a worker by URL, as the artist sets it up: the add-on's Diffusion Engine
    preferences (`prefs`: Remote Worker, its URL and token), the scene's Stylepass settings (`scene`: engine,
    coherence, seed, pass samples), its diffusion settings (`diffusion`) and Cycles' samples
    (`cycles_samples`). Sets what is given, then returns all of it (what a test puts back afterwards)."""
    scene = bpy.data.scenes[SCENE_NAME]
    prefs = next(a.preferences for k, a in bpy.context.preferences.addons.items() if k.endswith(".stylepass"))
    groups = (
        (prefs, REMOTE_PREFS, "prefs"),
        (scene.stylepass, REMOTE_SCENE, "scene"),
        (scene.stylepass.diffusion, REMOTE_DIFFUSION, "diffusion"),
    )
    for owner, names, key in groups:
        for name, value in command.get(key, {}).items():
            if name not in names:
                raise ValueError(f"not a {key} setting here: {name!r}")
            setattr(owner, name, value)
    if "cycles_samples" in command:
        scene.cycles.samples = command["cycles_samples"]
    for area in bpy.context.window_manager.windows[0].screen.areas:
        area.tag_redraw()
    return {
        **{key: {name: getattr(owner, name) for name in names} for owner, names, key in groups},
        "cycles_samples": scene.cycles.samples,
    }


def records(frames: list[int]) -> dict:
    """What each stylised frame's record says about keyframe fusion."""
    out = {}
    for frame in frames:
        path = os.path.join(OUTPUT_DIR, SCENE_NAME, "stylised", f"{frame:04d}.json")
        try:
            with open(path, encoding="utf-8") as stream:
                record = json.load(stream)
        except (OSError, ValueError):
            out[frame] = None
            continue
        post, context = record.get("postprocess") or {}, record.get("context") or {}
        out[frame] = {"keyframe": post.get("keyframe"), "keyframes": context.get("keyframes")}
    return out


def _handle(command: dict) -> dict:
    op = command["op"]
    if op == "gaps":
        return gaps(command["t0"], command["t1"], command.get("overlap", False), command.get("inside", False))
    if op == "compositor":
        return compositor()
    if op == "engine":
        SLOW["seconds"] = float(command["seconds"])
        return {"seconds": SLOW["seconds"]}
    if op == "scene":
        scene = bpy.data.scenes[SCENE_NAME]
        if "frame_start" in command:
            scene.frame_start, scene.frame_end = command["frame_start"], command["frame_end"]
        if "cursor" in command:
            scene.cursor.location = command["cursor"]
        if "pass_samples" in command:
            scene.stylepass.pass_samples = command["pass_samples"]
        if "resolution" in command:
            scene.render.resolution_x, scene.render.resolution_y = command["resolution"]
        if "percentage" in command:
            scene.render.resolution_percentage = command["percentage"]
        return {"frame_start": scene.frame_start, "frame_end": scene.frame_end, **render_settings()}
    if op == "settings":
        return render_settings()
    if op == "animate":
        return animate(command["frames"])
    if op == "records":
        return records(command["frames"])
    if op == "record":
        return record(command["frame"])
    if op == "comfyui":
        return comfyui(command)
    if op == "remote_worker":
        return remote_worker(command)
    if op == "clipboard":  # what Ctrl+C / Ctrl+Shift+C over a button copied (`text`: set it first)
        wm = bpy.context.window_manager
        if "text" in command:
            wm.clipboard = command["text"]
        return wm.clipboard
    if op == "select":  # what clicking objects in the viewport does
        scene = bpy.data.scenes[SCENE_NAME]
        for obj in scene.objects:
            obj.select_set(obj.name in command["names"])
        bpy.context.view_layer.objects.active = scene.objects[command["active"]]
        return {"selected": sorted(command["names"])}
    if op == "groups":
        return style_groups(command.get("clear", False))
    if op == "make_groups":
        return make_groups(command["groups"])
    if op == "compositor_layers":
        return compositor_layers()
    if op == "workspace":
        return workspace(command.get("name"))
    if op == "stylepass_node":
        return stylepass_node()
    if op == "node_editor":
        return node_editor(command.get("values", {}))
    if op == "viewer":
        return viewer(command.get("keep"), command.get("selection"))
    if op == "undo_push":  # the harness changes the scene by script, which pushes no undo step of its own
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window, screen=window.screen):
            bpy.ops.ed.undo_push(message=command["message"])
        return {"pushed": command["message"]}
    if op == "show_image":
        return show_image(command["width"], command["height"])
    if op == "progress":
        return [entry for entry in PROGRESS if command["t0"] <= entry[0] <= command["t1"]]
    if op == "calls":
        return [c for c in CALLS if command["t0"] <= c["start"] <= command["t1"]]
    if op == "redraw":
        REDRAW.update(what=command["what"], until=time.monotonic() + command["seconds"], next=0.0, count=0)
        return {"what": REDRAW["what"]}
    if op == "prefs":
        bpy.context.preferences.view.show_developer_ui = bool(command["developer_ui"])
        return {"developer_ui": bpy.context.preferences.view.show_developer_ui}
    if op == "stylepass":  # set Stylepass scene settings, as the sidebar would
        settings = bpy.data.scenes[SCENE_NAME].stylepass
        for name, value in command["values"].items():
            setattr(settings, name, value)
        return {name: getattr(settings, name) for name in command["values"]}
    if op == "live":
        return live_state()
    if op == "edit":  # what an artist's edit does to the scene: move an object, change the frame
        scene = bpy.data.scenes[SCENE_NAME]
        if "object" in command:
            scene.objects[command["object"]].location = command["location"]
        if "frame" in command:
            scene.frame_set(command["frame"])
        return {"frame": scene.frame_current}
    if op == "live_diffusion":
        return live_diffusion(command)
    if op == "live_shown":
        return live_shown()
    if op == "live_check":
        return live_check(command.get("save"))
    if op == "live_trace":
        return live_trace(command["t0"], command["t1"], command.get("reset_view", False))
    if op == "orbit":
        return orbit(command["degrees_per_second"], command["seconds"])
    if op == "view_turn":
        return view_turn(command["degrees"])
    if op == "view_set":
        return view_set(command["elevation"], command["heading"], command["distance"], command["target"])
    if op == "engine_threads":
        return engine_threads(command["threads"])
    if op == "live_engine":
        return live_engine(command["repeats"])
    if op == "redraw_cost":
        return redraw_cost(command["iterations"], command["rounds"], command["step_degrees"])
    if op == "draw_parts":
        return draw_parts(command["iterations"], command["step_degrees"])
    if op == "capture_parts":
        return capture_parts(command["repeats"])
    if op == "shutdown":
        shutdown()
        return {"stopped": True}
    raise ValueError(f"unknown command {op!r}")


def _commands() -> None:
    names = sorted(
        (n for n in os.listdir(UI_DIR) if n.startswith("cmd-") and n.endswith(".json")),
        key=lambda n: int(n[4:-5]),
    )
    for name in names:
        path = os.path.join(UI_DIR, name)
        with open(path) as stream:
            command = json.load(stream)
        os.remove(path)
        try:
            reply = {"ok": True, "result": _handle(command)}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc(limit=6)}
        reply["t"] = time.monotonic()
        _write(f"reply-{name[4:]}", reply)


def _modal_operators() -> list[str]:
    found = []
    for window in bpy.context.window_manager.windows:
        found += [op.bl_idname for op in window.modal_operators]
    return found


def _redraw(now: float) -> None:
    """While a redraw reference runs, ask for a redraw every 0.1 s: of every area (`all`) or only of the
    status bar through its text (`status`, as a modal operator's progress does)."""
    if REDRAW["what"] is None or now < REDRAW["next"]:
        return
    window = bpy.context.window_manager.windows[0]
    if now >= REDRAW["until"]:
        if REDRAW["what"] == "status":
            window.workspace.status_text_set(None)
        REDRAW["what"] = None
        return
    REDRAW["next"], REDRAW["count"] = now + 0.1, REDRAW["count"] + 1
    if REDRAW["what"] == "all":
        for area in window.screen.areas:
            area.tag_redraw()
    else:
        window.workspace.status_text_set(f"UI test reference {REDRAW['count']}")


def _sample_progress(now: float) -> None:
    """Note the status bar's progress (`operators.modal.StatusBar`) whenever it changed since the last tick."""
    bar = _run["status_bar"]
    if bar is None:
        modal = _stylepass_module("operators.modal")
        if modal is None:
            return
        bar = _run["status_bar"] = modal.StatusBar
    fraction, text = bar.fraction, bar.text
    if not PROGRESS or PROGRESS[-1][1] != fraction or PROGRESS[-1][2] != text:
        PROGRESS.append([now, fraction, text])
        del PROGRESS[:-3000]


def _track_modal(now: float) -> None:
    count = len(bpy.context.window_manager.windows)
    if not WINDOWS or WINDOWS[-1][1] != count:
        WINDOWS.append([now, count])
    running = set(_modal_operators())
    for name in running - set(_modal_now):
        _modal_now[name] = {"op": name, "seen": now, "gone": None}
        MODAL_RUNS.append(_modal_now[name])
    for name in set(_modal_now) - running:
        _modal_now.pop(name)["gone"] = now


def _state(now: float) -> dict:
    window, area, sidebar = _view3d()
    wm = bpy.context.window_manager
    scene = bpy.data.scenes.get(SCENE_NAME)
    stylised = sorted(glob.glob(os.path.join(OUTPUT_DIR, "*", "stylised", "*.png")))
    recent = TICKS[-2000:]
    return {
        "t": now,
        "ticks": len(TICKS),
        "max_gap_recent": max((b - a for a, b in itertools.pairwise(recent)), default=0.0),
        "scene_ready": _run["scene_ready"],
        "blender": bpy.app.version_string,
        "hooks": HOOKS,
        "errors": ERRORS[-5:],
        "addons": sorted(bpy.context.preferences.addons.keys()),
        "stylepass_enabled": any(k.endswith(".stylepass") for k in bpy.context.preferences.addons.keys()),
        "modal_operators": _modal_operators(),
        "modal_runs": MODAL_RUNS[-10:],
        "window_count_changes": WINDOWS[-10:],
        "last_operator": wm.operators[-1].bl_idname if len(wm.operators) else None,
        "events": EVENTS[-30:],
        "status": STATUS[-1][1] if STATUS else None,
        "status_history": STATUS[-60:],
        "engine_runs": ENGINE_RUNS[-10:],
        "slow_engine_seconds": SLOW["seconds"],
        "progress": PROGRESS[-20:],
        "calls": CALLS[-20:],
        "tempdir": tempfile.gettempdir(),
        "prepares": PREPARES[-10:],
        "renders": RENDERS[-10:],
        "composites": COMPOSITES[-10:],
        "stylised": [
            {"path": path, "mtime": os.path.getmtime(path), "size": os.path.getsize(path)}
            for path in stylised
        ],
        "output_dir": OUTPUT_DIR,
        "frame_current": scene.frame_current if scene else None,
        "cursor": list(scene.cursor.location) if scene else None,
        "window": [window.width, window.height] if window else None,
        "windows": [
            {
                "size": [w.width, w.height],
                "pos": [w.x, w.y],
                "areas": [a.type for a in w.screen.areas],
                "images": [
                    a.spaces.active.image.name
                    for a in w.screen.areas
                    if a.type == "IMAGE_EDITOR" and a.spaces.active.image is not None
                ],
            }
            for w in wm.windows
        ],
        "view3d": [area.x, area.y, area.width, area.height] if area else None,
        "sidebar": (
            None
            if sidebar is None
            else {
                "open": area.spaces.active.show_region_ui,
                "rect": [sidebar.x, sidebar.y, sidebar.width, sidebar.height],
                "category": getattr(sidebar, "active_panel_category", None),
            }
        ),
        "panel_registered": hasattr(bpy.types, "VIEW3D_PT_stylepass"),
        "panel_category": getattr(getattr(bpy.types, "VIEW3D_PT_stylepass", None), "bl_category", None),
        "developer_ui": bpy.context.preferences.view.show_developer_ui,
    }


def heartbeat():
    if _run["stopped"]:
        return None
    now = time.monotonic()
    TICKS.append(now)
    try:
        _track_modal(now)
        _sample_progress(now)
        _redraw(now)
        if not _run["scene_ready"]:
            _run["scene_ready"] = True  # once: a scene that fails is reported in `errors`, not rebuilt
            try:
                build_scene()
            except Exception:
                _error("build_scene")
            install_hooks()
        _commands()
        if _run["stopped"]:
            return None
        if now - _run["last_state"] >= STATE_EVERY:
            _run["last_state"] = now
            _write("state.json", _state(now))
    except Exception:
        _error("heartbeat")
    return HEARTBEAT


def shutdown() -> None:
    """Take every hook and the heartbeat away, so Blender quits as it would without us (4.x hangs at exit
    while handlers or timers are registered)."""
    _run["stopped"] = True
    while _undo:
        try:
            _undo.pop()()
        except Exception:
            _error("shutdown")


os.makedirs(OUTPUT_DIR, exist_ok=True)
bpy.app.timers.register(heartbeat, first_interval=HEARTBEAT, persistent=True)
