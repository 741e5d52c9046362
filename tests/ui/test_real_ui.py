# SPDX-License-Identifier: GPL-3.0-or-later
"""What an artist does in a real Blender UI, in this order in one Blender per suite: install and open the
Stylepass tab; Stylise Animation and ESC while a slowed engine works; Stylise Frame from F3. Timings are
heartbeat gaps (`blender_side.py`) compared with reference gaps measured in the same session: software
rendering makes absolute UI figures meaningless here.
"""

from __future__ import annotations

import struct
import time

import pytest
from ui_session import UISessionError

FRAME_OP = "STYLEPASS_OT_stylise"
ANIMATION_OP = "STYLEPASS_OT_stylise_animation"
SLOW_ENGINE_SECONDS = 10.0
ESC_LATENCY_LIMIT = 1.0
GAP_MARGIN = 0.5  # beyond the idle-redraw reference, while the engine job runs and the operator only polls it


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


def _references(ui) -> dict:
    """Heartbeat gaps of this session with no Stylepass involved: idle; redraws of every area, and of the
    status bar alone, asked for every 0.1 s; a no-op operator run from F3 (menu search included)."""
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
    ui.search("Cursor to World Origin", shot="00-search-reference-operator")
    ui.wait_state(lambda s: max(map(abs, s["cursor"])) < 1e-6, 30, "Cursor to World Origin to run")
    ui.screen.wait_settled(quiet=0.5)
    figures["noop_operator_max_gap"] = ui.gaps(f3, time.monotonic())["max_gap"]
    ui.figures["reference"] = {name: round(value, 3) for name, value in figures.items()}
    return ui.figures["reference"]


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

    viewport = ui.region_centre(state["view3d"])
    ui.mouse_to(*viewport)
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
    ui.figures["sidebar_tabs_seen"] = seen
    assert ui.state()["sidebar"]["category"] == "Stylepass", f"tabs met down the strip: {seen}"
    ui.mouse_to(*viewport)
    ui.screen.wait_settled()
    ui.shot("01-sidebar-stylepass-tab")


def test_escape_answers_during_a_long_engine_job(ui):
    """Stylise Animation with a 10 s-per-frame engine: ESC ends the operator (cancelled) within a second, and
    while the operator only polls the running job the UI's longest stall stays within half a second of an
    idle full redraw of the same session."""
    _require_extension(ui)
    reference = _references(ui)
    ui.command("engine", seconds=SLOW_ENGINE_SECONDS)
    # Frames 2-4: frame 1's passes stay unrendered, so Stylise Frame's own first pass render is measured.
    ui.command("scene", frame_start=2, frame_end=4)
    # Stylise Animation is in no menu: F3 finds operators outside menus only with Developer Extras on.
    ui.command("prefs", developer_ui=True)
    before = {entry["path"]: entry["mtime"] for entry in ui.state()["stylised"]}
    try:
        enter = ui.search("Stylise Animation", shot="04-search-stylise-animation")

        # 1. The engine job of the first frame runs (its passes were rendered first, on the main thread).
        def engine_run(state):
            runs = [r for r in state["engine_runs"] if r["start"] > enter]
            return runs[0] if runs else None

        def failed(state):
            end = _ended(state, ANIMATION_OP, enter)
            return ui.failure(state) or (f"Stylise Animation ended early ({end})" if end else None)

        state = ui.wait_state(engine_run, 240, "the first frame's engine job", fail=failed)
        engine = engine_run(state)
        assert any(_same_op(op, ANIMATION_OP) for op in state["modal_operators"]), state["modal_operators"]

        # 2. With overlap the main thread renders the next frame's passes during this frame's job (a blocking
        # render, measured apart); after that the operator only polls the job.
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


# After the ESC test: a Stylise Frame that opens the render view leaves a modal handler behind (see the
# end of this test), which would take the ESC test's keys.
def test_stylise_frame_from_search(ui):
    """F3 > Stylise Frame > Enter: the PNG lands in the output folder, the compositor gets the group wired,
    and the heartbeat's longest gap is reported next to a no-op operator's (no bound yet: the pass render
    still blocks the UI, another issue removes that)."""
    _require_extension(ui)
    reference = _references(ui)
    before = {entry["path"]: entry["mtime"] for entry in ui.state()["stylised"]}

    f3 = time.monotonic()
    enter = ui.search("Stylise Frame", shot="02-search-stylise-frame")
    state = ui.wait_state(
        lambda s: _ended(s, FRAME_OP, enter),
        180,
        "Stylise Frame to finish",
        fail=ui.failure,
    )
    end = _ended(state, FRAME_OP, enter)
    # Blender removes a modal operator's handler when it returns FINISHED or CANCELLED: it must leave the list.
    try:
        ui.wait_state(
            lambda s: not any(_same_op(op, FRAME_OP) for op in s["modal_operators"]), 5, "the handler to go"
        )
        lingering = None
    except UISessionError:
        lingering = ui.state()["modal_operators"]
    # The result appears where the artist is: an open Image Editor, else the render view (a new window, as
    # F12). Its first draw takes a few seconds on llvmpipe; then an artist closes it with Esc.
    ui.screen.wait_settled(quiet=0.5)
    # The result is shown from a timer once the operator has returned (so it does not linger as modal).
    state = ui.wait_state(
        lambda s: len(s["windows"]) > 1 or any("IMAGE_EDITOR" in w["areas"] for w in s["windows"]),
        20,
        "the result shown in an Image Editor or the render view",
    )
    shown = state["windows"][1:]
    if shown:
        box = ui.window_box(shown[0])
        ui.screen.wait_drawn(box, what="the render view with the result")
        ui.screen.wait_settled(quiet=0.5)
    ui.shot("03-after-stylise-frame")
    if shown:
        ui.mouse_to((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        ui.key("Escape")
        ui.wait_state(lambda s: len(s["windows"]) == 1, 20, "Esc to close the render view")
        ui.mouse_to(*ui.region_centre(state["view3d"]))
        ui.screen.wait_settled(quiet=0.5)

    new = [e for e in state["stylised"] if before.get(e["path"]) != e["mtime"]]
    invoke = [e for e in state["events"] if e["op"] == FRAME_OP and e["call"] == "invoke" and e["t"] > f3]
    gaps = ui.gaps(f3, end["t"])
    ui.figures["stylise_frame"] = {
        "operator_seconds": round(end["t"] - enter, 2),
        "invoke_seconds": round(invoke[-1]["seconds"], 2) if invoke else None,
        "max_gap": round(gaps["max_gap"], 3),
        **{f"reference_{name}": value for name, value in reference.items()},
        "top_gaps": [gap for gap, _at in gaps["top"]],
        "ended": end,
        "result_shown_in": [w["areas"] for w in shown],
        "still_modal_5s_after_end": lingering,
    }
    print(f"\n[{ui.suite}] Stylise Frame figures: {ui.figures['stylise_frame']}")
    assert end["status"] in (None, ["FINISHED"]), f"Stylise Frame ended {end}; log:\n{ui.session.tail_log()}"
    assert shown or any("IMAGE_EDITOR" in w["areas"] for w in state["windows"]), "the result is not shown"
    assert [e["path"].rsplit("/", 3)[-3:] for e in new] == [["UITest", "stylised", "0001.png"]], new
    assert _png_size(ui.host_path(new[0]["path"])) == (480, 270)

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
        ln["to_node"] == node and ln["from_type"] == "CompositorNodeRLayers" and ln["from_socket"] == "Image"
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
