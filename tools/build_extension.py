# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and validate the extension zips: `./run build` writes dist/stylepass-<version>.zip (every platform),
one dist/stylepass-<version>-<platform>.zip per platform with only its wheels, and beside them
dist/stylepass_core-<version>-py3-none-any.whl, the core alone, for `pip install` on a remote worker box."""

import argparse
import shutil
from pathlib import Path

from blender_harness import ROOT, build_zip, platform_zips
from core_wheel import wheel_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the zip and the wheel")
    args = parser.parse_args()
    print(build_zip(args.out, split_platforms=True))
    for part in platform_zips(args.out):
        print(part)
    # build_zip has just built the core wheel into wheels/ (the manifest bundles it from there).
    print(shutil.copy2(ROOT / "wheels" / wheel_name(), args.out))


if __name__ == "__main__":
    main()
