# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the live style preview (issue 13) in a real Blender UI, with the neural-style engine.

Debian's Blender 5.2 runs in the sid chroot under Xvfb (software GPU: llvmpipe), as in the real-UI tests
(`tools/ui_session.py`, `tests/ui/ui_driver.py`, `tests/ui/blender_side.py`); the live preview is turned on as
an artist does (F3 > Live Preview). The orbit is a steady turntable turn driven from a timer inside Blender
(steadier than xdotool). At a live resolution of 256 and 512 it reports:

- pictures shown per second during a continuous orbit, against the engine run back to back (1 / the engine's
  time alone on the same input, measured in this run): goal >= 8 at 256;
- latency: capture to finished picture (the scheduler's) and to the redraw that puts it on screen; and for
  single edits while idle, edit to pixels, split into its steps: goal <= one engine job + 50 ms;
- staleness: for every picture shown, the captures newer than its own at that moment (by design none: a
  capture happens only when no job runs) and how far the view had turned since its capture;
- the preview's own main-thread cost per viewport redraw: its draw handler (with the change check) as it
  times itself during the orbit, and the region's redraw with the preview's draw handler against the same
  redraw without it (`wm.redraw_timer`, alternating blocks, the view turning as in an orbit): goal < 3 ms;
- the capture's main-thread cost per capture (GPU-bound; software rendering here is the worst case);
- the orbit itself: viewport redraws per second and the longest main-thread gap, preview off against on.

Needs root and the sid chroot (`tools/ui_chroot.sh sid`); without them it says why and exits 0 (SKIPPED).
Run by `./run bench`; by hand, from the repo root, with the 4.5 venv (its bpy wheel builds the zip):
  PYTHONPATH=tools:tests/ui <4.5 venv>/bin/python bench/bench_live.py [--json out.json] [--gif out.gif]
`--gif PATH` also records the README's GIF of the preview following an orbit (`--gif-only`: only that).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ui_driver import BLENDER_SIDE, BlenderUI, FrameBuffer
from ui_session import UISession, UISessionError

ROOT = Path(__file__).resolve().parents[1]
SUITE = "sid"
RESOLUTIONS = (256, 512)
FIRST_PICTURE_LIMIT = 120  # seconds: the first ONNX session and the first software-GPU draws
GOAL_FPS_256 = 8.0
GOAL_BEYOND_JOB = 0.050
GOAL_DRAW = 0.003
GIF_TARGET = (0.0, 0.6, 0.9)  # the middle of blender_side's cube, sphere and cone


class Skipped(Exception):
    """The benchmark cannot run on this machine (no root, no chroot): not a failure of the preview."""


# -- small statistics ----------------------------------------------------------------------------------------


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, share: float) -> float | None:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[max(0, math.ceil(share * len(values)) - 1)]


def ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


# -- the session ---------------------------------------------------------------------------------------------


def chroot() -> Path:
    if os.geteuid() != 0:
        raise Skipped("needs root (chroot and mount for Debian's Blender under Xvfb)")
    proc = subprocess.run([str(ROOT / "tools" / "ui_chroot.sh"), SUITE], capture_output=True, text=True)
    if proc.returncode != 0:
        why = "; ".join(proc.stderr.strip().splitlines()[-3:]) or "no message"
        raise Skipped(f"tools/ui_chroot.sh {SUITE} exited {proc.returncode}: {why}")
    return Path(proc.stdout.strip().splitlines()[-1])


def build_zip(out: Path) -> Path:
    """The Linux extension zip, as `./run build` makes it (this interpreter needs the bpy wheel: 4.5 venv)."""
    build = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_extension.py"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        raise RuntimeError(f"building the extension failed:\n{build.stdout[-2000:]}\n{build.stderr[-2000:]}")
    (zip_path,) = out.glob("stylepass-*-linux_x64.zip")
    return zip_path


