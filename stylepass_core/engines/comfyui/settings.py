# SPDX-License-Identifier: GPL-3.0-or-later
"""`ComfyUISettings`: every setting of the ComfyUI engine, declared once (see `stylepass_core.settings`).

Where a setting means what the diffusion engine's does, it has the diffusion engine's name, range and type:
the prompt, negative prompt and style words, steps, guidance, denoise, the controls (`ControlUnit`: which pass
drives which ControlNet, weight, start, end) and the LoRAs (`Lora`). Model names are the server's own (as its
`/object_info` lists them), never files on this machine. ComfyUI names its sampling method in two parts,
*Sampler* and *Scheduler*; they keep ComfyUI's names because that is what an artist sees in its node.
"""

import math
from dataclasses import dataclass

from ...settings import EngineSettings, SettingsError, setting
from ..diffusion.settings import ControlUnit, Lora, check_sampling, shared, styled_prompts

DEFAULT_SERVER = "http://127.0.0.1:8188"
LIVE_STEPS = 6  # the viewport preview's steps at most: a quick look, the final frame keeps the artist's
WORKFLOW_INPUTS = (
    "beauty",
    "depth",
    "normal",
    "lineart",
    "segmentation",
    "prompt",
    "negative_prompt",
    "seed",
)
"""What Stylepass can feed into an artist's own workflow, each onto the node titled `Stylepass <Input>`."""


@dataclass(frozen=True)
class ComfyUISettings(EngineSettings):
    """A ComfyUI server the artist already runs: Stylepass builds the workflow from the passes (or fills in the
    artist's own), sends it and brings the picture back."""

    ENGINE = "COMFYUI"
    LABEL = "ComfyUI"
    DESCRIPTION = "A ComfyUI server you run, with its own checkpoints, LoRAs and ControlNets"
    ORDER = 30
    PROPERTY = "comfyui"
    USES_SEED = True
    HOST_FIELDS = ("comfyui_server", "comfyui_headers", "comfyui_timeout")

    # Model
    checkpoint: str = setting(
        "", "Checkpoint", "A checkpoint on the server (its CheckpointLoaderSimple list)"
    )
    # Prompt
    prompt: str = shared("prompt")
    negative_prompt: str = shared("negative_prompt")
    style_preset: str = shared("style_preset")
    # Sampling
    steps: int = shared("steps")
    guidance: float = shared("guidance")
    denoise: float = shared("denoise")
    sampler: str = setting("euler", "Sampler", "ComfyUI's sampler (its KSampler's sampler_name)")
    scheduler: str = setting("normal", "Scheduler", "ComfyUI's noise schedule (its KSampler's scheduler)")
    # Steering: the server's ControlNets and LoRAs, by the names it lists
    controls: tuple[ControlUnit, ...] = setting((), "Controls", "ControlNet units", item=ControlUnit)
    loras: tuple[Lora, ...] = setting((), "LoRAs", "LoRAs on the server mixed into the model", item=Lora)
    # Bring your own workflow
    workflow: str = setting(
        "",
        "Workflow",
        "A workflow saved from ComfyUI in API format (Export (API)); Stylepass fills in the nodes titled "
        "'Stylepass Beauty', 'Stylepass Depth', ..., 'Stylepass Prompt', 'Stylepass Seed'. Empty: Stylepass "
        "builds the workflow from these settings",
        subtype="FILE_PATH",
        model=True,  # a file on this machine: '//' paths resolve and a missing file is refused like a model's
    )
    # Host (from the add-on's preferences)
    comfyui_server: str = setting(DEFAULT_SERVER, "Server", "The ComfyUI server's address")
    comfyui_headers: str = setting(
        "",
        "Headers",
        "Extra HTTP headers for a proxy in front of the server, one 'Name: value' per line or separated by ';' "
        "(e.g. Authorization: Bearer <token>)",
    )
    comfyui_timeout: float = setting(
        600.0, "Timeout", "Seconds to wait for one picture before giving up", min=5.0, max=86400.0
    )

    def check(self) -> None:
        check_sampling(self)
        try:
            parse_headers(self.comfyui_headers)
        except ValueError as error:
            raise SettingsError(str(error)) from error

    def not_ready(self) -> str:
        if not self.comfyui_server.strip():
            return (
                "The ComfyUI engine needs the server's address: set it in Preferences > Add-ons > Stylepass."
            )
        if not self.workflow.strip() and not self.checkpoint.strip():
            return (
                "The ComfyUI engine needs a checkpoint: pick one of the server's (or choose a workflow file)."
            )
        return ""

    def control_maps(self) -> tuple[str, ...]:
        if self.workflow.strip():
            # The artist's workflow takes whichever passes it has nodes for; all are sent to be safe.
            return ("depth", "normal", "lineart", "segmentation")
        return tuple(unit.map for unit in self.controlnets)

    def uses_beauty(self) -> bool:
        return bool(self.workflow.strip()) or self.img2img

    def live(self) -> "ComfyUISettings":
        # The same workflow with fewer steps (at least one step of image to image remains).
        steps = min(self.steps, max(LIVE_STEPS, math.ceil(1.0 / self.denoise)))
        return self.replace(steps=steps)

    def continuation(self, denoise: float) -> "ComfyUISettings":
        amount = max(min(self.denoise, denoise), min(1.0, 1.0 / self.steps + 1e-6))
        return self.replace(denoise=amount)

    @property
    def img2img(self) -> bool:
        """Whether the run starts from the beauty pass (denoise below 1)."""
        return self.denoise < 1.0

    @property
    def controlnets(self) -> tuple[ControlUnit, ...]:
        """The enabled ControlNet units."""
        return tuple(unit for unit in self.controls if unit.enabled)

    @property
    def active_loras(self) -> tuple[Lora, ...]:
        """The enabled LoRAs."""
        return tuple(lora for lora in self.loras if lora.enabled)

    def styled_prompts(self) -> tuple[str, str]:
        """The prompt and negative prompt with the style preset's words, as the diffusion engine adds them."""
        return styled_prompts(self.prompt, self.negative_prompt, self.style_preset)


def parse_headers(text: str) -> dict[str, str]:
    """'Name: value' pairs, one per line or separated by ';', as a dict.

    Raises:
        ValueError: a pair without a colon or with an empty name.
    """
    headers = {}
    for part in text.replace(";", "\n").splitlines():
        if not part.strip():
            continue
        name, colon, value = part.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"header {part.strip()!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers
