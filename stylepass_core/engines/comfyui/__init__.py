# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI engine: Stylepass's exact passes sent to a ComfyUI server the artist already runs.

    StyleRequest(beauty, controls, ComfyUISettings, seed) -> ComfyUIEngine.run -> StyleResult(image, info)

Modules: `settings` (every setting; shared names and types with the diffusion engine), `workflow` (API-format
workflows built from the passes or filled into the artist's own, checked against `/object_info`), `client`
(HTTP and progress), `websocket` (a small RFC 6455 client: Blender's Python has none).
"""

from .client import ComfyClient, ComfyUIError
from .engine import ComfyUIEngine
from .settings import ComfyUISettings

__all__ = ["ComfyClient", "ComfyUIEngine", "ComfyUIError", "ComfyUISettings"]
