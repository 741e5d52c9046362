# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a script in headless Blender with the freshly built extension installed and enabled.

    ./run py --blender 5.2 SCRIPT.py [ARGS...]

The user folder is a throwaway temp folder, so nothing touches a real Blender configuration. Inside the
script, `sys.argv` is [SCRIPT.py, ARGS...] and `bpy.ops.stylepass.*` are available.
"""

import runpy
import shutil
import sys
import tempfile
from pathlib import Path

from blender_harness import build_zip, disable_extension, install_extension, use_throwaway_user_folder


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    script = Path(sys.argv[1]).resolve()
    user = use_throwaway_user_folder()
    dist = Path(tempfile.mkdtemp(prefix="stylepass-dist-"))
    try:
        zip_path = build_zip(dist)
        import bpy  # noqa: F401  (after the user folder is set)

        install_extension(zip_path)
        sys.argv = [str(script), *sys.argv[2:]]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:
            return int(stop.code or 0) if not isinstance(stop.code, str) else 1
        finally:
            # Blender 4.5 hangs at exit while handlers or timers are registered: unregister first.
            disable_extension()
        return 0
    finally:
        shutil.rmtree(dist, ignore_errors=True)
        shutil.rmtree(user, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
