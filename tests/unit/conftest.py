# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests import the bpy-free core as a top-level package: `from stylepass_core import ...` (the repo root
is on sys.path through `pythonpath` in tests/pytest.ini)."""
