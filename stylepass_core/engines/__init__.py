# SPDX-License-Identifier: GPL-3.0-or-later
"""Built-in engines. Importing this package registers them; none loads a model or a heavy library here."""

from . import (
    comfyui,  # noqa: F401  (registers COMFYUI; talks to a server the artist runs, nothing loads here)
    diffusion,  # noqa: F401  (registers DIFFUSION; torch and diffusers load only on its first run)
    neural_style,  # noqa: F401  (registers NEURAL_STYLE)
)
