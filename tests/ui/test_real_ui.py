# SPDX-License-Identifier: GPL-3.0-or-later
"""What an artist does in a real Blender UI, in this order in one Blender per suite: install and open the
Stylepass tab; Stylise Frame from F3 to the result (the session's first Stylepass operator); Stylise Frame
and ESC while a slowed pass render works; Stylise Animation and ESC while a slowed engine works; keyframe
fusion; style groups and their compositor layers; ComfyUI against a real server on the host (its pickers
read from it, a frame through it, ESC); last, Stylise Animation across the replicas of a worker on Ray Serve
on the host, and ESC while its jobs run. Timings are heartbeat gaps (`blender_side.py`) compared with
reference gaps measured in the same session: software rendering makes absolute UI figures meaningless here.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from ui_session import UISessionError

FRAME_OP = "STYLEPASS_OT_stylise"
SCENE = "UITest"  # blender_side.SCENE_NAME
ANIMATION_OP = "STYLEPASS_OT_stylise_animation"
SLOW_ENGINE_SECONDS = 10.0
ESC_LATENCY_LIMIT = 1.0
GAP_MARGIN = 0.5  # beyond the idle-redraw reference, while the engine job runs and the operator only polls it
# Issue 12: during Stylise Frame the heartbeat's longest gap stays within this of the no-op operator's.
FRAME_GAP_MARGIN = 0.1
# Opening the render view is Blender drawing a new window together with the redraw after the operator: on
# llvmpipe that varies by -0.07..+0.21 s against the same EXR shown without Stylepass (16 runs, sid and
# trixie). This bound still catches Stylepass work in that frame (building a colour inverse there cost 2-4 s)
# without failing on the window's own draw; Stylepass's own calls there are timed in `blame_showing`.
SHOW_GAP_MARGIN = 0.5
SIDEBAR_COLLAPSED = 60  # pixels: a sidebar this narrow shows only its tab strip
SLOW_PASS_SAMPLES = 2000  # a pass render that takes minutes, so ESC meets it mid-render
PASS_TEXT = re.compile(r"pass|sample", re.IGNORECASE)


def _same_op(name: str | None, class_name: str) -> bool:
    """Blender names a Python operator `STYLEPASS_OT_x` in some lists and `stylepass.x` in others."""
    prefix, _, rest = class_name.partition("_OT_")
    return name in (class_name, f"{prefix.lower()}.{rest}")


def _require_extension(ui) -> None:
    state = ui.state()
    if not state["stylepass_enabled"] or not state["hooks"].get("engine"):
        pytest.fail(
            f"Stylepass is not installed and enabled in {ui.figures['blender']}: install said "
            f"{ui.install['returncode']}: {ui.install['output'][-1500:]}\nBlender side: {state['errors']}"
        )


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as stream:
        header = stream.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def _ended(state: dict, op: str, after: float) -> dict | None:
    """The end of `op` started after `after`: its modal (or invoke) return, or the tick it left the list."""
    for event in reversed(state["events"]):
        if event["op"] == op and event["t"] > after and event["ended"]:
            return {"t": event["t"] + event["seconds"], "status": event["status"], "by": event["call"]}
    for run in reversed(state["modal_runs"]):
        if _same_op(run["op"], op) and run["seen"] > after and run["gone"] is not None:
            return {"t": run["gone"], "status": None, "by": "heartbeat"}
    return None


def _progress_problems(samples: list[list], start: float, end: float, distinct: int = 3) -> list[str]:
    """What is wrong with the status bar's progress bar as the heartbeat sampled it ([time, fraction, text]
    at every change): while the operator ran, fractions in [0, 1] that never go back, `distinct` different
    ones between 0 and 1, a text naming the passes or samples; after it ended, no bar (None)."""
    during = [(f, text) for t, f, text in samples if start <= t <= end and f is not None]
    fractions = [f for f, _ in during]
    problems = []
    if not during:
        return ["the status bar showed no progress bar while the operator ran"]
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        problems.append(f"fractions outside [0, 1]: {fractions}")
    backwards = [(a, b) for a, b in itertools.pairwise(fractions) if b < a]
    if backwards:
        problems.append(f"the bar went back: {backwards}")
    inside = sorted({f for f in fractions if 0.0 < f < 1.0})
    if len(inside) < distinct:
        problems.append(f"fewer than {distinct} distinct values between 0 and 1: {inside}")
    if not any(PASS_TEXT.search(text or "") for _, text in during):
        problems.append(f"no text names the passes or samples: {sorted({text for _, text in during})}")
    after = [f for t, f, _ in samples if t > end]
    if not after or after[-1] is not None:
        problems.append(f"the bar is still set after the end: {after[-3:]}")
    return problems


def _steps(calls: list[dict]) -> dict:
    """Stylepass's timed main-thread steps: {what: [calls, total seconds, longest]}."""
    steps: dict[str, list] = {}
    for call in calls:
        if call["main"] and call["seconds"] is not None:
            count, total, longest = steps.get(call["what"], [0, 0.0, 0.0])
            steps[call["what"]] = [count + 1, total + call["seconds"], max(longest, call["seconds"])]
    return {what: [n, round(total, 3), round(longest, 3)] for what, (n, total, longest) in steps.items()}


def _longest_still(samples: list[list], start: float, end: float) -> list | None:
    """[seconds, percent, text] of the longest time the progress bar showed one value while the operator
    ran."""
    during = [(t, f, text) for t, f, text in samples if start <= t <= end and f is not None]
    if not during:
        return None
    stays = [(b[0] - a[0], a) for a, b in itertools.pairwise([*during, (end, None, None)])]
    seconds, (_t, fraction, text) = max(stays, key=lambda stay: stay[0])
    return [round(seconds, 2), round(100 * fraction, 1), text]


def _progress_figures(samples: list[list], start: float) -> dict:
    """The progress samples as [seconds after start, percent, text], for the figures."""
    return [[round(t - start, 3), None if f is None else round(100 * f, 1), text] for t, f, text in samples]


