# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of the real-UI harness: Debian's Blender in a chroot under Xvfb, driven with xdotool.

    python3 tools/ui_smoke.py [--suite sid|trixie] [--out /tmp/ui-smoke] [--zip dist/stylepass-0.1.0.zip]

1. Builds the extension zip (`./run build`) unless `--zip` names one, and the chroot (`tools/ui_chroot.sh`).
2. Installs our zip offline as an artist does (`blender --command extension install-file -e`) and records
   what Blender says; then installs a tiny extension built here (a sidebar panel, an operator in the View
   menu), so the harness is proven even when our zip is refused.
3. Starts the UI with an empty scene and takes screenshots: at start, after N over the 3D viewport (the
   sidebar opens), after F3 > "UI Smoke Hello" > Enter (the tiny extension's operator runs). Quits.

Writes PNGs and report.json to OUT/<suite>/ and prints the report. Exit code 0 when the harness worked
(whether or not our own zip installed; the report says which), 1 otherwise, 3 when Debian has no Blender.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ui_session import UISession, UISessionError

ROOT = Path(__file__).resolve().parent.parent

SMOKE_MANIFEST = """\
schema_version = "1.0.0"
id = "ui_smoke"
version = "1.0.0"
name = "UI Smoke"
tagline = "A panel and an operator that prove the UI harness works"
maintainer = "Stylepass team <team@stylepass.invalid>"
type = "add-on"
blender_version_min = "4.2.0"
license = ["SPDX:GPL-3.0-or-later"]
"""

SMOKE_INIT = """\
import os
import bpy


class UISMOKE_OT_hello(bpy.types.Operator):
    \"\"\"Write a file the host waits for\"\"\"

    bl_idname = "ui_smoke.hello"
    bl_label = "UI Smoke Hello"

    def execute(self, context):
        with open(os.path.join(os.environ["STYLEPASS_UI_DIR"], "hello"), "w") as stream:
            stream.write("hello")
        self.report({'INFO'}, "Hello from the UI smoke extension")
        return {'FINISHED'}


class VIEW3D_PT_ui_smoke(bpy.types.Panel):
    bl_label = "UI Smoke"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Smoke"

    def draw(self, context):
        self.layout.operator(UISMOKE_OT_hello.bl_idname)


def menu_entry(self, context):
    self.layout.operator(UISMOKE_OT_hello.bl_idname)


def register():
    bpy.utils.register_class(UISMOKE_OT_hello)
    bpy.utils.register_class(VIEW3D_PT_ui_smoke)
    bpy.types.VIEW3D_MT_view.append(menu_entry)


def unregister():
    bpy.types.VIEW3D_MT_view.remove(menu_entry)
    bpy.utils.unregister_class(VIEW3D_PT_ui_smoke)
    bpy.utils.unregister_class(UISMOKE_OT_hello)
"""

# Runs in the UI: empties the scene once, then writes the state the host checks after each action.
PROBE = """\
import json, os, bpy

_dir = os.environ["STYLEPASS_UI_DIR"]
_emptied = False


def _state():
    global _emptied
    if not _emptied:
        for obj in list(bpy.data.objects):
            bpy.data.objects.remove(obj)
        _emptied = True
    views = [a for w in bpy.context.window_manager.windows for a in w.screen.areas if a.type == 'VIEW_3D']
    state = {
        "objects": len(bpy.data.objects),
        "sidebar_open": bool(views) and views[0].spaces.active.show_region_ui,
        "view3d": [(a.x, a.y, a.width, a.height) for a in views],
        "window": [(w.width, w.height) for w in bpy.context.window_manager.windows],
        "addons": sorted(bpy.context.preferences.addons.keys()),
    }
    with open(os.path.join(_dir, "state.tmp"), "w") as stream:
        json.dump(state, stream)
    os.replace(os.path.join(_dir, "state.tmp"), os.path.join(_dir, "state.json"))
    return 0.25


bpy.app.timers.register(_state, first_interval=0.3, persistent=True)
"""


def build_real_zip() -> tuple[Path, float]:
    start = time.monotonic()
    proc = subprocess.run(["./run", "build"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"./run build failed:\n{proc.stderr[-3000:]}")
    zips = sorted((ROOT / "dist").glob("stylepass-*.zip"), key=lambda p: p.stat().st_mtime)
    return zips[-1], time.monotonic() - start


def build_smoke_zip(folder: Path) -> Path:
    path = folder / "ui_smoke-1.0.0.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("blender_manifest.toml", SMOKE_MANIFEST)
        archive.writestr("__init__.py", SMOKE_INIT)
    return path


def chroot_for(suite: str) -> tuple[Path, float]:
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / "tools" / "ui_chroot.sh"), suite], stdout=subprocess.PIPE, text=True)
    if proc.returncode == 3:
        raise SystemExit(3)
    if proc.returncode != 0:
        raise SystemExit(f"tools/ui_chroot.sh {suite} failed ({proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1]), time.monotonic() - start


def wait_state(ui: UISession, check, timeout: float = 20) -> dict:
    """Poll the probe's state.json until check(state) holds."""
    deadline = time.monotonic() + timeout
    while True:
        path = ui.wait_for_file("state.json", timeout)
        state = json.loads(path.read_text())
        if check(state):
            return state
        if time.monotonic() > deadline:
            raise UISessionError(f"state never satisfied the check: {state}")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=("sid", "trixie"), default="sid")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ui-smoke"))
    parser.add_argument("--zip", type=Path, help="our extension zip; default: build it with ./run build")
    args = parser.parse_args()
    out = args.out / args.suite
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"suite": args.suite, "seconds": {}}
    seconds = report["seconds"]

    # 1. The zip and the chroot.
    if args.zip:
        real_zip = args.zip.resolve()
    else:
        real_zip, seconds["build_zip"] = build_real_zip()
    report["zip"] = str(real_zip)
    chroot, seconds["chroot"] = chroot_for(args.suite)
    report["chroot"] = str(chroot)
    try:
        drive(chroot, real_zip, out, report)
    except UISessionError as error:
        report["error"] = str(error)
        return 1
    finally:
        (out / "report.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    return 0


def drive(chroot: Path, real_zip: Path, out: Path, report: dict) -> None:
    """Steps 2 and 3: installs, then the UI session, recording everything in report."""
    seconds = report["seconds"]
    with tempfile.TemporaryDirectory() as tmp, UISession(chroot) as ui:
        report["blender_package"] = ui.blender_version()
        files = Path(tmp)
        (files / "probe.py").write_text(PROBE)

        # 2. Offline installs, as an artist does, into the session's throwaway HOME.
        real = ui.install_extension(real_zip)
        seconds["install_real_zip"] = round(real.seconds, 1)
        report["install_real_zip"] = {"returncode": real.returncode, "output": real.output.strip()}
        smoke = ui.install_extension(build_smoke_zip(files))
        seconds["install_smoke_zip"] = round(smoke.seconds, 1)
        report["install_smoke_zip"] = {"returncode": smoke.returncode, "output": smoke.output.strip()}

        # 3. The UI, an empty scene, and a person's keys.
        start = time.monotonic()
        ui.start(script=files / "probe.py")
        report["ready"] = ui.wait_ready(timeout=180)
        state = wait_state(ui, lambda s: s["objects"] == 0)
        seconds["ui_ready"] = round(time.monotonic() - start, 1)
        report["enabled_addons"] = state["addons"]
        time.sleep(1.5)  # the first frames after start-up and after emptying the scene
        shots = [ui.screenshot(out / "01-start.png")]
        # A person closes the splash screen first; a key pressed over it only closes it.
        ui.xdotool("mousemove", "100", "600")
        ui.key("Escape")
        time.sleep(1.0)

        x, y, width, height = state["view3d"][0]
        window_height = state["window"][0][1]
        # Blender's area y counts from the bottom; X's from the top.
        centre = (x + width // 2, window_height - (y + height // 2))
        report["viewport_centre"] = centre
        ui.xdotool("mousemove", str(centre[0]), str(centre[1]))
        time.sleep(0.3)
        ui.key("n")
        report["sidebar_open_after_n"] = wait_state(ui, lambda s: s["sidebar_open"])["sidebar_open"]
        time.sleep(1.0)
        shots.append(ui.screenshot(out / "02-sidebar.png"))

        ui.key("F3")
        time.sleep(1.0)
        ui.xdotool("type", "--delay", "60", "UI Smoke Hello")
        time.sleep(1.0)
        shots.append(ui.screenshot(out / "03-search.png"))
        ui.key("Return")
        ui.wait_for_file("hello", timeout=20)
        report["operator_ran"] = True
        time.sleep(1.0)
        shots.append(ui.screenshot(out / "04-after-operator.png", method="import"))

        start = time.monotonic()
        report["blender_exit"] = ui.stop()
        seconds["quit"] = round(time.monotonic() - start, 1)
        report["log_tail"] = ui.tail_log(15) if report["blender_exit"] else ""
        report["screenshots"] = [str(p) for p in shots]


if __name__ == "__main__":
    sys.exit(main())
