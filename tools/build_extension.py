# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and validate the extension zip: `./run build` writes dist/stylepass-<version>.zip, and beside it
dist/stylepass_core-<version>-py3-none-any.whl, the core alone, for `pip install` on a remote worker box."""

import argparse
import shutil
from pathlib import Path

from blender_harness import ROOT, build_zip
from core_wheel import wheel_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the zip and the wheel")
    args = parser.parse_args()
    print(build_zip(args.out))
    # build_zip has just built the core wheel into wheels/ (the manifest bundles it from there).
    print(shutil.copy2(ROOT / "wheels" / wheel_name(), args.out))


if __name__ == "__main__":
    main()
