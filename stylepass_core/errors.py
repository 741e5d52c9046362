# SPDX-License-Identifier: GPL-3.0-or-later
"""The one base of every error the artist can fix.

Anything raised as a `StylepassError` carries a message written for the artist (what is wrong, what to
change). The Blender side turns it into a report in one place (`operators/modal.py`); everything else is a
bug and keeps its traceback.
"""


class StylepassError(Exception):
    """Something the artist can fix; the message says what to change. Nothing was changed or written."""
