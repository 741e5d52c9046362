# SPDX-License-Identifier: GPL-3.0-or-later
"""Built-in engines. Importing this package registers them; none loads a model or a heavy library here."""

from . import neural_style  # noqa: F401  (registers NEURAL_STYLE)
