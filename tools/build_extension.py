# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and validate the extension zip: `./run build` (writes dist/stylepass-<version>.zip)."""

import argparse
from pathlib import Path

from blender_harness import ROOT, build_zip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the zip")
    args = parser.parse_args()
    print(build_zip(args.out))


if __name__ == "__main__":
    main()
