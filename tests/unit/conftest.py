# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests import the bpy-free core as a top-level package: `from stylepass_core import ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "addon"))