def start_ui(session: UISession, zip_path: Path) -> BlenderUI:
    """Install the zip offline, start Blender with the Blender side, close the splash screen."""
    installed = session.install_extension(zip_path)
    if installed.returncode != 0:
        raise RuntimeError(f"installing the extension failed:\n{installed.output[-2000:]}")
    session.start(script=BLENDER_SIDE)
    ui = BlenderUI(session, Path(tempfile.mkdtemp(prefix="bench-live-shots-")))
    session.wait_ready(timeout=240)
    state = ui.wait_state(lambda s: s["scene_ready"], 120, "the Blender side's scene")
    if not state["stylepass_enabled"]:
        raise RuntimeError(f"Stylepass is not enabled:\n{installed.output[-1500:]}")
    ui.mouse_to(*ui.region_centre(state["view3d"]))
    ui.screen.wait_settled(quiet=1.0, timeout=60)
    ui.key("Escape")
    ui.screen.wait_settled(quiet=0.5)
    return ui


def view_state(ui: BlenderUI) -> dict | None:
    views = ui.command("live")["views"]
    return views[0] if views else None


def wait_view(ui: BlenderUI, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = view_state(ui)
        if view is not None and check(view):
            return view
        if view is not None and view["error"]:
            raise RuntimeError(f"the live preview reports: {view['error']}")
        if time.monotonic() > deadline:
            raise UISessionError(f"waited {timeout:.0f} s for {what}: {view}\n{ui.session.tail_log(15)}")
        time.sleep(0.1)


def toggle_live(ui: BlenderUI) -> None:
    """F3 > Live Preview over the viewport, as an artist turns it on or off."""
    ui.mouse_to(*ui.region_centre(ui.state()["view3d"]))
    ui.screen.wait_settled(quiet=0.3)
    ui.search("Live Preview")


def set_resolution(ui: BlenderUI, long_side: int) -> None:
    """Set Live Resolution and wait for the first picture at that size, with nothing more to do."""
    ui.command("stylepass", values={"live_resolution": str(long_side)})
    wait_view(
        ui,
        lambda v: v["picture"] and max(v["picture"][:2]) == long_side and not v["working"],
        60,
        f"a picture at {long_side}",
    )


def settle(ui: BlenderUI) -> None:
    wait_view(ui, lambda v: not v["working"], 60, "the live preview to finish its work")
    time.sleep(0.3)


# -- measurements --------------------------------------------------------------------------------------------


def orbit(ui: BlenderUI, speed: float, seconds: float) -> dict:
    """A steady orbit; returns what happened in it (see blender_side.live_trace)."""
    now = ui.state()["t"]
    ui.command("live_trace", t0=now, t1=now, reset_view=True)  # the view's own timings start empty
    window = ui.command("orbit", degrees_per_second=speed, seconds=seconds)
    ui.wait_until(window["t1"] + 0.2, timeout=seconds + 60)
    trace = ui.command("live_trace", t0=window["t0"], t1=window["t1"], timeout=60)
    trace["seconds"] = window["t1"] - window["t0"]
    return trace


def orbit_figures(trace: dict, speed: float) -> dict:
    """Pictures per second, latency, staleness and costs of one orbit with the preview on."""
    seconds = trace["seconds"]
    captures = {c["n"]: c for c in trace["captures"]}
    shows = trace["shows"]
    ages = []  # how old a picture is when the next one replaces it (from its capture's start)
    for shown, following in itertools.pairwise(shows):
        capture = captures.get(shown["capture"])
        if capture is not None:
            ages.append(following["t"] - capture["start"])
    redraw_gaps = [b - a for a, b in itertools.pairwise(trace["redraws"])]
    beyond = []  # capture -> finished picture beyond the engine run that made it
    for shown in shows:
        capture = captures.get(shown["capture"])
        run = next((r for r in trace["engine_runs"] if capture and r["start"] >= capture["end"]), None)
        if run is not None:
            beyond.append(shown["finished"] - shown["submitted"] - (run["end"] - run["start"]))
    return {
        "fps": len(shows) / seconds,
        "shown": len(shows),
        "captures": len(trace["captures"]),
        "latency": [s["finished"] - s["submitted"] for s in shows],
        "to_screen": [s["drawn"] - s["submitted"] for s in shows if s["drawn"] is not None],
        "latency_beyond_engine": beyond,
        "engine": [r["end"] - r["start"] for r in trace["engine_runs"]],
        "newer_captures": [s["latest"] - s["capture"] for s in shows if s["capture"] is not None],
        "turned": [s["turned"] for s in shows if s["turned"] is not None],
        "age_when_replaced": ages,
        "age_when_replaced_degrees": [speed * age for age in ages],
        "capture": [c["end"] - c["start"] for c in trace["captures"]],
        "capture_step": [c["step"] for c in trace["captures"] if c["step"] is not None],
        "draw_handler": trace.get("draw_seconds", []),
        "redraws_per_second": len(trace["redraws"]) / seconds,
        "longest_redraw_interval": max(redraw_gaps, default=None),
        "max_gap": trace["max_gap"],
    }


def edits(ui: BlenderUI, count: int, degrees: float) -> list[dict]:
    """Single edits while idle (a view turn each): edit to pixels, split into its steps."""
    found = []
    for number in range(count):
        settle(ui)
        before = view_state(ui)["shown"]
        edit = ui.command("view_turn", degrees=degrees if number % 2 == 0 else -degrees)["t"]
        wait_view(
            ui, lambda v, b=before: v["shown"] > b and not v["working"], 60, "the edited view's picture"
        )
        ui.wait_until(time.monotonic() + 0.3)  # the redraw after the picture has been seen
        trace = ui.command("live_trace", t0=edit, t1=ui.state()["t"])
        capture = trace["captures"][0]
        (shown,) = [s for s in trace["shows"] if s["capture"] == capture["n"]]
        run = next(r for r in trace["engine_runs"] if r["start"] >= capture["end"])
        seen = next((t for t in trace["redraws"] if t > edit), None)
        in_job = [t for t in trace["redraws"] if capture["end"] < t < shown["t"]]
        found.append(
            {
                "total": shown["drawn"] - edit,
                "engine": run["end"] - run["start"],
                "edit_to_redraw": seen - edit,
                "redraw_to_capture": capture["start"] - seen,
                "capture_step": capture["step"],
                "submit_to_engine": run["start"] - shown["submitted"],
                "after_engine": shown["finished"] - run["end"],
                "to_screen": shown["drawn"] - shown["t"],
                "captures": len(trace["captures"]),
                "redraws_in_job": len(in_job),
            }
        )
    return found


def redraw_cost(ui: BlenderUI, iterations: int, rounds: int, step: float) -> dict:
    return ui.command("redraw_cost", iterations=iterations, rounds=rounds, step_degrees=step, timeout=300)


# -- the run -------------------------------------------------------------------------------------------------


def run(args) -> dict:
    figures: dict = {
        "screen": args.screen,
        "orbit_degrees_per_second": args.speed,
        "orbit_seconds": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        zip_path = Path(args.zip) if args.zip else build_zip(Path(tmp))
        screen = tuple(int(n) for n in args.screen.split("x"))
        session = UISession(chroot(), screen=screen)
        try:
            session.open()  # waits while another UI session holds this chroot
        except (OSError, subprocess.CalledProcessError, UISessionError) as error:
            session.close()
            raise Skipped(f"cannot mount or prepare the chroot: {error}") from error
        try:
            figures["blender_package"] = session.blender_version()
            ui = start_ui(session, zip_path)
            figures["blender"] = ui.state()["blender"]
            if not args.gif_only:
                figures["other_blenders"] = other_blenders(session)
                figures["load"] = [os.getloadavg()[0]]
                measure(ui, args, figures)
                figures["load"].append(os.getloadavg()[0])
            if args.gif:
                turn_on_at(ui, 256)
                figures["gif"] = record_gif(ui, Path(args.gif), args)
            try:
                ui.command("shutdown", timeout=10)
            except UISessionError:
                pass
        finally:
            session.close()
    return figures


def other_blenders(session: UISession) -> int:
    """Blender processes on this machine besides this session's (they compete for the 2 cores)."""
    mine = f"STYLEPASS_UI_DIR={session.inner_dir}".encode()
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip().startswith("blender"):
                count += mine not in (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
    return count


def turn_on_at(ui: BlenderUI, long_side: int) -> None:
    if view_state(ui) is None:
        toggle_live(ui)
        wait_view(ui, lambda v: v["shown"] >= 1, FIRST_PICTURE_LIMIT, "a first live picture")
    set_resolution(ui, long_side)


def measure(ui: BlenderUI, args, figures: dict) -> None:
    # 1. The orbit with the preview off: the viewport's own redraws and main-thread gaps.
    figures["off"] = orbit_figures(orbit(ui, args.speed, args.seconds), args.speed)
    # 2. On, as an artist turns it on; then each resolution.
    if args.engine_threads:
        figures["engine_threads"] = ui.command("engine_threads", threads=args.engine_threads)["threads"]
    toggle_live(ui)
    wait_view(ui, lambda v: v["shown"] >= 1, FIRST_PICTURE_LIMIT, "a first live picture")
    for long_side in RESOLUTIONS:
        print(f"[bench_live] live resolution {long_side}", file=sys.stderr, flush=True)
        set_resolution(ui, long_side)
        settle(ui)
        alone = ui.command("live_engine", repeats=args.engine_repeats, timeout=120)
        settle(ui)
        single = edits(ui, args.edits, degrees=8.0)
        settle(ui)
        on = orbit_figures(orbit(ui, args.speed, args.seconds), args.speed)
        settle(ui)
        cost = redraw_cost(ui, args.redraw_iterations, args.redraw_rounds, step=args.speed / 60)
        settle(ui)
        draw = ui.command(
            "draw_parts", iterations=args.redraw_iterations, step_degrees=args.speed / 60, timeout=300
        )
        settle(ui)
        capture = ui.command("capture_parts", repeats=args.engine_repeats, timeout=120)
        settle(ui)
        figures[str(long_side)] = {
            "engine_alone": alone["seconds"],
            "input_shape": alone["shape"],
            "edits": single,
            "orbit": on,
            "redraw_on": cost["on"],
            "redraw_off": cost["off"],
            "draw_handler_idle": cost["handler"],
            "draw_parts": draw,
            "capture_parts": capture,
        }
    toggle_live(ui)
    wait_view_off(ui)


def wait_view_off(ui: BlenderUI) -> None:
    deadline = time.monotonic() + 10
    while view_state(ui) is not None:
        if time.monotonic() > deadline:
            raise UISessionError("the live preview did not turn off")
        time.sleep(0.1)


# -- the README GIF ------------------------------------------------------------------------------------------


def record_gif(ui: BlenderUI, out: Path, args) -> dict:
    """Frames of the 3D viewport's region from Xvfb's frame buffer during an orbit with the preview on (256),
    scaled to `--gif-width` and written as a looping GIF with one palette for all frames."""
    from PIL import Image

    elevation, heading, distance = (float(n) for n in args.gif_view.split(","))
    ui.command("view_set", elevation=elevation, heading=heading, distance=distance, target=list(GIF_TARGET))
    settle(ui)
    x, y, width, height = ui.command("live")["region"]
    top = ui.state()["window"][1] - (y + height)
    box = (x, top, x + width, top + height)
    copies = []
    window = ui.command("orbit", degrees_per_second=args.gif_speed, seconds=args.gif_seconds)
    end = window["t1"] + 0.4  # the last view's picture arrives after the orbit stops
    interval = 1 / args.gif_fps
    next_at = time.monotonic()
    while time.monotonic() < end:
        copies.append(ui.copy_frame())
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    frames = []
    scale = args.gif_width / width
    size = (args.gif_width, round(height * scale))
    for copy in copies:
        path = ui.host_path(copy)
        raw = FrameBuffer(path).grab(box, step=1)
        path.unlink()
        image = Image.frombytes("RGB", (width, height), raw, "raw", "BGRX")
        frames.append(image.resize(size, Image.Resampling.LANCZOS))
    # One palette from a few frames across the orbit: no colour flicker between frames, smaller file.
    sample = Image.new("RGB", (size[0], size[1] * 4))
    for i, frame in enumerate(frames[:: max(1, len(frames) // 4)][:4]):
        sample.paste(frame, (0, size[1] * i))
    palette = sample.quantize(colors=args.gif_colours, method=Image.Quantize.MEDIANCUT)
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    indexed[0].save(
        out,
        save_all=True,
        append_images=indexed[1:],
        duration=round(1000 * interval),
        loop=0,
        optimize=False,
    )
    if args.gif_frames:  # a few frames as PNGs, to look at
        folder = Path(args.gif_frames)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(frames), max(1, len(frames) // 6)):
            frames[i].save(folder / f"frame-{i:03d}.png")
    with Image.open(out) as written:  # Pillow merges identical neighbours: the screen changed fewer times
        distinct = written.n_frames
    return {
        "path": str(out),
        "copies": len(frames),
        "frames": distinct,
        "size": list(size),
        "bytes": out.stat().st_size,
    }


# -- the table -----------------------------------------------------------------------------------------------


def table(figures: dict) -> str:
    res = [str(r) for r in RESOLUTIONS]
    rows: list[tuple[str, ...]] = []

    def row(label: str, values: list[str], goal: str = "") -> None:
        rows.append((label, *values, goal))

    def each(get) -> list[str]:
        return [get(figures[r]) for r in res]

    def engine_alone(f):
        return median(f["engine_alone"])

    off = figures["off"]
    row("neural-style engine alone, ms (median)", each(lambda f: ms(engine_alone(f))), "baseline")
    row(
        "  same engine during the orbit, ms (x alone)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['engine']))} ({ratio(median(f['orbit']['engine']), engine_alone(f))})"
            )
        ),
    )
    row(
        "pictures per second in the orbit",
        each(lambda f: f"{f['orbit']['fps']:.1f}"),
        f">= {GOAL_FPS_256:.0f} at 256",
    )
    row(
        "  x the engine back to back (1/alone)",
        each(lambda f: ratio(f["orbit"]["fps"], 1 / engine_alone(f))),
    )
    row(
        "latency capture->picture, ms (median / max)",
        each(
            lambda f: f"{ms(median(f['orbit']['latency']))} / {ms(max(f['orbit']['latency'], default=None))}"
        ),
    )
    row(
        "  beyond its engine run, ms (median / max)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['latency_beyond_engine']))} / "
                f"{ms(max(f['orbit']['latency_beyond_engine'], default=None))}"
            )
        ),
    )
    row(
        "  capture->on screen, ms (median / max)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['to_screen']))} / {ms(max(f['orbit']['to_screen'], default=None))}"
            )
        ),
    )

    def edit(f, key):
        return median(e[key] for e in f["edits"])

    row(
        "edit->pixels, idle, ms (median / max)",
        each(lambda f: f"{ms(edit(f, 'total'))} / {ms(max(e['total'] for e in f['edits']))}"),
        "<= job + 50 ms",
    )
    row(
        "  beyond its engine job, ms (median / max)",
        each(
            lambda f: (
                f"{ms(median(e['total'] - e['engine'] for e in f['edits']))} / "
                f"{ms(max(e['total'] - e['engine'] for e in f['edits']))}"
            )
        ),
        f"<= {GOAL_BEYOND_JOB * 1000:.0f}",
    )
    for key, label in (
        ("edit_to_redraw", "edit -> redraw sees it"),
        ("redraw_to_capture", "redraw -> capture (timer)"),
        ("capture_step", "capture + hash + submit"),
        ("submit_to_engine", "submit -> engine starts"),
        ("engine", "engine"),
        ("after_engine", "engine -> picture (finish, timer)"),
        ("to_screen", "picture -> on screen (redraw)"),
    ):
        row(f"    {label}, ms (median)", each(lambda f, key=key: ms(edit(f, key), 1)))
    row(
        "staleness: newer captures when shown (max)",
        each(lambda f: str(max(f["orbit"]["newer_captures"], default="-"))),
        "0 (one job behind)",
    )
    row(
        "  view turned since its capture, deg (med / max)",
        each(lambda f: f"{median(f['orbit']['turned']):.1f} / {max(f['orbit']['turned']):.1f}"),
    )
    row(
        "  picture age when replaced, ms (med / max)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['age_when_replaced']))} / "
                f"{ms(max(f['orbit']['age_when_replaced'], default=None))}"
            )
        ),
    )
    row(
        "draw handler per redraw, ms (median / p99)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['draw_handler']), 2)} / "
                f"{ms(percentile(f['orbit']['draw_handler'], 0.99), 2)}"
            )
        ),
        f"< {GOAL_DRAW * 1000:.0f}",
    )
    row(
        "  same, redraws with no engine job running",
        each(
            lambda f: (
                f"{ms(median(f['draw_handler_idle']), 2)} / {ms(percentile(f['draw_handler_idle'], 0.99), 2)}"
            )
        ),
        f"< {GOAL_DRAW * 1000:.0f}",
    )
    row(
        "region redraw, preview off, ms (median / p99)",
        each(lambda f: f"{ms(median(f['redraw_off']), 1)} / {ms(percentile(f['redraw_off'], 0.99), 1)}"),
        "baseline",
    )
    row(
        "region redraw, preview on, ms (median / p99)",
        each(lambda f: f"{ms(median(f['redraw_on']), 1)} / {ms(percentile(f['redraw_on'], 0.99), 1)}"),
    )
    row(
        "  preview's share: on - off, ms (median / p99)",
        each(
            lambda f: (
                f"{ms(median(f['redraw_on']) - median(f['redraw_off']), 1)} / "
                f"{ms(percentile(f['redraw_on'], 0.99) - percentile(f['redraw_off'], 0.99), 1)}"
            )
        ),
        f"< {GOAL_DRAW * 1000:.0f}",
    )
    row(
        "  on / off (median)",
        each(lambda f: ratio(median(f["redraw_on"]), median(f["redraw_off"]))),
    )
    row(
        "capture, main thread, ms (median / p99)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['capture']), 1)} / {ms(percentile(f['orbit']['capture'], 0.99), 1)}"
            )
        ),
    )
    row(
        "  capture step (+ hash, submit), ms (median / p99)",
        each(
            lambda f: (
                f"{ms(median(f['orbit']['capture_step']), 1)} / "
                f"{ms(percentile(f['orbit']['capture_step'], 0.99), 1)}"
            )
        ),
    )
    row(
        "  x region redraw with the preview off (median)",
        each(lambda f: ratio(median(f["orbit"]["capture"]), median(f["redraw_off"]))),
    )
    row(
        f"viewport redraws/s in the orbit (off: {off['redraws_per_second']:.1f})",
        each(
            lambda f: (
                f"{f['orbit']['redraws_per_second']:.1f} "
                f"({ratio(f['orbit']['redraws_per_second'], off['redraws_per_second'])})"
            )
        ),
    )
    row(
        f"longest main-thread gap in the orbit, ms (off: {ms(off['max_gap'])})",
        each(lambda f: f"{ms(f['orbit']['max_gap'])} ({ratio(f['orbit']['max_gap'], off['max_gap'])})"),
    )
    head = ("", *(f"{r} px" for r in res), "goal")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [
        f"Live preview, neural-style engine: Blender {figures.get('blender')} (Debian "
        f"{figures.get('blender_package')}), llvmpipe, screen {figures['screen']}, {os.cpu_count()} cores; "
        f"orbit "
        f"{figures['orbit_degrees_per_second']:.0f} deg/s for {figures['orbit_seconds']:.0f} s"
        + (f"; engine threads {figures['engine_threads']}" if "engine_threads" in figures else ""),
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("Where the time goes (medians, ms):")
    for r in res:
        f = figures[r]
        draw = ", ".join(f"{name} {ms(median(values), 2)}" for name, values in f["draw_parts"].items())
        lines.append(f"  {r}: draw handler: {draw}")
        capture = f["capture_parts"]
        named = ", ".join(
            f"{name} {ms(median(capture[name]), 1)}"
            for name in ("draw_view3d", "read", "numpy", "float", "hash")
        )
        width, height = capture["size"]
        lines.append(f"  {r}: capture at {width}x{height}: {named} ({capture['buffer']})")
        lines.append(
            f"  {r}: edits: viewport redraws between capture and picture "
            f"{median(e['redraws_in_job'] for e in f['edits'])} (median)"
        )
    load = figures.get("load")
    if load:
        lines.append(
            f"Machine load (1-min average) before / after: {load[0]:.2f} / {load[1]:.2f}; other Blenders "
            f"running at the start: {figures.get('other_blenders', 0)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--screen", default="1280x720", help="Xvfb's screen (the real-UI tests' size)")
    parser.add_argument("--speed", type=float, default=45.0, help="orbit speed, degrees per second")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each orbit")
    parser.add_argument("--edits", type=int, default=10, help="single edits per resolution")
    parser.add_argument("--engine-repeats", type=int, default=10)
    parser.add_argument("--redraw-iterations", type=int, default=20, help="redraws per block")
    parser.add_argument("--redraw-rounds", type=int, default=5, help="pairs of blocks (preview off, on)")
    parser.add_argument(
        "--engine-threads",
        type=int,
        help="an experiment: the engine's onnxruntime threads (default: its own)",
    )
    parser.add_argument("--zip", help="an extension zip to install (default: build one)")
    parser.add_argument("--json", help="write every figure (all samples) to this file")
    parser.add_argument("--gif", help="also record the README GIF of the preview following an orbit here")
    parser.add_argument("--gif-only", action="store_true", help="only record the GIF")
    parser.add_argument("--gif-seconds", type=float, default=4.0)
    parser.add_argument("--gif-speed", type=float, default=30.0, help="degrees per second")
    parser.add_argument("--gif-fps", type=float, default=10.0)
    parser.add_argument("--gif-width", type=int, default=640)
    parser.add_argument("--gif-colours", type=int, default=128)
    parser.add_argument("--gif-frames", help="a folder for a few of the GIF's frames as PNGs")
    parser.add_argument(
        "--gif-view", default="22,20,13", help="the view the orbit starts from: elevation,heading,distance"
    )
    args = parser.parse_args(argv)
    if args.gif_only and not args.gif:
        parser.error("--gif-only needs --gif PATH")
    try:
        figures = run(args)
    except Skipped as why:
        print(f"[bench_live] SKIPPED (not run): {why}", file=sys.stderr)
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    if not args.gif_only:
        print(table(figures))
    if "gif" in figures:
        gif = figures["gif"]
        width, height = gif["size"]
        print(
            f"GIF: {gif['path']}: {gif['frames']} frames (from {gif['copies']} screen copies), "
            f"{width}x{height}, {gif['bytes']} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