def _outside(ui, rect: list[int], box: tuple[int, int, int, int]) -> tuple[int, int]:
    """A screen point inside the Blender rect `rect` (bottom-left origin) that the window `box` (top-left
    origin) does not cover: the middle of the widest free strip left or right of it, else above or below."""
    x, y, width, height = rect
    top = ui.state()["window"][1] - (y + height)
    left, right, bottom = x, x + width, top + height
    strips = [
        (box[0] - left, ((left + box[0]) // 2, (top + bottom) // 2)),
        (right - box[2], ((box[2] + right) // 2, (top + bottom) // 2)),
        (box[1] - top, ((left + right) // 2, (top + box[1]) // 2)),
        (bottom - box[3], ((left + right) // 2, (box[3] + bottom) // 2)),
    ]
    room, point = max(strips)
    assert room > 40, f"the window {box} covers the 3D viewport {rect}"
    return point


def _close_window(ui, box: tuple[int, int, int, int]) -> None:
    """Esc over a render view window (at `box`) closes it, as an artist closes it; the mouse goes back to
    the 3D viewport."""
    ui.mouse_to((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
    ui.key("Escape")
    state = ui.wait_state(lambda s: len(s["windows"]) == 1, 20, "Esc to close the render view")
    ui.mouse_to(*ui.region_centre(state["view3d"]))
    ui.screen.wait_settled(quiet=0.5)


def _show_image_reference(ui) -> tuple[float, float]:
    """Blender's own cost of showing an image as Stylise Frame shows its result (an EXR of the render size
    in the render view, a new window) without Stylepass: (longest heartbeat gap, seconds until drawn). What
    the main thread did in the last one's longest gap is kept in `ui.figures["show_image_blame"]`."""
    width, height, percent = ui.command("settings")["resolution"]
    ui.screen.wait_settled()
    start = time.monotonic()
    ui.command("show_image", width=width * percent // 100, height=height * percent // 100)
    state = ui.wait_state(lambda s: len(s["windows"]) > 1, 30, "the reference image's render view")
    box = ui.window_box(state["windows"][1])
    ui.screen.wait_drawn(box, what="the reference image's render view")
    drawn = time.monotonic()
    gaps = ui.gaps(start, drawn)
    ui.figures["show_image_blame"] = gaps["blame"][:2]
    ui.screen.wait_settled(quiet=0.5)
    _close_window(ui, box)
    return gaps["max_gap"], drawn - start


def _references(ui) -> dict:
    """Heartbeat gaps of this session with no Stylepass involved: idle; redraws of every area, and of the
    status bar alone, asked for every 0.1 s; a no-op operator run from F3 (menu search included); an EXR
    shown in the render view, as Stylise Frame shows its result, the first time (shaders compile) and then
    the longest of two more times (the cost Stylise Frame's result meets, as this runs before it)."""
    if "reference" in ui.figures:
        return ui.figures["reference"]
    figures = {}
    t0 = time.monotonic()
    figures["idle_max_gap"] = ui.gaps(t0, t0 + 2.0)["max_gap"]
    for what in ("all", "status"):
        ui.screen.wait_settled()
        t0 = time.monotonic()
        ui.command("redraw", what=what, seconds=2.0)
        figures[f"redraw_{what}_max_gap"] = ui.gaps(t0, t0 + 2.0)["max_gap"]
    # Cursor to World Origin, with the cursor moved away first so the run is visible in the state.
    ui.command("scene", cursor=[1.0, 1.0, 1.0])
    ui.wait_state(lambda s: s["cursor"] == [1.0, 1.0, 1.0], 10, "the 3D cursor to move")
    ui.screen.wait_settled()
    f3 = time.monotonic()
    enter = ui.search("Cursor to World Origin", shot="00-search-reference-operator")
    ui.wait_state(lambda s: max(map(abs, s["cursor"])) < 1e-6, 30, "Cursor to World Origin to run")
    ui.screen.wait_settled(quiet=0.5)
    settled = time.monotonic()
    figures["noop_operator_max_gap"] = ui.gaps(f3, settled)["max_gap"]
    figures["noop_operator_max_gap_from_enter"] = ui.gaps(enter, settled)["max_gap"]
    figures["show_image_first_max_gap"], figures["show_image_first_seconds"] = _show_image_reference(ui)
    again = [_show_image_reference(ui) for _ in range(2)]
    figures["show_image_max_gap"] = max(gap for gap, _ in again)
    figures["show_image_seconds"] = max(seconds for _, seconds in again)
    ui.figures["reference"] = {name: round(value, 3) for name, value in figures.items()}
    return ui.figures["reference"]


def _open_stylepass_tab(ui) -> list[str]:
    """N over the viewport opens the sidebar (unless it is open), then clicks down its tab strip until the
    Stylepass tab is open; the mouse goes back to the viewport. Returns the tabs met on the way."""
    state = ui.state()
    viewport = ui.region_centre(state["view3d"])
    ui.mouse_to(*viewport)
    if not state["sidebar"]["open"]:
        ui.key("n")
        state = ui.wait_state(lambda s: s["sidebar"]["open"], 15, "N to open the sidebar")
        ui.screen.wait_settled()
    # Click down the sidebar's tab strip (its right edge) until the Stylepass tab is open, as an artist
    # looks for a tab. (Ctrl+Wheel and Ctrl+Tab, which cycle tabs, do not arrive through xdotool here.)
    x, y, width, height = state["sidebar"]["rect"]
    top = state["window"][1] - (y + height)
    seen = []
    for row in range(top + 8, top + height, 15):
        category = ui.state()["sidebar"]["category"]
        if not seen or seen[-1] != category:
            seen.append(category)
        if category == "Stylepass":
            break
        ui.mouse_to(x + width - 12, row)
        ui.session.xdotool("click", "1")
        ui.screen.wait_settled(quiet=0.25)
        if ui.state()["sidebar"]["rect"][2] < SIDEBAR_COLLAPSED:
            # Blender 5.x folds the sidebar to its tab strip when the open tab is clicked again (a second
            # click on a tall tab); a second click unfolds it, as an artist does.
            ui.session.xdotool("click", "1")
            ui.screen.wait_settled(quiet=0.25)
    ui.mouse_to(*viewport)
    ui.screen.wait_settled()
    return seen


def test_install_and_sidebar_tab(ui):
    """The zip installs offline and enables; N over the viewport opens the sidebar with a Stylepass tab."""
    ui.figures["install_returncode"] = ui.install["returncode"]
    assert ui.install["returncode"] == 0, f"Blender refused the zip:\n{ui.install['output']}"
    state = ui.state()
    # `extension install-file` exits 0 on a refused zip too (4.3): what counts is that it is enabled.
    assert state["stylepass_enabled"], (
        f"not enabled after the install; Blender said: {ui.install['output']}\nadd-ons: {state['addons']}"
    )
    assert state["panel_registered"] and state["panel_category"] == "Stylepass", state
    assert not state["errors"], state["errors"]

    seen = ui.figures["sidebar_tabs_seen"] = _open_stylepass_tab(ui)
    sidebar = ui.state()["sidebar"]
    assert sidebar["category"] == "Stylepass", f"tabs met down the strip: {seen}"
    assert sidebar["rect"][2] >= SIDEBAR_COLLAPSED, f"the sidebar is folded to its tabs: {sidebar}"
    ui.shot("01-sidebar-stylepass-tab")


def _tidy(ui, op: str, since: float) -> None:
    """After a test, also a failed one: ESC a Stylepass operator that still runs and close any render view,
    so the next test starts idle with keys going to the 3D viewport."""
    state = ui.state()
    if any(_same_op(name, op) for name in state["modal_operators"]) and not _ended(state, op, since):
        ui.mouse_to(*ui.region_centre(state["view3d"]))
        ui.key("Escape")
        ui.wait_state(lambda s: not any(_same_op(n, op) for n in s["modal_operators"]), 60, f"{op} to stop")
    for window in ui.state()["windows"][1:]:
        _close_window(ui, ui.window_box(window))

    # First of Stylepass's operators in the session, as an artist's first Stylise Frame: whatever Stylepass does
    # once per session (or per colour setting) is measured here. The render view it opens is closed again before
    # the ESC tests, whose keys it would take.


def test_stylise_frame_from_search(ui):
    """F3 > Stylise Frame > Enter: the status bar's progress bar moves through the pass render, the PNG lands
    in the output folder, the result is shown, the compositor gets the group wired, and the UI never stalls
    more than 100 ms beyond Blender's own cost of the same steps in this session: from Enter until the
    result is handed to the render view, beyond the no-op operator's longest gap; while the render view
    opens and draws it, beyond the same EXR shown there without Stylepass (before and after)."""
    _require_extension(ui)
    reference = _references(ui)
    before = {entry["path"]: entry["mtime"] for entry in ui.state()["stylised"]}

    enter = time.monotonic()
    try:
        enter = ui.search("Stylise Frame", shot="02-search-stylise-frame")
        # Screen copies while the second Blender renders samples (file copies: Blender is not touched; they are
        # saved as PNGs once the measured window is over).
        frames: list[list] = []

        def finished(state):
            latest = state["progress"][-1] if state["progress"] else None
            if (
                latest
                and latest[0] > enter
                and latest[1]
                and "sample" in (latest[2] or "")
                and len(frames) < 8
            ):
                if not frames or frames[-1][1] != latest[2]:
                    frames.append([ui.copy_frame(), latest[2], latest[1]])
            return _ended(state, FRAME_OP, enter)

        state = ui.wait_state(finished, 180, "Stylise Frame to finish", fail=ui.failure)
        end = _ended(state, FRAME_OP, enter)
        # The result appears where the artist is: an open Image Editor, else the render view (a new window, as
        # F12), shown from a timer once the operator has returned (so it does not linger as modal).
        state = ui.wait_state(
            lambda s: len(s["windows"]) > 1 or any("IMAGE_EDITOR" in w["areas"] for w in s["windows"]),
            20,
            "the result shown in an Image Editor or the render view",
        )
        shown = state["windows"][1:]
        if shown:
            box = ui.window_box(shown[0])
            ui.screen.wait_drawn(box, what="the render view with the result")
        result_drawn = time.monotonic()
        # Blender removes a modal operator's handler when it returns FINISHED or CANCELLED: it must leave the list.
        try:
            ui.wait_state(
                lambda s: not any(_same_op(op, FRAME_OP) for op in s["modal_operators"]),
                5,
                "the handler to go",
            )
            lingering = None
        except UISessionError:
            lingering = ui.state()["modal_operators"]
        calls = ui.command("calls", t0=enter, t1=result_drawn)
        shows = [c for c in calls if c["what"] == "images.show_result"]
        display = shows[0]["start"] if shows else end["t"]
        gaps = ui.gaps(enter, result_drawn)  # the whole Stylise Frame, Enter to the drawn result
        working = ui.gaps(enter, display, inside=True)  # Enter until the result is handed to the render view
        showing = ui.gaps(display, result_drawn, overlap=True)  # the render view opens and draws the result
        progress = ui.command("progress", t0=enter - 1.0, t1=time.monotonic())
        for keep, (frame, _text, _fraction) in enumerate(frames):
            if keep == len(frames) - 1:
                ui.save_frame(frame, "10-stylise-frame-progress", status_bar=True)
            else:
                ui.host_path(frame).unlink()
        if shown:
            ui.screen.wait_settled(quiet=0.5)
        ui.shot("03-after-stylise-frame")
        if shown:
            _close_window(ui, box)
        # Blender's own cost of showing an EXR varies with the machine's load (±0.2 s when other work runs): the
        # same reference once more, now, next to the ones taken before.
        show_after, _seconds = _show_image_reference(ui)

        new = [e for e in state["stylised"] if before.get(e["path"]) != e["mtime"]]
        invoke = [
            e for e in state["events"] if e["op"] == FRAME_OP and e["call"] == "invoke" and e["t"] > enter
        ]
        renders = [c for c in calls if c["what"] == "PassProcess.render"]
        noop = reference["noop_operator_max_gap"]
        show_reference = round(max(reference["show_image_max_gap"], show_after), 3)
        beyond_working = working["max_gap"] - noop
        beyond_showing = showing["max_gap"] - show_reference
        figures = ui.figures["stylise_frame"] = {
            "enter_to_result_drawn_seconds": round(result_drawn - enter, 2),
            "operator_seconds": round(end["t"] - enter, 2),
            "pass_render_seconds": round(renders[0]["seconds"], 2)
            if renders and renders[0]["seconds"]
            else None,
            "enter_to_result_handed_over_seconds": round(display - enter, 2),
            "invoke_seconds": round(invoke[-1]["seconds"], 3) if invoke else None,
            # The whole Stylise Frame, Enter to the drawn result, against the no-op operator.
            "max_gap": round(gaps["max_gap"], 3),
            "reference_noop_operator_max_gap": noop,
            "max_gap_beyond_noop": round(gaps["max_gap"] - noop, 3),
            # Its two parts, each against Blender's own cost of the same step.
            "max_gap_until_handed_over": round(working["max_gap"], 3),
            "max_gap_until_handed_over_beyond_noop": round(beyond_working, 3),
            "max_gap_showing": round(showing["max_gap"], 3),
            "reference_show_image_max_gap": show_reference,  # the longest of the two before and one after
            "max_gap_showing_beyond_reference": round(beyond_showing, 3),
            "top_gaps": [gap for gap, _at in gaps["top"]],
            # What the main thread did in the longest gaps: Stylepass's steps, draws, windows, status texts.
            "blame_until_handed_over": working["blame"][:3],
            "blame_showing": showing["blame"][:2],
            "main_thread_steps": _steps(calls),
            **{
                f"reference_{name}": value
                for name, value in reference.items()
                if name != "show_image_max_gap"
            },
            "reference_show_image_after_max_gap": round(show_after, 3),
            "ended": end,
            "result_shown_in": [w["areas"] for w in shown],
            "still_modal_5s_after_end": lingering,
            "progress_screen_copies": [[text, round(100 * fraction, 1)] for _, text, fraction in frames],
            # How long the bar stood still at most, and at what: Cycles in a background Blender reports samples
            # rarely, so a long pass render shows one value for seconds.
            "progress_longest_still": _longest_still(progress, enter, end["t"]),
            "progress": _progress_figures(progress, enter),
        }
        print(
            f"\n[{ui.suite}] Stylise Frame: longest heartbeat gap from Enter to the drawn result {figures['max_gap']} s "
            f"(no-op reference operator {noop} s); until the result is handed to the render view "
            f"{figures['max_gap_until_handed_over']} s ({beyond_working:.3f} s beyond the no-op operator, limit "
            f"{FRAME_GAP_MARGIN} s); while the render view shows it {figures['max_gap_showing']} s "
            f"({beyond_showing:.3f} s beyond the same EXR shown without Stylepass, limit {SHOW_GAP_MARGIN} s); "
            f"Enter to result {figures['enter_to_result_drawn_seconds']} s\n[{ui.suite}] Stylise Frame figures: "
            f"{figures}"
        )
        assert end["status"] in (None, ["FINISHED"]), (
            f"Stylise Frame ended {end}; log:\n{ui.session.tail_log()}"
        )
        assert shown or any("IMAGE_EDITOR" in w["areas"] for w in state["windows"]), "the result is not shown"
        assert [e["path"].rsplit("/", 3)[-3:] for e in new] == [["UITest", "stylised", "0001.png"]], new
        assert _png_size(ui.host_path(new[0]["path"])) == (480, 270)
        problems = _progress_problems(progress, enter, end["t"])
        assert not problems, f"the status bar's progress bar: {problems}; samples: {figures['progress']}"

        # The compositor: Render Layers -> Stylepass group -> the final output, the group showing the result.
        dump = ui.command("compositor")
        tree = dump["tree"]
        assert tree is not None and dump["use_nodes"], dump
        groups = [n for n in tree["nodes"] if n.get("node_tree") in dump["groups"]]
        stylepass = [n for n in groups if n["node_tree"].startswith("Stylepass")]
        assert len(stylepass) == 1, f"group nodes: {groups}"
        node = stylepass[0]["name"]
        links = tree["links"]
        assert any(
            ln["to_node"] == node
            and ln["from_type"] == "CompositorNodeRLayers"
            and ln["from_socket"] == "Image"
            for ln in links
        ), links
        final = ("CompositorNodeComposite", "NodeGroupOutput")
        assert any(ln["from_node"] == node and ln["to_type"] in final for ln in links), links
        inside = dump["groups"][stylepass[0]["node_tree"]]
        images = [n["image"] for n in inside["nodes"] if n.get("image")]
        assert images and any("Stylepass" in image["name"] for image in images), inside["nodes"]
        ui.figures["compositor"] = {"group": stylepass[0]["node_tree"], "images": images}

        # Found by this test (Blender 5.2 and 4.3): when the result opens the render view (`render.view_show`
        # called from the modal step), the operator's modal handler outlives its FINISHED. The next TIMER event
        # of any operator runs its step again (the result is finished and shown again, the render view reopens)
        # and, while it lingers, it swallows ESC.
        assert lingering is None, (
            f"Stylise Frame returned {end['status']} but is still a modal operator 5 s later: {lingering}"
        )
        # Last, so a stall is reported with everything else already checked.
        assert beyond_working < FRAME_GAP_MARGIN, (
            f"the UI stalled {working['max_gap']:.3f} s between Enter and the result handed to the render view, "
            f"{beyond_working:.3f} s beyond the no-op operator's {noop:.3f} s (limit {FRAME_GAP_MARGIN} s); what "
            f"the main thread did then (seconds after the gap's start): {working['blame'][:2]}"
        )
        assert beyond_showing < SHOW_GAP_MARGIN, (
            f"the UI stalled {showing['max_gap']:.3f} s while the render view opened with the result, "
            f"{beyond_showing:.3f} s beyond the same EXR shown there without Stylepass ({show_reference:.3f} s, "
            f"limit {SHOW_GAP_MARGIN} s); what the main thread did then: {showing['blame'][:2]}"
        )
    finally:
        _tidy(ui, FRAME_OP, enter)


# After Stylise Frame from F3: frame 1's passes exist, and a cancelled render must leave them as they are.
def test_escape_during_the_pass_render(ui):
    """Stylise Frame with the pass render slowed to 2000 samples: the status bar shows the samples, the UI
    answers meanwhile (longest heartbeat gap within 100 ms of the no-op operator's), ESC ends the operator
    (cancelled) within a second, the second Blender is gone, no pass or stylised file appeared, the
    temporary folders are removed and the scene's render settings are as they were."""
    _require_extension(ui)
    reference = _references(ui)
    original = ui.command("settings")
    ui.command("scene", pass_samples=SLOW_PASS_SAMPLES)
    enter = time.monotonic()
    try:
        settings_before = ui.command("settings")
        state = ui.state()
        out = state["output_dir"]
        temp_folders = sorted({state["tempdir"], "/tmp"})  # the second Blender's scene copy goes to one
        files_before = ui.files(out)
        assert not ui.pass_children(), f"a pass render was left running before the test: {ui.pass_children()}"

        enter = ui.search("Stylise Frame", shot="07-search-stylise-frame-slow-passes")

        def sampling(state):
            return [
                p for p in state["progress"] if p[0] > enter and p[1] is not None and "sample" in (p[2] or "")
            ]

        def failed(state):
            end = _ended(state, FRAME_OP, enter)
            return ui.failure(state) or (f"Stylise Frame ended before ESC ({end})" if end else None)

        # 1. The second Blender renders samples; the status bar says so.
        state = ui.wait_state(sampling, 120, "the status bar to show the pass render's samples", fail=failed)
        first_sample = sampling(state)[0]
        state = ui.wait_until(first_sample[0] + 1.0, timeout=30)  # a few samples later
        frame = ui.copy_frame()  # a file copy, Blender is not touched; saved as PNG after the key
        children = ui.pass_children()
        work_folders = ui.glob(f"{out}/{SCENE}/passes", ".tmp-*")
        scene_copies = [path for folder in temp_folders for path in ui.glob(folder, "stylepass-scene-*")]

        # 2. ESC, as an artist presses it.
        key_before = time.monotonic()
        ui.key("Escape")
        key_after = time.monotonic()
        state = ui.wait_state(
            lambda s: _ended(s, FRAME_OP, enter), 30, "Stylise Frame to end after ESC", fail=ui.failure
        )
        end = _ended(state, FRAME_OP, enter)
        left = ui.pass_children()  # right after the operator ended
        files_after = ui.files(out)
        work_left = ui.glob(f"{out}/{SCENE}/passes", ".tmp-*")
        copies_left = [path for folder in temp_folders for path in ui.glob(folder, "stylepass-scene-*")]
        ui.screen.wait_settled(quiet=0.5)
        settled = time.monotonic()
        settings_after = ui.command("settings")
        progress = ui.command("progress", t0=enter - 1.0, t1=settled)
        calls = ui.command("calls", t0=enter, t1=settled)
        escape = [
            e for e in state["events"] if e["op"] == FRAME_OP and e["call"] == "escape" and e["t"] > enter
        ]
        killed = [c for c in calls if c["what"] == "PassProcess.kill" and c["start"] > key_before]
        during = ui.gaps(enter, key_before)
        after_key = ui.gaps(key_before, settled)
        ui.save_frame(frame, "08-pass-render-progress", status_bar=True)
        ui.shot("09-after-escape-pass-render")

        figures = ui.figures["escape_pass_render"] = {
            "pass_samples": SLOW_PASS_SAMPLES,
            "esc_latency": round(end["t"] - key_before, 3),
            "esc_key_send_seconds": round(key_after - key_before, 3),
            "escape_seen_after": round(escape[-1]["t"] - key_before, 3) if escape else None,
            "pass_child_killed_after": (
                round(killed[0]["start"] + killed[0]["seconds"] - key_before, 3) if killed else None
            ),
            "enter_to_first_sample": round(first_sample[0] - enter, 2),
            "last_progress_before_key": next(
                ([round(100 * f, 1), text] for t, f, text in reversed(progress) if t < key_before and f), None
            ),
            "max_gap_enter_to_key": round(during["max_gap"], 3),
            "max_gap_beyond_noop": round(during["max_gap"] - reference["noop_operator_max_gap"], 3),
            "blame_enter_to_key": during["blame"][:3],
            "max_gap_key_to_settled": round(after_key["max_gap"], 3),
            "blame_key_to_settled": after_key["blame"][:2],
            "pass_children_during": [c["pid"] for c in children],
            "pass_children_after": left,
            "scene_copies_during": scene_copies,
            "work_folders_during": work_folders,
            "ended": end,
            "progress": _progress_figures(progress, enter)[-8:],
        }
        print(f"\n[{ui.suite}] ESC during the pass render: {figures}")

        assert end["status"] in (None, ["CANCELLED"]), f"Stylise Frame ended {end}, not cancelled: {figures}"
        assert end["t"] - key_before < ESC_LATENCY_LIMIT, (
            f"ESC answered after {end['t'] - key_before:.2f} s (limit {ESC_LATENCY_LIMIT} s): {figures}"
        )
        assert children, "no second Blender (pass_child.py) was seen rendering the passes"
        assert figures["max_gap_beyond_noop"] < FRAME_GAP_MARGIN, (
            f"the UI stalled {during['max_gap']:.3f} s while the second Blender rendered, "
            f"{figures['max_gap_beyond_noop']} s beyond the no-op operator (limit {FRAME_GAP_MARGIN} s): "
            f"{figures['blame_enter_to_key']}"
        )
        assert not left, f"the second Blender outlived ESC: {left}"
        assert work_folders and scene_copies, (
            f"the temporary folders were not where this test looks ({out}/{SCENE}/passes/.tmp-*, "
            f"{temp_folders}/stylepass-scene-*): {figures}"
        )
        assert not work_left and not copies_left, f"left behind after ESC: {work_left + copies_left}"
        changed = {
            path: [files_before.get(path), files_after.get(path)]
            for path in files_before.keys() | files_after.keys()
            if files_before.get(path) != files_after.get(path)
        }
        assert not changed, f"a cancelled frame must leave the files as they were: {changed}"
        assert settings_after == settings_before, (settings_before, settings_after)
        # Cancelled early in a render that updates rarely (see the Stylise Frame test): one value is enough.
        problems = _progress_problems(progress, enter, end["t"], distinct=1)
        assert not problems, f"the progress bar during the pass render: {problems}; {figures['progress']}"
    finally:
        _tidy(ui, FRAME_OP, enter)
        ui.command("scene", pass_samples=original["pass_samples"])


def test_a_long_animation_asks_first_and_escape_starts_nothing(ui):
    """Stylise Animation over more than 50 frames asks before it starts (the default 250-frame range used to
    start at once); ESC on the question leaves everything as it was."""
    _require_extension(ui)
    ui.command("scene", frame_start=1, frame_end=120)
    ui.command("prefs", developer_ui=True)
    before = {entry["path"]: entry["mtime"] for entry in ui.state()["stylised"]}
    try:
        enter = ui.search("Stylise Animation")
        state = ui.wait_state(
            lambda s: any(
                e["op"] == ANIMATION_OP and e["call"] == "invoke" and e["t"] > enter for e in s["events"]
            ),
            30,
            "Stylise Animation's invoke",
        )
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("07a-animation-asks-first")
        state = ui.wait_until(time.monotonic() + 1.5)
        started = [r for r in state["engine_runs"] if r["start"] > enter]
        modal = [op for op in state["modal_operators"] if _same_op(op, ANIMATION_OP)]
        assert not started and not modal, f"it started without asking: runs {started}, modal {modal}"
        ui.key("Escape")
        ui.screen.wait_settled(quiet=0.5)
        state = ui.wait_until(time.monotonic() + 1.5)
        started = [r for r in state["engine_runs"] if r["start"] > enter]
        executed = [
            e
            for e in state["events"]
            if e["op"] == ANIMATION_OP and e["call"] == "execute" and e["t"] > enter
        ]
        assert not started and not executed, f"ESC on the question still ran it: runs {started}, {executed}"
        assert {entry["path"]: entry["mtime"] for entry in state["stylised"]} == before
        ui.figures["confirmation"] = {"frames": 120, "asked": True, "escape_started_nothing": True}
    finally:
        ui.command("prefs", developer_ui=False)
        ui.command("scene", frame_start=1, frame_end=3)


def test_escape_answers_during_a_long_engine_job(ui):
    """Stylise Animation with a 10 s-per-frame engine: ESC ends the operator (cancelled) within a second, and
    while the operator only polls the running job the UI's longest stall stays within half a second of an
    idle full redraw of the same session."""
    _require_extension(ui)
    reference = _references(ui)
    ui.command("engine", seconds=SLOW_ENGINE_SECONDS)
    # Frames 2-4: new passes to render (frame 1's are Stylise Frame's).
    ui.command("scene", frame_start=2, frame_end=4)
    # Stylise Animation is in no menu: F3 finds operators outside menus only with Developer Extras on.
    ui.command("prefs", developer_ui=True)
    before = {entry["path"]: entry["mtime"] for entry in ui.state()["stylised"]}
    try:
        enter = ui.search("Stylise Animation", shot="04-search-stylise-animation")

        # 1. The engine job of the first frame runs (once the second Blender has rendered its passes).
        def engine_run(state):
            runs = [r for r in state["engine_runs"] if r["start"] > enter]
            return runs[0] if runs else None

        def failed(state):
            end = _ended(state, ANIMATION_OP, enter)
            return ui.failure(state) or (f"Stylise Animation ended early ({end})" if end else None)

        state = ui.wait_state(engine_run, 240, "the first frame's engine job", fail=failed)
        engine = engine_run(state)
        assert any(_same_op(op, ANIMATION_OP) for op in state["modal_operators"]), state["modal_operators"]

        # 2. Where the main thread renders the next frame's passes during this frame's job (a blocking render
        # in `animation.prepare`, before the animation's passes moved to the second Blender), that render is
        # measured apart; after it the operator only polls the job.
        if state["hooks"].get("animation.prepare"):

            def next_prepared(state):
                done = [p for p in state["prepares"] if p["start"] > engine["start"] and p["end"]]
                return done[0] if done else None

            state = ui.wait_state(next_prepared, 120, "the next frame's passes", fail=failed)
            waiting_since = next_prepared(state)["end"]
        else:
            waiting_since = engine["start"]
        state = ui.wait_until(waiting_since + 2.0)
        job = engine_run(state)
        assert job["end"] is None, f"the slow engine finished before ESC could be tested: {job}"
        ui.shot("05-engine-job-running")

        # 3. ESC, as an artist presses it; the operator must end (cancelled) within a second.
        key_before = time.monotonic()
        ui.key("Escape")
        key_after = time.monotonic()
        state = ui.wait_state(
            lambda s: _ended(s, ANIMATION_OP, enter), 30, "Stylise Animation to end after ESC", fail=failed
        )
        end = _ended(state, ANIMATION_OP, enter)
        ui.screen.wait_settled(quiet=0.5)
        state = ui.state()
        ui.shot("06-after-escape")
        job = engine_run(state)
        escape = [e for e in state["events"] if e["op"] == ANIMATION_OP and e["call"] == "escape"]
        waiting = ui.gaps(waiting_since, key_before)
        whole_job = ui.gaps(engine["start"], key_before, overlap=True)
        after_key = ui.gaps(key_before, end["t"])
        figures = ui.figures["escape"] = {
            "esc_latency": round(end["t"] - key_before, 3),
            "esc_key_send_seconds": round(key_after - key_before, 3),
            "escape_seen_after": round(escape[-1]["t"] - key_before, 3) if escape else None,
            "engine_stopped_after": round(job["end"] - key_before, 3) if job["end"] else None,
            "max_gap_while_polling": round(waiting["max_gap"], 3),
            "polling_window": round(key_before - waiting_since, 2),
            "max_gap_whole_engine_job": round(whole_job["max_gap"], 3),
            "top_gaps_whole_engine_job": [gap for gap, _at in whole_job["top"]],
            "next_frame_prepare_seconds": round(waiting_since - engine["start"], 2),
            "max_gap_key_to_end": round(after_key["max_gap"], 3) if after_key["max_gap"] else None,
            "blame_key_to_end": after_key["blame"][:3],
            "main_thread_steps_key_to_end": _steps(ui.command("calls", t0=key_before, t1=end["t"] + 0.1)),
            # What the main thread did between the key and the end: [seconds after the key, what].
            "after_key": sorted(
                [
                    [round(at - key_before, 3), f"gap {gap:.3f} s"]
                    for gap, at in after_key["top"]
                    if gap > 0.05
                ]
                + [
                    [round(at - key_before, 3), f"status: {text}"]
                    for at, text in state["status_history"]
                    if key_before - 0.5 < at < end["t"] + 0.5
                ]
            ),
            **{f"reference_{name}": value for name, value in reference.items()},
            "ended": end,
            "engine_run": job,
            "main_thread_after_engine_start": {
                "prepares": [
                    [round(p["start"] - engine["start"], 2), round((p["end"] or 0) - engine["start"], 2)]
                    for p in state["prepares"]
                    if p["start"] > engine["start"]
                ],
                "renders": [
                    [round(r["start"] - engine["start"], 2), round((r["end"] or 0) - engine["start"], 2)]
                    for r in state["renders"]
                    if r["start"] > engine["start"]
                ],
            },
        }
        print(f"\n[{ui.suite}] ESC figures: {figures}")

        assert end["status"] in (None, ["CANCELLED"]), f"Stylise Animation ended {end}, not cancelled"
        assert job["aborted"] and job["error"] and "Aborted" in job["error"], job
        assert end["t"] - key_before < ESC_LATENCY_LIMIT, (
            f"ESC answered after {end['t'] - key_before:.2f} s (limit {ESC_LATENCY_LIMIT} s): {figures}"
        )
        # The operator redraws the status bar and progress 20 times a second; on llvmpipe a redraw alone
        # costs a few hundred ms, so the bound is the same session's idle full redraw plus a margin.
        limit = reference["redraw_all_max_gap"] + GAP_MARGIN
        assert waiting["max_gap"] < limit, (
            f"the UI stalled {waiting['max_gap']:.2f} s while the operator only polled the engine job "
            f"(limit {limit:.2f} s = an idle full redraw + {GAP_MARGIN} s): {figures}"
        )
        after = {entry["path"]: entry["mtime"] for entry in state["stylised"]}
        assert after == before, "a cancelled frame must leave the results on disk as they were"
    finally:
        ui.command("engine", seconds=0)
        ui.command("prefs", developer_ui=False)
        ui.command("scene", frame_start=1, frame_end=3)


def test_stylise_animation_fuses_the_frames_between_keyframes(ui):
    """Stylise Animation on a moving shot, as an artist runs it (issue 14): keyframes at 1, 5 and 8 (Keyframe
    Interval 4); the status bar says when the frames between are fused; every frame lands with its record
    naming its keyframes; the UI keeps drawing; a deleted frame between keyframes is redone alone."""
    _require_extension(ui)
    reference = _references(ui)
    ui.command("engine", seconds=0)
    ui.command("animate", frames=8)
    ui.command("scene", frame_start=1, frame_end=8)
    ui.command("stylepass", values={"keyframe_interval": 4, "temporal_coherence": True})
    ui.command("prefs", developer_ui=True)
    frames = list(range(1, 9))
    try:
        enter = ui.search("Stylise Animation", shot="11-search-stylise-animation")
        fusing: list[list] = []

        def finished(state):
            for at, text in state["status_history"]:
                if at > enter and text and "fusing" in text and not any(text == f[1] for f in fusing):
                    if len(fusing) < 3:
                        fusing.append([ui.copy_frame(), text])
            return _ended(state, ANIMATION_OP, enter)

        state = ui.wait_state(finished, 600, "Stylise Animation to finish", fail=ui.failure)
        end = _ended(state, ANIMATION_OP, enter)
        assert end["status"] in (None, ["FINISHED"]), f"Stylise Animation ended {end}"
        for keep, (frame, _text) in enumerate(fusing):
            if keep == 0:
                ui.save_frame(frame, "12-animation-fusing-status", status_bar=True)
            else:
                ui.host_path(frame).unlink()
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("13-after-stylise-animation")
        records = {int(k): v for k, v in ui.command("records", frames=frames).items()}
        gaps = ui.gaps(enter, end["t"])
        runs = [r for r in state["engine_runs"] if r["start"] > enter]
        figures = ui.figures["animation_fusion"] = {
            "seconds": round(end["t"] - enter, 2),
            "fusing_status": [text for _frame, text in fusing],
            "max_gap": round(gaps["max_gap"], 3),
            "reference_redraw_all_max_gap": reference["redraw_all_max_gap"],
            "engine_runs": len(runs),
            "records": records,
        }
        print(f"\n[{ui.suite}] keyframe fusion figures: {figures}")
        assert {f: r["keyframe"] for f, r in records.items() if r and r["keyframe"]} == {
            1: "first",
            5: "interval",
            8: "last",
        }, records
        assert [records[f]["keyframes"] for f in (2, 3, 4, 6, 7)] == [[1, 5]] * 3 + [[5, 8]] * 2, records
        assert fusing, "the status bar never said the frames between keyframes were being fused"
        limit = reference["redraw_all_max_gap"] + GAP_MARGIN
        assert gaps["max_gap"] < limit, (
            f"the UI stalled {gaps['max_gap']:.2f} s (limit {limit:.2f} s): {figures}"
        )

        # A frame between keyframes deleted on disk: running again redoes that frame alone.
        path = next(e["path"] for e in state["stylised"] if e["path"].endswith(f"{SCENE}/stylised/0003.png"))
        ui.host_path(path).unlink()
        before = {e["path"]: e["mtime"] for e in ui.state()["stylised"]}
        enter = ui.search("Stylise Animation")
        state = ui.wait_state(
            lambda s: _ended(s, ANIMATION_OP, enter), 300, "the second run to finish", fail=ui.failure
        )
        after = {e["path"]: e["mtime"] for e in state["stylised"]}
        changed = sorted(p for p in after if before.get(p) != after[p])
        runs = [r for r in state["engine_runs"] if r["start"] > enter]
        assert [p.rsplit("/", 1)[-1] for p in changed] == ["0003.png"] and len(runs) == 1, (changed, runs)
    finally:
        ui.command("animate", frames=0)
        ui.command("stylepass", values={"keyframe_interval": 12})
        ui.command("prefs", developer_ui=False)
        ui.command("scene", frame_start=1, frame_end=3)


def test_style_group_from_the_selection_stylises_and_undoes(ui):
    """Issue 15 as an artist starts it: select two objects, F3 > Add Style Group; the group holds them and
    starts from the scene's style; Stylise Frame records it; Ctrl+Z takes the group away again."""
    _require_extension(ui)
    ui.command("engine", seconds=0)
    ui.command("groups", clear=True)
    ui.command("select", names=["Sphere", "Cone"], active="Sphere")
    ui.command("prefs", developer_ui=True)
    ui.command("undo_push", message="before the style group")
    try:
        ui.search("Add Style Group")
        state = ui.wait_state(lambda s: ui.command("groups") or None, 30, "the new style group")
        groups = ui.command("groups")
        assert groups == [
            {"name": "Group 1", "objects": ["Cone", "Sphere"], "style_preset": groups[0]["style_preset"]}
        ]
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("14-style-group-added")
        enter = ui.search("Stylise Frame")
        state = ui.wait_state(
            lambda s: _ended(s, FRAME_OP, enter), 180, "Stylise Frame to finish", fail=ui.failure
        )
        assert _ended(state, FRAME_OP, enter)["status"] in (None, ["FINISHED"])
        record = ui.command("records", frames=[1])
        runs = [r for r in ui.state()["engine_runs"] if r["start"] > enter]
        assert len(runs) == 2, runs  # the scene's style and the group's
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("15-style-group-stylised")
        ui.figures["style_group"] = {"groups": groups, "engine_runs": len(runs), "record": record}
        # Undo back past Stylise Frame to before the group was added (the step pushed above).
        presses = 0
        while ui.command("groups") and presses < 3:
            ui.key("ctrl+z")
            presses += 1
            ui.screen.wait_settled(quiet=0.5)
        assert ui.command("groups") == [], "Ctrl+Z did not take the style group away"
        ui.figures["style_group"]["undo_presses"] = presses
    finally:
        ui.command("groups", clear=True)
        ui.command("prefs", developer_ui=False)


# Three style groups, one object each, in looks far from the scene's own (Ochre Hatch, left on the sky and the
# sphere) and from each other: (group, object, built-in style).
THREE_GROUPS = (
    ("Cube", "Cube", "style_24"),  # Delft Blue
    ("Cone", "Cone", "style_20"),  # Red Ember
    ("Ground", "Ground", "style_13"),  # Lime Thicket
)


def _screen_point(window_height: int, rect: list[int]) -> tuple[int, int]:
    """Screen point (top-left origin) of the middle of a Blender rect [x, y, w, h] (bottom-left origin)."""
    x, y, width, height = rect
    return x + width // 2, window_height - (y + height // 2)


def _to_workspace(ui, name: str, key: str) -> dict:
    """Press `key` (Ctrl+PageUp or Ctrl+PageDown: Blender cycles workspaces in the top bar's tab order) until
    the main window shows workspace `name`, as an artist flips through the tabs; the `workspace` answer."""
    info = ui.command("workspace")
    seen = [info["workspace"]]
    while info["workspace"] != name:
        assert len(seen) <= len(info["workspaces"]), f"{key} went {seen}, never to {name}"
        before = ui.screen.grab()
        ui.key(key)
        ui.screen.wait_change(before, what=f"{key} to change the workspace")
        ui.screen.wait_settled(quiet=0.3, timeout=60)
        info = ui.command("workspace")
        seen.append(info["workspace"])
    return info


def _poll(ui, op: str, check, timeout: float, what: str) -> dict:
    """Ask the Blender side `op` until `check(answer)` holds (keys and the compositor act between its ticks)."""
    deadline = time.monotonic() + timeout
    while not check(answer := ui.command(op)):
        if time.monotonic() > deadline:
            raise UISessionError(f"waited {timeout:.0f} s for {what}; last {op}: {answer}")
        time.sleep(0.1)
    return answer


def _backdrop_beside(shown: dict, size: list[int], window_height: int) -> tuple[float, list[int]]:
    """Backdrop zoom and offset that put the picture (`size`) in the room right of the Stylepass and Viewer
    nodes and below any node further right (the output), from the `stylepass_node` answer."""
    nodes = shown["nodes"]
    x, y, width, height = shown["region"]
    margin = 16
    left = max(nodes["Stylepass"][2], nodes["Viewer"][2]) + margin
    right = x + width - margin
    above = [box[3] for name, box in nodes.items() if box[2] > left and name != "Viewer"]
    top = max([nodes["Stylepass"][1], *above]) + margin
    bottom = max(nodes["Stylepass"][3], nodes["Viewer"][3])
    zoom = min((right - left) / size[0], (bottom - top) / size[1], 1.0)
    assert zoom > 0.3, f"no room beside the nodes for the backdrop: {shown}"
    # The offset moves the picture's middle from the region's middle, in pixels, y up.
    middle = (x + width / 2, window_height - (y + height / 2))
    offset = [round((left + right) / 2 - middle[0]), round(middle[1] - (top + bottom) / 2)]
    return round(zoom, 3), offset


def test_three_style_groups_and_their_compositor_layers(ui):
    """Three style groups in three built-in styles on three objects, the scene's style on the rest; F3 >
    Stylise Frame; the frame's layers file is written and the Stylepass node in the compositor has the outputs
    Line Art and, per group in group order, "<group> Layer" and "<group> Mask", fed by the file's passes. The
    artist opens the Compositing workspace, maximises the node editor and frames the node (View All, click it,
    View Selected), then Ctrl+Shift+clicks it until a Viewer shows the first group's layer on the backdrop.
    Everything the test changed goes back: Viewer, selection, backdrop, sidebar, maximised area, workspace,
    groups."""
    _require_extension(ui)
    ui.command("engine", seconds=0)
    ui.command("groups", clear=True)
    ui.command("edit", frame=1)  # the frame whose layers file is checked
    start = ui.command("workspace")
    enter = time.monotonic()
    tree = selection = view = None
    try:
        # 1. The groups, each made with Add Style Group from its object and given its own style.
        specs = [{"name": g, "objects": [o], "style_preset": s} for g, o, s in THREE_GROUPS]
        groups = ui.command("make_groups", groups=specs)
        assert groups == [{"name": g, "objects": [o], "style_preset": s} for g, o, s in THREE_GROUPS], groups

        # 2. F3 > Stylise Frame over the viewport: the scene's style and each group's run, and the result shows.
        state = ui.state()
        ui.mouse_to(*ui.region_centre(state["view3d"]))
        ui.screen.wait_settled(quiet=0.5)
        enter = ui.search("Stylise Frame")
        state = ui.wait_state(
            lambda s: _ended(s, FRAME_OP, enter), 180, "Stylise Frame to finish", fail=ui.failure
        )
        end = _ended(state, FRAME_OP, enter)
        assert end["status"] in (None, ["FINISHED"]), f"Stylise Frame ended {end}"
        runs = [r for r in state["engine_runs"] if r["start"] > enter]
        assert len(runs) == 1 + len(THREE_GROUPS), runs  # the scene's style and each group's
        state = ui.wait_state(
            lambda s: len(s["windows"]) > 1 or any("IMAGE_EDITOR" in w["areas"] for w in s["windows"]),
            20,
            "the result shown in an Image Editor or the render view",
        )
        for window in state["windows"][1:]:
            ui.screen.wait_drawn(ui.window_box(window), what="the render view with the result")
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("16-three-style-groups-result")
        stylised = [e["path"] for e in state["stylised"] if e["path"].endswith(f"{SCENE}/stylised/0001.png")]
        shutil.copyfile(ui.host_path(stylised[0]), ui.shots / "16-three-style-groups-frame.png")
        _tidy(ui, FRAME_OP, enter)  # closes the render view

        # 3. The layers file and the Stylepass node's outputs, in group order, fed from the file's passes.
        layers = ui.command("compositor_layers")
        wanted = [f"{group} {kind}" for group, _, _ in THREE_GROUPS for kind in ("Layer", "Mask")]
        ui.figures["three_style_groups"] = {"groups": groups, "engine_runs": len(runs), "layers": layers}
        assert layers["layers_file"].endswith(f"{SCENE}/stylised/layers/0001.exr"), layers
        assert layers["layers_file_size"], f"no layers file: {layers}"
        assert layers["outputs"] == ["Image", "Stylised", "Line Art", *wanted], layers["outputs"]
        shown = layers["layers_node"]
        assert shown and shown["image"] and shown["image"]["type"] == "MULTILAYER", layers
        assert shown["image"]["filepath"] == layers["layers_file"], layers
        # Line Art included: passes reused from an earlier run read it from disk too.
        assert [[name, name] for name in sorted([*wanted, "Line Art"])] == sorted(
            layers["links_to_outputs"]
        ), layers

        tree = ui.command("compositor")

        # 4. As the artist looks at it: the Compositing workspace; over its node editor Ctrl+Space (maximise the
        # area), View All, a click on the Stylepass node's header and View Selected.
        info = _to_workspace(ui, "Compositing", "ctrl+Prior")  # 3 tabs left of Layout
        editors = [a for a in info["areas"] if a.get("tree_type") == "CompositorNodeTree"]
        assert editors, f"no compositor node editor in the Compositing workspace: {info['areas']}"
        height = info["window"][1]
        ui.mouse_to(*_screen_point(height, editors[0]["rect"]))
        before = ui.screen.grab()
        ui.key("ctrl+space")
        ui.screen.wait_change(before, what="Ctrl+Space to maximise the node editor")
        ui.screen.wait_settled(quiet=0.5)
        maximised = ui.command("workspace")
        assert maximised["fullscreen"] and [a["type"] for a in maximised["areas"]] == ["NODE_EDITOR"], (
            maximised
        )
        ui.key("Home")  # View All
        ui.screen.wait_settled(quiet=0.5)
        node = ui.command("stylepass_node")
        selection = {"selected": node["selected"], "active": node["active"]}
        ui.mouse_to(*node["header"])
        ui.session.xdotool("click", "1")
        ui.screen.wait_settled(quiet=0.3)
        clicked = ui.command("stylepass_node")
        assert clicked["selected"] == [node["node"]] and clicked["active"] == node["node"], (node, clicked)
        ui.key("KP_Decimal")  # View Selected
        region = clicked["region"]
        ui.mouse_to(region[0] + 40, height - (region[1] + region[3] // 2))  # off the node: no tooltip
        ui.screen.wait_settled(quiet=0.5)
        framed = ui.command("stylepass_node")
        box, middle = framed["nodes"][node["node"]], _screen_point(height, region)
        off = [abs((box[0] + box[2]) / 2 - middle[0]), abs((box[1] + box[3]) / 2 - middle[1])]
        assert max(off) < 25, f"View Selected left the node {off} px off the editor's middle: {framed}"
        ui.shot("17-compositor-stylepass-node")

        # 5. One group's layer through a Viewer, as an artist makes one: Ctrl+Shift+click on the node links
        # its next output to a Viewer, so click until it is the first group's layer; then the backdrop (turned
        # on as its header button does), the sidebar closed (N), View All, and the backdrop moved and zoomed
        # (as Alt+MMB and Alt+V do) into the room right of the nodes: the nodes and the layer side by side.
        view = ui.command("node_editor")
        wanted_layer = f"{THREE_GROUPS[0][0]} Layer"
        fed = []
        for _ in range(len(layers["outputs"])):
            ui.mouse_to(*ui.command("stylepass_node")["header"])
            clicked_at = time.monotonic()
            ui.session.xdotool(
                "keydown", "ctrl", "keydown", "shift", "click", "1", "keyup", "shift", "keyup", "ctrl"
            )
            ui.screen.wait_settled(quiet=0.3)
            viewers = ui.command("viewer")["viewers"]
            fed.append([v["from"] for v in viewers])
            if fed[-1] == [wanted_layer]:
                break
        assert fed[-1] == [wanted_layer], f"Ctrl+Shift+click fed the Viewer from {fed}, never {wanted_layer}"
        ui.figures["three_style_groups"]["ctrl_shift_clicks"] = fed
        ui.command("node_editor", values={"show_backdrop": True})
        ui.mouse_to(*_screen_point(height, maximised["areas"][0]["rect"]))
        if view["show_region_ui"]:
            ui.key("n")
            _poll(ui, "node_editor", lambda r: not r["show_region_ui"], 10, "N to close the sidebar")
        ui.key("Home")
        ui.screen.wait_settled(quiet=0.5)
        size = ui.command("settings")["resolution"][:2]
        _poll(ui, "node_editor", lambda r: r["viewer_size"] == size, 60, "the compositor to run the Viewer")
        ui.wait_state(
            lambda s: any(c[0] > clicked_at and c[1] is not None for c in s["composites"]),
            60,
            "the compositor's run for the Viewer of the last click",
        )
        shown = ui.command("stylepass_node")
        zoom, offset = _backdrop_beside(shown, size, height)
        ui.command("node_editor", values={"backdrop_zoom": zoom, "backdrop_offset": offset})
        # A click on the Stylepass node makes it the active node again: the backdrop keeps the picture, and the
        # move-and-scale gizmo Blender draws on it while a Viewer is active goes.
        ui.mouse_to(*shown["header"])
        ui.session.xdotool("click", "1")
        _poll(
            ui, "stylepass_node", lambda r: r["active"] == node["node"], 10, "the click on the Stylepass node"
        )
        ui.mouse_to(region[0] + 40, height - (region[1] + region[3] // 2))
        ui.screen.wait_settled(quiet=1.0, timeout=60)
        ui.shot("18-compositor-viewer-backdrop")
        ui.figures["three_style_groups"].update(
            workspace=info,
            maximised=maximised,
            node_editor=view,
            backdrop=[zoom, offset],
            nodes=shown["nodes"],
        )

        # 6. Everything put back: the tree as Stylise Frame left it (and its selection), the editor's view
        # settings, the area (Ctrl+Space), the workspace (Ctrl+PageDown back to Layout).
        _put_back(ui, tree, selection, view, start["workspace"])
        after = ui.command("stylepass_node")
        assert [after["selected"], after["active"]] == [node["selected"], node["active"]], (node, after)
        assert ui.command("compositor") == tree, "the test left the compositor's tree changed"
        back = ui.command("workspace")
        assert back["workspace"] == start["workspace"] and not back["fullscreen"], back
    finally:
        _tidy(ui, FRAME_OP, enter)
        _put_back(ui, tree, selection, view, start["workspace"])
        ui.command("groups", clear=True)
        state = ui.state()
        if state["view3d"]:
            ui.mouse_to(*ui.region_centre(state["view3d"]))


def _put_back(ui, tree: dict | None, selection: dict | None, view: dict | None, workspace: str) -> None:
    """Undo what the compositor part of the test changed, whatever of it happened (also after a failure): the
    Viewer (nodes not in `tree`, the `compositor` answer before) and the node selection, a maximised area,
    the node editor's view settings, the workspace."""
    if tree is not None:
        keep = [node["name"] for node in tree["tree"]["nodes"]]
        ui.command("viewer", keep=keep, selection=selection)
    info = ui.command("workspace")
    if info["fullscreen"]:  # Ctrl+Space over the maximised node editor gives its area back
        ui.mouse_to(*_screen_point(info["window"][1], info["areas"][0]["rect"]))
        before = ui.screen.grab()
        ui.key("ctrl+space")
        ui.screen.wait_change(before, what="Ctrl+Space to give the node editor's area back")
        ui.screen.wait_settled(quiet=0.5)
    if view is not None and ui.command("workspace")["workspace"] == "Compositing":
        ui.command("node_editor", values={k: v for k, v in view.items() if k != "viewer_size"})
    if ui.command("workspace")["workspace"] != workspace:
        try:
            _to_workspace(ui, workspace, "ctrl+Next")
        finally:
            ui.command("workspace", name=workspace)  # the way back if the keys failed


# -- ComfyUI (issue 16) as an artist sets it up and runs it ------------------------------------------------

COMFYUI_READ_OP = "STYLEPASS_OT_comfyui_read"
# The scene's 480x270 at 25%: 120x67, so a step of the real-size SD 1.5 takes seconds on the CPU, not minutes.
COMFYUI_PERCENTAGE = 25
COMFYUI_STEPS = 2
COMFYUI_CANCEL_STEPS = 60  # minutes of work: ESC meets it mid-run
STEP_PREVIEW_IMAGE = "Stylepass Step Preview"  # addon.images.PREVIEW_IMAGE
# ComfyUI stops a running prompt between two sampling steps (a few seconds each here); well above that.
COMFYUI_QUEUE_LIMIT = 60.0
COMFYUI_STEP_TEXT = re.compile(r"ComfyUI: step (\d+)/(\d+)")
PROBE_STEP = 8  # pixels between the stops of the mouse down the sidebar: its fields are ~20 px tall
# The server's lists as /object_info names them (addon/comfyui_server.py's LISTS).
COMFYUI_LISTS = {
    "checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
    "loras": ("LoraLoader", "lora_name"),
    "controlnets": ("ControlNetLoader", "control_net_name"),
    "samplers": ("KSampler", "sampler_name"),
    "schedulers": ("KSampler", "scheduler"),
}


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    """A real ComfyUI on the host's loopback (CPU; real-size SD 1.5 test models with random weights), started
    once for both suites with `tools/comfyui_server.py`. The chroot shares the host's network, so the UI's
    Blender reaches it at the same address. `STYLEPASS_COMFYUI=0` skips the tests that use it."""
    if os.environ.get("STYLEPASS_COMFYUI") == "0":
        pytest.skip("STYLEPASS_COMFYUI=0: the real ComfyUI server is switched off")
    import comfyui_server  # tools/ (tests/pytest.ini)

    try:
        context = comfyui_server.running(tmp_path_factory.mktemp("comfyui"))
        server = context.__enter__()
    except (comfyui_server.SetupError, RuntimeError) as error:
        pytest.fail(f"the real ComfyUI server did not come up: {error}")
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _copied(ui, point: tuple[int, int], key: str) -> str:
    """What `key` copies with the mouse at `point`, as Blender's own shortcuts do over a button: Ctrl+Shift+C
    a property's data path ("stylepass.engine"), Ctrl+C an operator button's Python command (and a field's
    value); nothing elsewhere ("")."""
    ui.command("clipboard", text="")
    ui.mouse_to(*point)
    ui.key(key)
    # Blender may answer a command (from a timer) in the pass of its event loop that read the key, before
    # handling it: two answers later the key has been handled.
    ui.command("clipboard")
    ui.command("clipboard")
    return ui.command("clipboard")


def _find_in_sidebar(ui, wanted: str, key: str, columns: list[int], below: int | None = None):
    """The screen point (the middle) of the button `wanted` in the open sidebar, found as a hand could find
    it: the mouse stops every PROBE_STEP pixels down the sidebar (from `below`, else its top) at each of
    `columns`, and `key` copies what is under it (`_copied`) until it is `wanted`."""
    state = ui.state()
    _x, y, _width, height = state["sidebar"]["rect"]
    top = state["window"][1] - (y + height)
    met: list[str] = []
    for row in range(below if below is not None else top + 4, top + height - 4, PROBE_STEP):
        for column in columns:
            copied = _copied(ui, (column, row), key)
            if copied != wanted:
                if copied and copied not in met:
                    met.append(copied)
                continue
            last = row  # down to the button's lower edge, to click its middle
            while last + 4 < top + height and _copied(ui, (column, last + 4), key) == wanted:
                last += 4
            return column, (row + last) // 2
    raise UISessionError(f"no button {wanted!r} in the sidebar; {key} down it copied {met}")


def _click(ui, point: tuple[int, int], what: str) -> None:
    """A left click at `point` that changes the screen (a menu or a field opens)."""
    ui.mouse_to(*point)
    ui.screen.wait_settled(quiet=0.2)
    before = ui.screen.grab()
    ui.session.xdotool("click", "1")
    ui.screen.wait_change(before, what=what)
    ui.screen.wait_settled(quiet=0.4)


def _server_lists(url: str) -> dict[str, list[str]]:
    """The server's own lists for the pickers, from its /object_info."""
    info = _get_json(f"{url}/object_info")
    return {name: info[node]["input"]["required"][field][0] for name, (node, field) in COMFYUI_LISTS.items()}


def test_comfyui_from_the_panel_to_a_frame_and_escape(ui, comfyui):
    """ComfyUI (issue 16) as an artist sets it up, against a real ComfyUI on the host's loopback: the server's
    address in the add-on's preferences; in the Stylepass tab Engine > ComfyUI from its menu; a click on
    Read from Server fills the pickers with exactly what the server lists (checkpoints, LoRAs, ControlNets,
    samplers, schedulers); the Checkpoint picker, clicked, lists the server's checkpoint and takes it (typed,
    Enter); Prompt and Steps typed into their fields; F3 > Stylise Frame finishes through ComfyUI with the
    status bar counting its steps and the record naming engine COMFYUI, the server and the checkpoint. Then
    Stylise Frame at 60 steps and ESC once the status bar shows ComfyUI's steps: cancelled within a second,
    the frame's files untouched, and the server's queue empties (the prompt interrupted there). The
    preferences, engine, settings, lists and resolution go back as they were."""
    _require_extension(ui)
    ui.command("engine", seconds=0)
    original = ui.command("comfyui")
    percentage = ui.command("settings")["resolution"][2]
    checkpoint_name = comfyui.models.checkpoint
    figures = ui.figures["comfyui"] = {"server": comfyui.url}
    enter = time.monotonic()
    try:
        # 1. The server's address in the preferences; a small frame, so the CPU run takes seconds a step.
        ui.command("comfyui", prefs={"comfyui_server": comfyui.url}, clear_lists=True)
        ui.command("scene", percentage=COMFYUI_PERCENTAGE)
        _open_stylepass_tab(ui)
        x, _y, width, _height = ui.state()["sidebar"]["rect"]
        fields = [x + width * 6 // 10]  # the column of the panel's values (labels to their left)
        buttons = [x + width - 50, x + width - 40, x + width - 60]  # a row's icon button at its right end

        # 2. Engine > ComfyUI: the menu opens from the Engine field; C is ComfyUI's underlined key there.
        engine = _find_in_sidebar(ui, "stylepass.engine", "ctrl+shift+c", fields)
        _click(ui, engine, "the Engine menu to open")
        ui.shot("20-comfyui-engine-menu")
        ui.key("c")
        _poll(ui, "comfyui", lambda r: r["engine"] == "COMFYUI", 10, "Engine > ComfyUI")
        ui.mouse_to(*ui.region_centre(ui.state()["view3d"]))
        ui.screen.wait_settled(quiet=0.4)
        ui.shot("21-comfyui-panel-before-reading")

        # 3. Read from Server (the panel's refresh button beside the status line), on a thread.
        refresh = _find_in_sidebar(
            ui, "bpy.ops.stylepass.comfyui_read()", "ctrl+c", buttons, below=engine[1] + 10
        )
        ui.mouse_to(*refresh)
        ui.screen.wait_settled(quiet=0.2)
        clicked = time.monotonic()
        ui.session.xdotool("click", "1")
        state = ui.wait_state(
            lambda s: _ended(s, COMFYUI_READ_OP, clicked), 60, "Read from Server to end", fail=ui.failure
        )
        figures["read_seconds"] = round(_ended(state, COMFYUI_READ_OP, clicked)["t"] - clicked, 2)
        read = ui.command("comfyui")
        figures["lists"] = read["lists"]
        lists = dict(read["lists"])
        assert lists.pop("server") == comfyui.url and lists.pop("status") == (
            "1 checkpoint(s), 1 LoRA(s), 2 ControlNet(s)"
        ), f"Read from Server did not read {comfyui.url}: {read['lists']}"
        assert lists == _server_lists(comfyui.url), f"the pickers' lists are not the server's: {lists}"
        assert lists["checkpoints"] == [checkpoint_name] and lists["loras"] == [comfyui.models.lora]
        assert sorted(lists["controlnets"]) == sorted(
            [comfyui.models.controlnet_depth, comfyui.models.controlnet_lineart]
        ), lists["controlnets"]
        ui.mouse_to(*ui.region_centre(ui.state()["view3d"]))
        ui.screen.wait_settled(quiet=0.4)
        ui.shot("22-comfyui-panel-read")

        # 4. The Checkpoint picker: a click opens the server's checkpoints; typing narrows them, Enter picks.
        checkpoint = _find_in_sidebar(ui, "stylepass.comfyui.checkpoint", "ctrl+shift+c", fields, refresh[1])
        _click(ui, checkpoint, "the Checkpoint picker to open")
        ui.shot("23-comfyui-checkpoint-picker")
        # The panel and the open picker alone (the picker reaches past the sidebar's right edge).
        top = ui.screen_height - sum(ui.state()["sidebar"]["rect"][1::2])
        right = min(x + width + 80, ui.state()["window"][0])
        ui.session.screenshot(
            ui.shots / "23-comfyui-checkpoint-picker-crop.png",
            crop=(x - 4, top, right - x + 4, checkpoint[1] - top + 260),
        )
        ui.session.xdotool("type", "--delay", "40", checkpoint_name.rsplit(".", 1)[0])
        ui.screen.wait_settled(quiet=0.4)
        ui.shot("24-comfyui-checkpoint-typed")
        ui.key("Return")
        _poll(ui, "comfyui", lambda r: r["values"]["checkpoint"] == checkpoint_name, 10, "the checkpoint")

        # 5. Prompt and Steps typed into their fields (a click edits a field; Ctrl+A selects its text).
        prompt = _find_in_sidebar(ui, "stylepass.comfyui.prompt", "ctrl+shift+c", fields, checkpoint[1])
        _click(ui, prompt, "the Prompt field to edit")
        ui.session.xdotool("type", "--delay", "30", "a watercolour of toys on a lawn")
        ui.key("Return")
        steps = _find_in_sidebar(ui, "stylepass.comfyui.steps", "ctrl+shift+c", fields, prompt[1])
        _click(ui, steps, "the Steps field to edit")
        ui.key("ctrl+a")
        ui.session.xdotool("type", str(COMFYUI_STEPS))
        ui.key("Return")
        typed = _poll(ui, "comfyui", lambda r: r["values"]["steps"] == COMFYUI_STEPS, 10, "Steps typed in")
        values = typed["values"]
        assert values["prompt"] == "a watercolour of toys on a lawn", values
        figures["values"] = values

        # 6. F3 > Stylise Frame over the viewport, through the server.
        ui.mouse_to(*ui.region_centre(ui.state()["view3d"]))
        ui.screen.wait_settled(quiet=0.5)
        enter = ui.search("Stylise Frame")
        steps_seen: list[list] = []

        def finished(state):
            for at, text in state["status_history"]:
                found = COMFYUI_STEP_TEXT.search(text or "")
                if at > enter and found and not any(text == s[1] for s in steps_seen):
                    steps_seen.append([ui.copy_frame() if not steps_seen else None, text])
            return _ended(state, FRAME_OP, enter)

        state = ui.wait_state(finished, 240, "Stylise Frame through ComfyUI to finish", fail=ui.failure)
        end = _ended(state, FRAME_OP, enter)
        progress = ui.command("progress", t0=enter - 1.0, t1=time.monotonic())
        if steps_seen and steps_seen[0][0]:
            ui.save_frame(steps_seen[0][0], "25-comfyui-step", status_bar=True)
        record = ui.command("record", frame=1)
        figures["stylise_frame"] = {
            "seconds": round(end["t"] - enter, 2),
            "ended": end,
            "status_steps": [text for _frame, text in steps_seen],
            "progress": _progress_figures(progress, enter),
            "result": record and {k: record["result"].get(k) for k in ("server", "steps", "timings", "size")},
        }
        print(f"\n[{ui.suite}] ComfyUI figures: {figures}")
        assert end["status"] in (None, ["FINISHED"]), (
            f"Stylise Frame ended {end}; log:\n{ui.session.tail_log()}\n"
            f"ComfyUI's log:\n{comfyui.log_text()[-3000:]}"
        )
        assert record and record["engine"] == "COMFYUI", f"the record: {record}"
        assert record["result"]["server"] == comfyui.url, record["result"]
        assert record["result"]["steps"] == {"done": COMFYUI_STEPS, "total": COMFYUI_STEPS}, record["result"]
        sent = record["request"]["settings"]["values"]
        wanted = [checkpoint_name, values["prompt"], COMFYUI_STEPS]
        assert [sent["checkpoint"], sent["prompt"], sent["steps"]] == wanted, sent
        stylised = next(e for e in state["stylised"] if e["path"].endswith(f"{SCENE}/stylised/0001.png"))
        size = (record["request"]["width"], record["request"]["height"])
        assert _png_size(ui.host_path(stylised["path"])) == size, (stylised, size)
        # The status bar counted ComfyUI's steps, and its bar moved forward only and went away at the end.
        assert [COMFYUI_STEP_TEXT.search(text).groups() for _frame, text in steps_seen] == [
            (str(n), str(COMFYUI_STEPS)) for n in range(1, COMFYUI_STEPS + 1)
        ], figures["stylise_frame"]["status_steps"]
        fractions = [f for t, f, _text in progress if enter <= t <= end["t"] and f is not None]
        moved = figures["stylise_frame"]["progress"]
        assert fractions == sorted(fractions) and len(set(fractions)) >= 3, f"the progress bar: {moved}"
        after = [f for t, f, _text in progress if t > end["t"]]
        assert after and after[-1] is None, f"the progress bar stayed after the end: {after[-3:]}"
        state = ui.wait_state(
            lambda s: len(s["windows"]) > 1 or any("IMAGE_EDITOR" in w["areas"] for w in s["windows"]),
            20,
            "the result shown in an Image Editor or the render view",
        )
        for window in state["windows"][1:]:
            ui.screen.wait_drawn(ui.window_box(window), what="the render view with the result")
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("26-comfyui-result")

        # 7. Stylise Frame at 60 steps, from a point of the viewport the render view does not cover; the
        #    server's step previews replace the result in the render view, and ESC over the render view (the
        #    window the artist is looking at) stops the job there instead of closing that window.
        ui.command("comfyui", values={"steps": COMFYUI_CANCEL_STEPS})
        state = ui.state()
        before = {e["path"]: e["mtime"] for e in state["stylised"]}
        assert len(state["windows"]) == 2, (
            f"the result's render view should still be open: {state['windows']}"
        )
        render_view = ui.window_box(state["windows"][1])
        ui.mouse_to(*_outside(ui, state["view3d"], render_view))
        ui.screen.wait_settled(quiet=0.5)
        enter = ui.search("Stylise Frame")

        def stepping(state):
            return [
                [at, text]
                for at, text in state["status_history"]
                if at > enter and COMFYUI_STEP_TEXT.search(text or "")
            ]

        def failed(state):
            end = _ended(state, FRAME_OP, enter)
            return ui.failure(state) or (f"Stylise Frame ended before ESC ({end})" if end else None)

        state = ui.wait_state(stepping, 240, "the status bar to count ComfyUI's steps", fail=failed)
        state = ui.wait_state(
            lambda s: STEP_PREVIEW_IMAGE in s["windows"][-1]["images"],
            60,
            "the render view to show the server's step preview",
            fail=failed,
        )
        figures["step_preview"] = {"windows": state["windows"], "status": stepping(state)[-1][1]}
        ui.screen.wait_drawn(render_view, what="the render view with a step preview")
        ui.shot("27-comfyui-step-preview")
        running = _get_json(f"{comfyui.url}/queue")["queue_running"]
        assert len(running) == 1, f"the server's queue while Stylise Frame runs: {running}"
        prompt_id = running[0][1]
        ui.mouse_to((render_view[0] + render_view[2]) // 2, (render_view[1] + render_view[3]) // 2)
        ui.screen.wait_settled(quiet=0.3)
        frame = ui.copy_frame()
        key_before = time.monotonic()
        ui.key("Escape")
        state = ui.wait_state(
            lambda s: _ended(s, FRAME_OP, enter), 30, "Stylise Frame to end after ESC", fail=ui.failure
        )
        end = _ended(state, FRAME_OP, enter)
        while True:  # the server stops the prompt between two of its steps
            queue = _get_json(f"{comfyui.url}/queue")
            emptied = time.monotonic() - key_before
            if not (queue["queue_running"] or queue["queue_pending"]) or emptied > COMFYUI_QUEUE_LIMIT:
                break
            time.sleep(0.2)
        history = _get_json(f"{comfyui.url}/history/{prompt_id}").get(prompt_id, {}).get("status", {})
        ui.save_frame(frame, "28-comfyui-steps-before-escape", status_bar=True)
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("29-comfyui-after-escape")
        state = ui.state()
        assert len(state["windows"]) == 2, f"ESC over the render view closed it instead: {state['windows']}"
        # The cancelled run's last step is not left on show as if it were a result: the result is back.
        assert STEP_PREVIEW_IMAGE not in state["windows"][1]["images"], state["windows"]
        figures["escape"] = {
            "status_when_pressed": stepping(state)[-1][1] if stepping(state) else None,
            "esc_latency": round(end["t"] - key_before, 3),
            "queue_empty_after": round(emptied, 2),
            "server_status": [history.get("status_str"), [m[0] for m in history.get("messages", [])]],
            "ended": end,
            "status_after": [text for at, text in state["status_history"] if at > key_before],
        }
        print(f"\n[{ui.suite}] ComfyUI ESC figures: {figures['escape']}")
        assert end["status"] in (None, ["CANCELLED"]), f"Stylise Frame ended {end}, not cancelled"
        assert end["t"] - key_before < ESC_LATENCY_LIMIT, (
            f"ESC answered after {end['t'] - key_before:.2f} s (limit {ESC_LATENCY_LIMIT} s): "
            f"{figures['escape']}"
        )
        assert not (queue["queue_running"] or queue["queue_pending"]), (
            f"the server still works on the cancelled prompt {COMFYUI_QUEUE_LIMIT:.0f} s after ESC: {queue}"
        )
        assert "execution_interrupted" in figures["escape"]["server_status"][1], figures["escape"]
        after = {e["path"]: e["mtime"] for e in state["stylised"]}
        assert after == before, "a cancelled frame must leave the results on disk as they were"
    finally:
        _tidy(ui, FRAME_OP, enter)
        ui.command(
            "comfyui",
            prefs=original["prefs"],
            engine=original["engine"],
            values=original["values"],
            clear_lists=True,
        )
        ui.command("scene", percentage=percentage)
        state = ui.state()
        if state["view3d"]:
            ui.mouse_to(*ui.region_centre(state["view3d"]))


# -- Stylise Animation across the replicas of a worker on Ray Serve (issue 17) --------------------------------

RAY_FRAMES = 6
RAY_INTERVAL = 3  # keyframes 1, 4 and 6: frames 2, 3 and keyframe 4 continue from 1 at once, then 5 and 6
RAY_MODEL = "tiny-sd15"  # a name, not a path: the worker finds it in its model folder
# Steps enough that a frame's job outlasts Serve's wait for the replica with the model warm (~0.2 s, see
# `ServeOptions.model_affinity`): at 2 steps (~0.15 s a job here) every frame may stay on one replica, by design.
RAY_SIZE, RAY_STEPS = 64, 30
RAY_CANCEL_SIZE, RAY_CANCEL_STEPS = 96, 40  # seconds a frame on a replica: ESC meets jobs on the worker
RAY_IDLE_LIMIT = 10.0  # seconds after ESC by which the worker runs and queues no job of the cancelled run
FRAMES_TEXT = re.compile(r"Stylepass: (\d+) of (\d+) frames")
RUNNING_TEXT = "stylising: Denoising"  # a frame's engine job on a replica, as the status bar says it
SHOT_DELAY = (
    0.3  # seconds from a status text to a screen copy that shows it (llvmpipe draws it a moment later)
)


def _frames_counted(seen: dict[str, float], after: float) -> list[list]:
    """[seconds after `after`, frames done] each time the status bar's count changed (from `seen`: every
    status text met and when it was set)."""
    counted: list[list] = []
    for at, text in sorted((at, text) for text, at in seen.items() if at > after):
        done = int(FRAMES_TEXT.search(text).group(1))
        if not counted or counted[-1][1] != done:
            counted.append([round(at - after, 2), done])
    return counted


def _blender_pid(ui) -> int | None:
    """The session's Blender (the UI, not a second Blender of a pass render), from the host's /proc."""
    mine = f"STYLEPASS_UI_DIR={ui.session.inner_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"blender") or any(a.endswith(b"pass_child.py") for a in argv):
                continue
            if mine in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None


class _MainThreadClock:
    """Samples the Blender main thread's scheduler figures (/proc/<pid>/schedstat: seconds on a CPU and
    seconds waiting for one) every 20 ms from a host thread, so a heartbeat gap can be told apart: the main
    thread busy (Blender's or Stylepass's work), or ready but without a CPU (the machine's other work)."""

    def __init__(self, pid: int | None) -> None:
        self.path = Path(f"/proc/{pid}/task/{pid}/schedstat") if pid else None
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedstat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                run, wait = (int(n) / 1e9 for n in self.path.read_text().split()[:2])
            except (OSError, ValueError):
                return
            self.samples.append((time.monotonic(), run, wait))

    def start(self) -> _MainThreadClock:
        if self.path is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def between(self, t0: float, t1: float) -> dict | None:
        """Seconds the main thread ran and waited for a CPU between the samples around t0 and t1."""
        inside = [s for s in self.samples if t0 - 0.03 <= s[0] <= t1 + 0.03]
        if len(inside) < 2:
            return None
        (a, run0, wait0), (b, run1, wait1) = inside[0], inside[-1]
        return {"seconds": round(b - a, 3), "ran": round(run1 - run0, 3), "waited": round(wait1 - wait0, 3)}


def _explained(gaps: dict, clock: _MainThreadClock) -> list[list]:
    """The longest heartbeat gaps of a `gaps` answer as [seconds, at (monotonic), what the main thread did
    meanwhile: {ran, waited} seconds on / for a CPU]."""
    return [[round(gap, 3), round(at, 2), clock.between(at, at + gap)] for gap, at in gaps["top"][:3]]


def _denoising_since(seen: dict[str, float]) -> float | None:
    """When the status bar first said that a frame after frame 1 is being denoised on the worker."""
    times = [
        at
        for text, at in seen.items()
        if int(FRAMES_TEXT.search(text).group(1)) >= 1 and RUNNING_TEXT in text
    ]
    return min(times, default=None)


def _worker_jobs(client, key: float | None = None) -> dict:
    """The worker's `jobs` (queued, running, kept, slots) from its /v1/health, and when asked."""
    jobs = dict(client.health()["jobs"])
    if key is not None:
        jobs["after_key"] = round(time.monotonic() - key, 2)
    return jobs


def _until_worker_idle(client, key: float) -> list[dict]:
    """The worker's `jobs` every 0.2 s until it runs and queues none, or RAY_IDLE_LIMIT s after `key`."""
    polled = [_worker_jobs(client, key)]
    while polled[-1]["running"] is not None or polled[-1]["queued"]:
        if polled[-1]["after_key"] >= RAY_IDLE_LIMIT:
            break
        time.sleep(0.2)
        polled.append(_worker_jobs(client, key))
    return polled


def test_animation_across_ray_serve_replicas_and_escape(ui, ray_worker):
    """Issue 17 as a studio artist meets it, against a worker on Ray Serve on the host's loopback (2 replicas
    of 1 CPU, a tiny SD 1.5 model): the add-on's Diffusion Engine set to Remote Worker with the worker's URL
    and token; the scene's engine Diffusion with the model's name, 64x64, 6 moving frames, Temporal Coherence
    with Keyframe Interval 3. F3 > Stylise Animation finishes with the status bar counting the frames; the
    frames' records say both replicas made frames and at least two engine jobs ran at the same time. Then the
    same at 96x96 and 40 steps, and ESC over the viewport while the worker runs its jobs: the operator ends
    cancelled within a second, the UI's longest stall around the key stays within the ESC tests' bound, the
    worker has no job left running or queued within 10 s, and the frames on disk are as they were at the key.
    The preferences and the scene's settings go back as they were."""
    from stylepass_core.worker.client import WorkerClient

    _require_extension(ui)
    reference = _references(ui)
    ui.command("engine", seconds=0)
    original = ui.command("remote_worker")
    scene = ui.command("scene")  # the frame range and the render settings
    client = WorkerClient(ray_worker.url, ray_worker.token)
    figures = ui.figures["ray"] = {"worker": ray_worker.url, "ray": ray_worker.ready.get("ray")}
    frames = list(range(1, RAY_FRAMES + 1))
    clock = _MainThreadClock(_blender_pid(ui)).start()
    enter = time.monotonic()
    try:
        # 1. Preferences > Diffusion Engine: Remote Worker, its URL and token; the scene: Diffusion with the
        #    worker's model by name, a small moving shot, coherence with a keyframe every 3 frames.
        ui.command(
            "remote_worker",
            prefs={
                "engine_location": "REMOTE",
                "remote_url": ray_worker.url,
                "remote_token": ray_worker.token,
            },
            scene={
                "engine": "DIFFUSION",
                "temporal_coherence": True,
                "keyframe_interval": RAY_INTERVAL,
                "seed": 11,
                "pass_samples": 1,
            },
            diffusion={
                "model": RAY_MODEL,
                "prompt": "a watercolour toy town",
                "steps": RAY_STEPS,
                "denoise": 1.0,
            },
            cycles_samples=1,
        )
        ui.command("scene", resolution=[RAY_SIZE, RAY_SIZE], percentage=100)
        ui.command("animate", frames=RAY_FRAMES)
        ui.command("scene", frame_start=1, frame_end=RAY_FRAMES)
        ui.command("prefs", developer_ui=True)  # Stylise Animation is in no menu: F3 finds it with this on
        state = ui.state()
        stylised_dir = f"{state['output_dir']}/{SCENE}/stylised"
        ui.mouse_to(*ui.region_centre(state["view3d"]))
        ui.screen.wait_settled(quiet=0.5)

        # 2. F3 > Stylise Animation: the frames go to both replicas, the status bar counts them.
        enter = ui.search("Stylise Animation", shot="30-search-ray-animation")
        seen: dict[str, float] = {}
        running: list[str] = []  # a screen copy once frame 1 is made and a frame after it is being denoised

        def finished(state):
            for at, text in state["status_history"]:
                if at > enter and FRAMES_TEXT.search(text or "") and text not in seen:
                    seen[text] = at
            since = _denoising_since(seen)
            if not running and since is not None and state["t"] > since + SHOT_DELAY:
                running.append(ui.copy_frame())
            return _ended(state, ANIMATION_OP, enter)

        state = ui.wait_state(finished, 300, "Stylise Animation on the Ray worker to finish", fail=ui.failure)
        end = _ended(state, ANIMATION_OP, enter)
        if running:
            ui.save_frame(running[0], "31-ray-animation-running", status_bar=True)
        ui.screen.wait_settled(quiet=0.5)
        ui.shot("32-ray-animation-finished")
        records = {frame: ui.command("record", frame=frame) for frame in frames}
        rays = {
            frame: ((record or {}).get("result") or {}).get("ray") or {} for frame, record in records.items()
        }
        replicas: dict[str, list[int]] = {}
        for frame, ray in rays.items():
            replicas.setdefault(str(ray.get("replica")), []).append(frame)
        spans = {
            frame: [ray.get("timings", {}).get("started_at"), ray.get("timings", {}).get("finished_at")]
            for frame, ray in rays.items()
        }
        overlaps = [
            [a, b, round(min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0]), 2)]
            for a, b in itertools.combinations(frames, 2)
            if None not in spans[a] + spans[b]
            and max(spans[a][0], spans[b][0]) < min(spans[a][1], spans[b][1])
        ]
        counted = _frames_counted(seen, enter)
        whole = ui.gaps(enter, end["t"])
        figures["animation"] = {
            "seconds": round(end["t"] - enter, 2),
            "max_gap": round(whole["max_gap"], 3),
            "top_gaps": _explained(whole, clock),
            "ended": end,
            "frames_per_replica": replicas,
            "overlapping_jobs": overlaps,
            "job_seconds": {f: round(s[1] - s[0], 2) for f, s in spans.items() if None not in s},
            "status_counted": counted,
            "engines": {f: (r or {}).get("engine") for f, r in records.items()},
            "modes": {f: ((r or {}).get("result") or {}).get("mode") for f, r in records.items()},
            "keyframes": {
                f: ((r or {}).get("postprocess") or {}).get("keyframe") for f, r in records.items()
            },
        }
        assert end["status"] in (None, ["FINISHED"]), (
            f"Stylise Animation ended {end}; log:\n{ui.session.tail_log()}\nthe worker's log:\n"
            f"{ray_worker.log_tail()}"
        )
        assert all(records.values()), f"frames without a record: {[f for f, r in records.items() if not r]}"
        assert {r["engine"] for r in records.values()} == {"DIFFUSION"}, figures["animation"]["engines"]
        assert all(r["request"]["settings"]["values"]["model"] == RAY_MODEL for r in records.values()), (
            records[1]
        )
        assert len(replicas) == 2 and "None" not in replicas, f"the frames ran on {replicas}"
        assert overlaps, f"no two engine jobs ran at the same time: {spans}"
        assert counted and counted[0][1] == 0 and counted[-1][1] == RAY_FRAMES, (
            f"the status bar counted {counted}"
        )
        assert [done for _at, done in counted] == sorted(done for _at, done in counted), counted

        # 3. Again at 96x96 and 40 steps (every frame out of date, a few seconds a frame on a replica); ESC over
        #    the viewport once frame 1 is made and the worker runs the frames after it.
        ui.command("remote_worker", diffusion={"steps": RAY_CANCEL_STEPS})
        ui.command("scene", resolution=[RAY_CANCEL_SIZE, RAY_CANCEL_SIZE])
        ui.screen.wait_settled(quiet=0.5)
        run_started = time.time()  # the files' clock
        enter = ui.search("Stylise Animation")
        seen.clear()

        def failed(state):
            end = _ended(state, ANIMATION_OP, enter)
            return ui.failure(state) or (f"Stylise Animation ended before ESC ({end})" if end else None)

        def frame_made(state):
            finished(state)
            return any(int(FRAMES_TEXT.search(text).group(1)) >= 1 for text in seen)

        def denoising(state):
            finished(state)
            since = _denoising_since(seen)
            return since is not None and state["t"] > since + SHOT_DELAY

        state = ui.wait_state(
            frame_made, 300, "the status bar to count the first frame of the run", fail=failed
        )
        first_made = state["t"]
        ui.wait_state(denoising, 60, "the status bar to show a frame after it being denoised", fail=failed)
        ui.wait_state(
            lambda s: _worker_jobs(client)["running"] is not None, 60, "the worker to run a job", fail=failed
        )
        jobs_at_key = _worker_jobs(client)
        files_at_key = ui.files(stylised_dir)
        frame = ui.copy_frame()
        key_before = time.monotonic()
        ui.key("Escape")
        state = ui.wait_state(
            lambda s: _ended(s, ANIMATION_OP, enter),
            30,
            "Stylise Animation to end after ESC",
            fail=ui.failure,
        )
        end = _ended(state, ANIMATION_OP, enter)
        polled = _until_worker_idle(client, key_before)
        idle = polled[-1]
        ui.screen.wait_settled(quiet=0.5)
        files_after = ui.files(stylised_dir)
        ui.save_frame(frame, "33-ray-before-escape", status_bar=True)
        ui.shot("34-ray-after-escape")
        during = ui.gaps(key_before, end["t"], overlap=True)
        polling = ui.gaps(first_made, key_before)
        limit = reference["redraw_all_max_gap"] + GAP_MARGIN
        made_before_key = sorted(
            path
            for path, (_size, mtime) in files_at_key.items()
            if path.endswith(".png") and mtime >= run_started
        )
        changed = {
            path: [files_at_key.get(path), files_after.get(path)]
            for path in files_at_key.keys() | files_after.keys()
            if files_at_key.get(path) != files_after.get(path)
        }
        figures["escape"] = {
            "esc_latency": round(end["t"] - key_before, 3),
            "max_gap_during_escape": round(during["max_gap"], 3),
            "gap_limit": round(limit, 3),
            "top_gaps_during_escape": _explained(during, clock),
            "blame_during_escape": during["blame"][:3],
            "max_gap_first_frame_made_to_key": round(polling["max_gap"], 3),
            "top_gaps_first_frame_made_to_key": _explained(polling, clock),
            "first_frame_made_to_key": round(key_before - first_made, 2),
            "status_counted_before_key": _frames_counted(seen, enter),
            "status_when_pressed": max(seen, key=seen.get),
            "jobs_at_key": jobs_at_key,
            "worker_idle_after": idle["after_key"]
            if idle["running"] is None and not idle["queued"]
            else None,
            "jobs_after_key": polled[:: max(1, len(polled) // 6)] + polled[-1:],
            "frames_made_before_key": made_before_key,
            "files_changed_after_key": changed,
            "ended": end,
            "status_after_key": [text for at, text in state["status_history"] if at > key_before],
        }
        print(
            f"\n[{ui.suite}] Ray figures: "
            + str(
                {
                    "esc_latency": figures["escape"]["esc_latency"],
                    "max_gap_during_escape": figures["escape"]["max_gap_during_escape"],
                    "gap_limit": figures["escape"]["gap_limit"],
                    "worker_idle_after": figures["escape"]["worker_idle_after"],
                    "frames_per_replica": replicas,
                    "overlapping_jobs": overlaps,
                    "animation_seconds": figures["animation"]["seconds"],
                }
            )
            + f"\n[{ui.suite}] Ray figures (all): {figures}"
        )
        assert end["status"] in (None, ["CANCELLED"]), f"Stylise Animation ended {end}, not cancelled"
        assert end["t"] - key_before < ESC_LATENCY_LIMIT, (
            f"ESC answered after {end['t'] - key_before:.2f} s (limit {ESC_LATENCY_LIMIT} s): "
            f"{figures['escape']}"
        )
        # As in the ESC test with a slow engine: the bound is the session's idle full redraw plus a margin.
        for what, gaps in (("while the worker ran the frames", polling), ("around ESC", during)):
            assert gaps["max_gap"] < limit, (
                f"the UI stalled {gaps['max_gap']:.2f} s {what} (limit {limit:.2f} s = an idle full redraw "
                f"+ {GAP_MARGIN} s): {figures['escape']}"
            )
        assert figures["escape"]["worker_idle_after"] is not None, (
            f"the worker still runs or queues jobs {RAY_IDLE_LIMIT:.0f} s after ESC: {polled[-3:]}\n"
            f"its log:\n{ray_worker.log_tail()}"
        )
        assert made_before_key, f"no frame of the run was written before ESC: {sorted(files_at_key)}"
        assert not changed, f"files of the shot changed after ESC: {changed}"
    finally:
        clock.stop()
        _tidy(ui, ANIMATION_OP, enter)
        ui.command(
            "remote_worker",
            prefs=original["prefs"],
            scene=original["scene"],
            diffusion=original["diffusion"],
            cycles_samples=original["cycles_samples"],
        )
        ui.command("animate", frames=0)
        ui.command("scene", resolution=scene["resolution"][:2], percentage=scene["resolution"][2])
        ui.command("scene", frame_start=scene["frame_start"], frame_end=scene["frame_end"])
        ui.command("prefs", developer_ui=False)
        client.close()
        state = ui.state()
        if state["view3d"]:
            ui.mouse_to(*ui.region_centre(state["view3d"]))
