# SPDX-License-Identifier: GPL-3.0-or-later
"""Typed settings: one frozen dataclass per engine, and one for the controls every engine shares.

Every field is declared once with `setting(...)`: its default, label, description, range or choices live next
to it. Everything else is derived from these declarations:

- the Blender properties (`addon/properties.py` generates them; a test checks the panels draw every one),
- the checks (`Settings.__post_init__` refuses a wrong type, range or choice and quotes the value),
- the worker's wire format and the record on disk (`to_plain` / `from_plain`, with a schema version).

So a new knob is one field here, plus one panel line where it belongs.

Field kinds, from the default and the declaration:
    bool, int, float, str     plain values (an enum when `choices` is given)
    image=True                a picture the artist picks (a Blender image); the value is its name and the
                              request carries its pixels under the field's name (`StyleRequest.images`)
    model=True                a model reference: a file, a folder or a model id (resolved on the Blender side)
    model_part=True           a subfolder or file name inside a model (checked by the worker, never resolved)
    item=<Settings class>     a tuple of nested settings (ControlNet units, LoRAs): a list in Blender
"""

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import StylepassError

Choice = tuple[str, str, str]  # (id, label, description)
S = TypeVar("S", bound="Settings")

_META = "stylepass"


class SettingsError(StylepassError, ValueError):
    """A settings value or a settings record is wrong; the message names the field and quotes the value."""


@dataclass(frozen=True)
class Spec:
    """What one settings field is, beyond its type and default (see the module docstring)."""

    label: str
    description: str
    min: float | None = None
    max: float | None = None
    soft_min: float | None = None
    soft_max: float | None = None
    min_exclusive: bool = False
    choices: tuple[Choice, ...] | None = None
    subtype: str = ""  # Blender's: FACTOR, PERCENTAGE, PIXEL, ANGLE, FILE_PATH, DIR_PATH
    image: bool = False
    model: bool = False
    model_part: bool = False  # a subfolder or file name inside a model: checked like a model, never resolved
    item: type | None = None
    multiline: bool = False


def setting(default: Any, label: str, description: str, **spec: Any) -> Any:
    """Declare a settings field: `name: float = setting(1.0, "Strength", "What it does", min=0, max=1)`."""
    if isinstance(default, list | dict | set):
        raise TypeError(f"settings defaults must be immutable, got {default!r} for {label!r}")
    choices = spec.get("choices")
    if choices is not None:
        spec["choices"] = tuple(tuple(choice) for choice in choices)
        if default not in {choice[0] for choice in spec["choices"]}:
            raise TypeError(f"default {default!r} of {label!r} is not one of its choices")
    return field(default=default, metadata={_META: Spec(label, description, **spec)})


def spec_of(item: dataclasses.Field) -> Spec:
    """The `Spec` of a field declared with `setting`."""
    return item.metadata[_META]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> type:
    """bool, int, float, str or tuple, from a field's annotation."""
    origin = typing.get_origin(hint)
    return tuple if origin is tuple else hint


@dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: checks on construction, plain-data round trip, field specs."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for item in dataclasses.fields(self):
            value = _checked(type(self).__name__, item, hints[item.name], getattr(self, item.name))
            object.__setattr__(self, item.name, value)
        self.check()

    def check(self) -> None:
        """Rules across fields (a start after its end, ...); raise `SettingsError` quoting the values."""

    @classmethod
    def specs(cls) -> Iterator[tuple[str, type, Spec, Any]]:
        """`(name, base type, spec, default)` for every field, in declaration order."""
        hints = _hints(cls)
        for item in dataclasses.fields(cls):
            yield item.name, _base_type(hints[item.name]), spec_of(item), item.default

    def values(self) -> dict[str, Any]:
        """Field name -> JSON-able value (nested settings become lists of dicts)."""
        return {name: _plain(getattr(self, name)) for name, *_ in self.specs()}

    @classmethod
    def from_values(cls: type[S], values: dict[str, Any]) -> S:
        """Build from `values()` output; absent fields take their defaults.

        Raises:
            SettingsError: an unknown field, or a value of the wrong type or range.
        """
        if not isinstance(values, dict):
            raise SettingsError(f"{cls.__name__} values must be a dict, got {type(values).__name__}")
        known = {name: spec for name, _, spec, _ in cls.specs()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
        converted = {}
        for name, value in values.items():
            spec = known[name]
            if spec.item is not None and isinstance(value, list | tuple):
                value = tuple(v if isinstance(v, spec.item) else spec.item.from_values(v) for v in value)
            converted[name] = value
        try:
            return cls(**converted)
        except TypeError as error:  # a positional or keyword mismatch dataclasses reports
            raise SettingsError(f"{cls.__name__}: {error}") from None

    def replace(self: S, **changes: Any) -> S:
        """A copy with `changes` applied and checked."""
        return dataclasses.replace(self, **changes)

    def map_models(self: S, resolve: Callable[[str], str]) -> S:
        """A copy whose model references (also in nested settings) went through `resolve`; empty stay empty."""
        changes: dict[str, Any] = {}
        for name, _, spec, _ in self.specs():
            value = getattr(self, name)
            if spec.model and value:
                changes[name] = resolve(value)
            elif spec.item is not None:
                changes[name] = tuple(v.map_models(resolve) for v in value)
        return self.replace(**changes) if changes else self

    def model_references(self, prefix: str = "") -> dict[str, str]:
        """Every non-empty model reference (and part of one) by a dotted path (`model`, `controls.0.model`):
        what a worker checks stays inside its model folders."""
        found: dict[str, str] = {}
        for name, _, spec, _ in self.specs():
            value = getattr(self, name)
            if (spec.model or spec.model_part) and value:
                found[prefix + name] = value
            elif spec.item is not None:
                for index, nested in enumerate(value):
                    found.update(nested.model_references(f"{prefix}{name}.{index}."))
        return found


GROUPS_AS_LAYERS = "layers"
"""`EngineSettings.STYLE_GROUPS`: each style group is its own run of the engine, composited by the object masks."""
GROUPS_AS_REGIONS = "regions"
"""`EngineSettings.STYLE_GROUPS`: one run of the engine, each group's settings applied inside its region only."""


class EngineSettings(Settings):
    """Settings of one engine. Subclasses are frozen dataclasses registered with `register_settings`.

    Class attributes:
        ENGINE: the engine's id, stored in settings, records and on the wire.
        LABEL, DESCRIPTION: how the engine is offered to the artist.
        SCHEMA: version of the field set; bump it when a field changes meaning or is removed.
        ORDER: position in the engine menu (the lowest is the default).
        PROPERTY: the attribute under `scene.stylepass` that holds these settings in Blender.
        NEEDS_WORKER: runs in a worker process (needs torch), not inside Blender.
        USES_SEED: the result depends on the seed.
        STYLE_GROUPS: how objects get their own style (`stylepass_core.style_groups`): `GROUPS_AS_LAYERS`, one
            run per group composited by the object masks (neural style); `GROUPS_AS_REGIONS`, one run in which
            each group's settings condition only its region (`StyleRequest.regions`: diffusion's regional
            prompting); "" for none.
        REGION_FIELDS: with `GROUPS_AS_REGIONS`, the fields a group's settings give its region (a prompt);
            the rest of the run's settings are the scene's.
        HOST_FIELDS: fields that belong to the machine, not the scene (the device): Blender keeps them in
            the add-on's preferences.
    """

    ENGINE: ClassVar[str]
    LABEL: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    SCHEMA: ClassVar[int] = 1
    ORDER: ClassVar[int] = 100
    PROPERTY: ClassVar[str]
    NEEDS_WORKER: ClassVar[bool] = False
    USES_SEED: ClassVar[bool] = False
    STYLE_GROUPS: ClassVar[str] = ""
    REGION_FIELDS: ClassVar[tuple[str, ...]] = ()
    HOST_FIELDS: ClassVar[tuple[str, ...]] = ()

    def not_ready(self) -> str:
        """What must still be set before a run (e.g. a model), as a message for the artist; "" when ready."""
        return ""

    def control_maps(self) -> tuple[str, ...]:
        """The control maps (`depth`, `normal`, `lineart`, `segmentation`) the engine reads."""
        return ()

    def required_images(self) -> dict[str, str]:
        """Image fields that must be set for these settings, with why (for the message when one is missing)."""
        return {}

    def uses_beauty(self) -> bool:
        """Whether the engine reads the beauty pass. Without it the pass render needs one sample, not many."""
        return True

    def continuation(self, denoise: float) -> "EngineSettings | None":
        """Settings that continue from a given start picture (the warped previous frame) and repaint
        `denoise` of it, or None when the engine cannot (then animation blends whole frames instead)."""
        return None

    def live(self) -> "EngineSettings":
        """The settings the live viewport preview runs: these, or a faster variant (diffusion's few-step
        preset). The same object drives Stylise Frame, so the preview and the final agree on everything else."""
        return self

    def to_plain(self) -> dict[str, Any]:
        """JSON-able form for the wire and the record: engine, schema version and values."""
        return {"engine": self.ENGINE, "schema": self.SCHEMA, "values": self.values()}


SETTINGS: dict[str, type[EngineSettings]] = {}
"""Registered settings classes by engine id (the engines package registers the built-in ones)."""


def register_settings(cls: type[EngineSettings]) -> type[EngineSettings]:
    """Register an engine's settings class under its `ENGINE` id; usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, EngineSettings) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_settings needs an EngineSettings dataclass, got {cls!r}")
    known = SETTINGS.get(cls.ENGINE)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"engine id {cls.ENGINE!r} is already taken by {known.__qualname__}")
    SETTINGS[cls.ENGINE] = cls
    return cls


def engine_settings() -> list[type[EngineSettings]]:
    """Every registered settings class, in menu order (built-in engines included)."""
    from . import engines  # noqa: F401  - registers the built-in engines' settings (no heavy imports)

    return sorted(SETTINGS.values(), key=lambda cls: (cls.ORDER, cls.ENGINE))


def settings_class(engine_id: str) -> type[EngineSettings]:
    """The settings class of `engine_id`.

    Raises:
        SettingsError: no engine has that id.
    """
    classes = {cls.ENGINE: cls for cls in engine_settings()}
    if engine_id not in classes:
        raise SettingsError(f"unknown engine {engine_id!r}; known: {sorted(classes)}")
    return classes[engine_id]


def from_plain(data: Any) -> EngineSettings:
    """The settings `EngineSettings.to_plain` produced (from the wire or a record).

    Raises:
        SettingsError: not a settings record, an unknown engine, a schema newer than this code understands,
            or a field that is unknown or wrong.
    """
    if not isinstance(data, dict) or set(data) != {"engine", "schema", "values"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise SettingsError(f"settings must be {{engine, schema, values}}, got {got}")
    cls = settings_class(data["engine"])
    schema = data["schema"]
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= cls.SCHEMA:
        raise SettingsError(
            f"{cls.ENGINE} settings schema {schema!r} is not understood here (this side knows 1 to "
            f"{cls.SCHEMA}): update Stylepass on the older side (Blender or the worker)"
        )
    return cls.from_values(data["values"])


# --------------------------------------------------------------------------------------------------------
# The controls every engine shares, applied by the frame writer after the engine (never by the engine)


OBJECT_FILTERS: tuple[Choice, ...] = (
    ("ALL", "All", "Stylise the whole frame"),
    (
        "INCLUDE",
        "Only Selected",
        "Stylise only objects in the Stylepass selection, keep the rest as rendered",
    ),
    ("EXCLUDE", "All but Selected", "Keep objects in the Stylepass selection as rendered, stylise the rest"),
)


@dataclass(frozen=True)
class FrameSettings(Settings):
    """How the engine's picture becomes the frame: mixed with the render, colours, which objects, the seed."""

    strength: float = setting(
        1.0,
        "Strength",
        "Stylepass's mix of the engine's picture with the render: 0 = the plain render, 1 = fully stylised",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    keep_colours: bool = setting(
        False,
        "Keep Scene Colours",
        "Take only the style's light and texture (luminance) and keep the scene's own colours",
    )
    object_filter: str = setting(
        "ALL",
        "Objects",
        "Which objects get stylised, using each object's 'Stylepass Selection' checkbox",
        choices=OBJECT_FILTERS,
    )
    seed: int = setting(0, "Seed", "Random seed, recorded with every result so it can be reproduced", min=0)
    seed_locked: bool = setting(
        True,
        "Lock Seed",
        "Keep the seed between runs; unlocked, every run picks a new seed and stores it",
    )
    png_compression: int = setting(
        0,
        "PNG Compression",
        "Compression of the stylised PNGs, as in Output > Compression. Painted textures barely compress: 15% "
        "saves about a fifth of the size but writes ~15x slower, so 0 keeps re-runs fastest",
        min=0,
        max=100,
        subtype="PERCENTAGE",
    )

    def mixes_beauty(self) -> bool:
        """Whether the finish mixes the render back in (Strength below 1, Keep Scene Colours, a selection)."""
        return self.strength < 1.0 or self.keep_colours or self.object_filter != "ALL"


@dataclass(frozen=True)
class PassSettings(Settings):
    """Where the control passes go and how they are rendered."""

    output_dir: str = setting(
        "//stylepass/",
        "Output Folder",
        "Where passes and results are written, as <folder>/<scene>/passes/<pass>/<frame>.png. '//' is the "
        "folder of the .blend file",
        subtype="DIR_PATH",
    )
    resolution_scale: float = setting(
        100.0,
        "Resolution Scale",
        "Size of the control passes relative to the scene's output resolution",
        min=1.0,
        max=400.0,
        soft_max=100.0,
        subtype="PERCENTAGE",
    )
    pass_samples: int = setting(
        16,
        "Beauty Samples",
        "Cycles samples of the pass render when the beauty is used (by the engine, Strength, Keep Scene Colours "
        "or the object selection). The data passes are exact at one sample, so otherwise it renders one",
        min=1,
        max=4096,
        soft_max=256,
    )
    line_thickness: float = setting(
        1.0,
        "Line Thickness",
        "Width of the line-art strokes in pixels (anti-aliased, fractional widths allowed)",
        min=0.5,
        max=16.0,
        subtype="PIXEL",
    )
    line_depth_threshold: float = setting(
        0.05,
        "Depth Threshold",
        "Relative depth jump between neighbouring pixels that counts as an outline (0.05 = 5%)",
        min=0.001,
        max=1.0,
    )
    line_crease_angle: float = setting(
        math.radians(40.0),
        "Crease Angle",
        "Angle between surface normals above which a fold within one object is drawn as a line",
        min=math.radians(1.0),
        max=math.radians(179.0),
        subtype="ANGLE",
    )
    show_images: bool = setting(
        True,
        "Show Images",
        "Load the written passes as 'Stylepass <pass>' images for the Image Editor",
    )


@dataclass(frozen=True)
class CoherenceSettings(Settings):
    """How an animation stays coherent from frame to frame."""

    temporal_coherence: bool = setting(
        True,
        "Temporal Coherence",
        "Carry the keyframes' stylisation to the frames between them along Blender's exact motion vectors, so "
        "the style sticks to surfaces instead of flickering",
    )
    temporal_weight: float = setting(
        1.0,
        "Coherence",
        "How much of the carried keyframes a frame shows where they see it; the rest is the frame's own "
        "stylisation (1 = steadiest, lower lets the style boil)",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    keyframe_interval: int = setting(
        12,
        "Keyframe Interval",
        "Stylise every this many rendered frames afresh (0 = only the first, the last and cuts); the frames "
        "between are carried from the keyframes on both sides",
        min=0,
        max=100000,
        soft_max=48,
    )
    temporal_denoise: float = setting(
        0.45,
        "Repaint",
        "For engines that continue from a carried picture (diffusion): how much of the keyframe carried to "
        "a frame it may repaint, at most the engine's own Denoise (lower = steadier)",
        min=0.01,
        max=1.0,
        subtype="FACTOR",
    )


LIVE_RESOLUTIONS = (
    ("256", "256 px", "Long side of the live picture: fastest"),
    ("384", "384 px", "Long side of the live picture"),
    ("512", "512 px", "Long side of the live picture: most detail, slowest"),
)


@dataclass(frozen=True)
class LiveSettings(Settings):
    """How the live preview in the 3D viewport looks (which engine and style it uses are the frame's own)."""

    live_resolution: str = setting(
        "256",
        "Preview Size",
        "Long side in pixels of the picture the live preview stylises; the viewport shows it scaled up",
        choices=LIVE_RESOLUTIONS,
    )
    live_opacity: float = setting(
        1.0,
        "Opacity",
        "How much of the stylised picture covers the viewport (0 = the plain viewport)",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    live_wipe: float = setting(
        1.0,
        "Wipe",
        "Before/after: the stylised picture covers the viewport from the left up to this fraction of its width",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )

    @property
    def long_side(self) -> int:
        return int(self.live_resolution)

    @property
    def look(self) -> tuple[float, float]:
        """What changes the drawing of a picture, not the picture: opacity and wipe."""
        return self.live_opacity, self.live_wipe


SCENE_GROUPS: tuple[type[Settings], ...] = (FrameSettings, PassSettings, CoherenceSettings, LiveSettings)
"""The settings groups shown side by side under `scene.stylepass` (their field names never collide)."""


# --------------------------------------------------------------------------------------------------------
# Checks


def _checked(owner: str, item: dataclasses.Field, hint: Any, value: Any) -> Any:
    spec = spec_of(item)
    name = f"{owner}.{item.name}"
    kind = _base_type(hint)
    if kind is tuple:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or (
            spec.item is not None and not all(isinstance(v, spec.item) for v in value)
        ):
            raise SettingsError(
                f"{name} must be a tuple of {getattr(spec.item, '__name__', '?')}, got {value!r}"
            )
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be True or False, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise SettingsError(f"{name} must be a string, got {value!r}")
        if spec.choices is not None and value not in {c[0] for c in spec.choices}:
            raise SettingsError(f"{name} must be one of {[c[0] for c in spec.choices]}, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # numpy integers count; floats do not (a fraction of a step is a mistake, not a rounding)
            if getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u"):
                value = int(value)
            else:
                raise SettingsError(f"{name} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or (
            not isinstance(value, int | float) and type(value).__module__ != "numpy"
        ):
            raise SettingsError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be finite, got {value!r}")
    low_ok = spec.min is None or (value > spec.min if spec.min_exclusive else value >= spec.min)
    if not low_ok or (spec.max is not None and value > spec.max):
        low = "(" if spec.min_exclusive else "["
        raise SettingsError(f"{name} must be in {low}{spec.min}, {spec.max}], got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.values()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
