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
   `stylepass_core.engine_api.Aborted`), so ESC can be tested against a long engine job.
4. Every ~100 ms it writes `state.json`; the host writes `cmd-<n>.json` and gets `reply-<n>.json`.

Files (all in $STYLEPASS_UI_DIR, written atomically): state.json, cmd-<n>.json, reply-<n>.json.
Commands: gaps {t0, t1, overlap}, compositor, engine {seconds}, scene {frame_start, frame_end, cursor}, redraw
{what: all|status, seconds}, prefs {developer_ui}, shutdown.
"""

import bisect
import glob
import itertools
import json
import os
import sys
import time
import traceback
from array import array

import bmesh
import bpy
from mathutils import Vector

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
ERRORS: list[str] = []
HOOKS: dict[str, bool] = {}
SLOW = {"seconds": 0.0}
REDRAW = {"what": None, "until": 0.0, "next": 0.0, "count": 0}  # a reference load of redraws
_run = {"scene_ready": False, "last_state": 0.0, "stopped": False}
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

    for call in ("invoke", "modal", "escape", "cancel"):
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


def install_hooks() -> None:
    for install in (_watch_status, _watch_prepare, _watch_renders, _watch_engine):
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


def gaps(t0: float, t1: float, overlap: bool = False) -> dict:
    """The longest gap between two heartbeat ticks among the gaps that begin in [t0, t1) (time the main
    thread was away from the event loop, counted from something that happened in the window), or with
    `overlap` among all gaps that overlap the window."""
    first = bisect.bisect_right(TICKS, t0) if overlap else bisect.bisect_left(TICKS, t0) + 1
    first = max(1, first)
    last = min(len(TICKS) - 1, bisect.bisect_left(TICKS, t1))
    found = sorted(((TICKS[i] - TICKS[i - 1], TICKS[i - 1]) for i in range(first, last + 1)), reverse=True)
    found = found[:5]
    return {
        "t0": t0,
        "t1": t1,
        "ticks": max(0, last - first + 1),
        "max_gap": found[0][0] if found else None,
        "max_gap_at": found[0][1] if found else None,
        "top": [[round(gap, 4), at] for gap, at in found],
    }


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


def _view3d():
    """(window, area, sidebar region) of the first 3D viewport."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                sidebar = next((r for r in area.regions if r.type == "UI"), None)
                return window, area, sidebar
    return None, None, None


def _handle(command: dict) -> dict:
    op = command["op"]
    if op == "gaps":
        return gaps(command["t0"], command["t1"], command.get("overlap", False))
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
        return {"frame_start": scene.frame_start, "frame_end": scene.frame_end}
    if op == "redraw":
        REDRAW.update(what=command["what"], until=time.monotonic() + command["seconds"], next=0.0, count=0)
        return {"what": REDRAW["what"]}
    if op == "prefs":
        bpy.context.preferences.view.show_developer_ui = bool(command["developer_ui"])
        return {"developer_ui": bpy.context.preferences.view.show_developer_ui}
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
        "prepares": PREPARES[-10:],
        "renders": RENDERS[-10:],
        "stylised": [
            {"path": path, "mtime": os.path.getmtime(path), "size": os.path.getsize(path)}
            for path in stylised
        ],
        "output_dir": OUTPUT_DIR,
        "frame_current": scene.frame_current if scene else None,
        "cursor": list(scene.cursor.location) if scene else None,
        "window": [window.width, window.height] if window else None,
        "windows": [
            {"size": [w.width, w.height], "pos": [w.x, w.y], "areas": [a.type for a in w.screen.areas]}
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
