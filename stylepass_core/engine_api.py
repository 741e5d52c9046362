# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine interface: what an engine is given, what it returns, how it reports progress and stops.

    StyleRequest (beauty + control maps + the engine's settings [+ regions]) --Engine.run(progress, abort)-->
    StyleResult

    [BatchItem(request, progress, abort), ...] --Engine.run_batch--> [StyleResult or the item's error, ...]
    (requests with one `Engine.batch_key` in one model call, e.g. the frames of a shot on a GPU replica)

Requests and results split into a JSON-able header and named numpy arrays (`to_parts` / `from_parts`), so
they cross a process or network boundary without pickle. Engines register by id; `get_engine` keeps one warm
instance per id so loaded models survive between frames.
"""

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .checks import describe
from .errors import StylepassError
from .settings import GROUPS_AS_LAYERS, GROUPS_AS_REGIONS, EngineSettings, register_settings
from .settings import from_plain as settings_from_plain

# Bump when the header layout changes; `from_parts` refuses other formats instead of misreading them.
# 2: engine-neutral request (settings object, images); 1 had neural-style fields and a params dict.
# The optional "regions" key (with its "regions.layer" array) kept 2: a request without regions is the same
# bytes as before, and a side that does not know the key refuses it by name ("unknown ['regions']").
FORMAT_VERSION = 2


class Aborted(Exception):
    """The caller set the abort event; the engine stopped between two steps and produced nothing."""


class EngineUnavailable(StylepassError, RuntimeError):
    """An engine cannot run here; the message says what is missing and what to install.

    Attributes:
        engine_id: Id of the engine, e.g. `"NEURAL_STYLE"`.
        reason: Human-readable cause, naming the package or file to install or repair.
    """

    def __init__(self, engine_id: str, reason: str) -> None:
        super().__init__(f"engine {engine_id!r} is not available: {reason}")
        self.engine_id = engine_id
        self.reason = reason


@runtime_checkable
class Progress(Protocol):
    """Receives progress from an engine; called from the engine's thread, so keep `update` quick."""

    def update(self, done: int, total: int, message: str = "") -> None:
        """Report that `done` of `total` steps are finished; `message` names the step now starting."""


class NullProgress:
    """A `Progress` that ignores every update."""

    def update(self, done: int, total: int, message: str = "") -> None:
        """Ignore the update."""


def check_abort(abort: threading.Event | None) -> None:
    """Raise `Aborted` if `abort` is set; engines call this between steps.

    Raises:
        Aborted: when the event is set.
    """
    if abort is not None and abort.is_set():
        raise Aborted("stylisation aborted")


# --------------------------------------------------------------------------------------------------------
# Request and result


# eq=False: field-wise == on numpy arrays is ambiguous, so regions, requests and results compare by identity.
@dataclass(frozen=True, eq=False)
class Regions:
    """Style groups as regions of one run: which pixels each group's settings condition.

    Only for engines whose settings say `STYLE_GROUPS = GROUPS_AS_REGIONS` (diffusion's regional prompting);
    engines that run once per group get no regions.

    Attributes:
        layer: `(H, W)` integer array (uint8 or int32) matching the beauty, values 0..N: 0 = the request's
            own settings (objects in no group and the background), k = style group k.
        settings: N settings objects, group k's at index k - 1, each of the request settings' class. The engine
            says which of their fields it reads (diffusion: prompt, negative prompt and style preset); the rest
            come from the request's own settings.
        names: N group names, for records and messages.
    """

    layer: np.ndarray
    settings: tuple[EngineSettings, ...]
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        """N, the number of groups (the layer's values run 0..N)."""
        return len(self.names)

    def validate(self, settings: EngineSettings, size: tuple[int, int]) -> None:
        """Check the fields against the request's settings and the beauty's `(H, W)`.

        Raises:
            ValueError: naming the bad field and quoting its value.
        """
        if settings.STYLE_GROUPS != GROUPS_AS_REGIONS:
            how = "as separate runs" if settings.STYLE_GROUPS == GROUPS_AS_LAYERS else "not at all"
            raise ValueError(
                f"engine {settings.ENGINE} takes style groups {how}, not regions: send the request without regions"
            )
        if not isinstance(self.names, tuple) or not all(isinstance(n, str) and n for n in self.names):
            raise ValueError(
                f"regions.names must be a tuple of non-empty strings, got {describe(self.names)}"
            )
        if not self.names:
            raise ValueError("regions need at least one group; send regions=None for none")
        if not isinstance(self.settings, tuple) or len(self.settings) != len(self.names):
            raise ValueError(
                f"regions.settings must be a tuple of {len(self.names)} settings (one per name in "
                f"regions.names), got {describe(self.settings)}"
            )
        for name, group in zip(self.names, self.settings, strict=True):
            if type(group) is not type(settings):
                raise ValueError(
                    f"regions.settings of group {name!r} must be {type(settings).__name__} like the request's "
                    f"settings, got {describe(group)}"
                )
        layer = self.layer
        if not isinstance(layer, np.ndarray) or layer.shape != size:
            raise ValueError(
                f"regions.layer must be a {size} array matching the beauty, got {describe(layer)}"
            )
        if layer.dtype.kind not in "iu":
            raise ValueError(f"regions.layer must have an integer dtype (uint8 or int32), got {layer.dtype}")
        low, high = int(layer.min()), int(layer.max())
        if low < 0 or high > self.count:
            raise ValueError(
                f"regions.layer values must be in [0, {self.count}] (0 = no group, k = group k of "
                f"{self.count}), got values in [{low}, {high}]"
            )

    def plain(self) -> dict[str, Any]:
        """The JSON-able part (the header's `"regions"`); the layer travels as the array `"regions.layer"`."""
        return {"names": list(self.names), "settings": [group.to_plain() for group in self.settings]}


@dataclass(eq=False)
class StyleRequest:
    """Everything an engine needs to stylise one frame, and nothing it does not.

    The request is the same for every engine: pixels, the engine's own settings object, the seed and the
    output size. Stylepass's mix with the render (Strength, Keep Scene Colours, the object selection) is not
    here: the frame writer applies it after the engine, wherever the engine ran.

    All per-pixel arrays share the beauty's `(H, W)`; the output size may differ (`width`, `height`).

    Attributes:
        beauty: `(H, W, 3)` float32 in [0, 1], display-referred (view transform already applied).
        settings: The engine's settings (`EngineSettings` subclass); `settings.ENGINE` names the engine.
        controls: Control maps by name, each `(H, W)` or `(H, W, C)` numeric: `"depth"` `(H, W)` float32,
            `"normal"` `(H, W, 3)`, `"lineart"`, `"segmentation"`; at least those `settings.control_maps()`
            names.
        images: Pictures named by the settings' image fields (`"style_image"`, `"ip_adapter_image"`), each
            `(h, w, 3)` float32 in [0, 1].
        seed: Seed for engines that sample noise (>= 0); deterministic engines record and ignore it.
        width: Output width in pixels, or None for the beauty's width. Give both or neither.
        height: Output height in pixels, or None for the beauty's height.
        regions: Style groups as regions of this one run (`Regions`), for engines that take them
            (`settings.STYLE_GROUPS == GROUPS_AS_REGIONS`); None for the request's settings everywhere.
    """

    beauty: np.ndarray
    settings: EngineSettings
    controls: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    width: int | None = None
    height: int | None = None
    regions: Regions | None = None

    @property
    def engine(self) -> str:
        """The engine id, from the settings."""
        return self.settings.ENGINE

    @property
    def output_size(self) -> tuple[int, int]:
        """`(height, width)` of the result: `height`/`width` when given, else the beauty's size."""
        if self.width is not None and self.height is not None:
            return self.height, self.width
        return int(self.beauty.shape[0]), int(self.beauty.shape[1])

    def validate(self) -> None:
        """Check every field's type, shape and range, and that the settings' maps and images are given.

        Raises:
            ValueError: naming the first bad field and quoting its value.
        """
        # 1. Settings
        if not isinstance(self.settings, EngineSettings):
            raise ValueError(f"settings must be an EngineSettings object, got {describe(self.settings)}")

        # 2. Pixels
        _check_image("beauty", self.beauty)
        size = self.beauty.shape[:2]
        if not isinstance(self.controls, dict):
            raise ValueError(f"controls must be a dict of name -> array, got {describe(self.controls)}")
        for name, control in self.controls.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"controls names must be non-empty strings, got {name!r}")
            if not isinstance(control, np.ndarray) or control.ndim not in (2, 3) or control.shape[:2] != size:
                raise ValueError(
                    f"controls[{name!r}] must be a {(*size, '[, C]')} array matching the beauty, "
                    f"got {describe(control)}"
                )
            if control.dtype.kind not in "biuf":
                raise ValueError(f"controls[{name!r}] must be numeric, got dtype {control.dtype}")
        missing = [name for name in self.settings.control_maps() if name not in self.controls]
        if missing:
            raise ValueError(
                f"the settings use the control maps {missing}, but controls has {sorted(self.controls)}"
            )
        if not isinstance(self.images, dict):
            raise ValueError(f"images must be a dict of name -> array, got {describe(self.images)}")
        image_fields = {name for name, _, spec, _ in self.settings.specs() if spec.image}
        for name, image in self.images.items():
            if name not in image_fields:
                raise ValueError(
                    f"images[{name!r}] is not an image setting of {self.engine}; those are {sorted(image_fields)}"
                )
            _check_image(f"images[{name!r}]", image)
        for name, why in self.settings.required_images().items():
            if name not in self.images:
                raise ValueError(f"images[{name!r}] is needed ({why}) but was not given")

        # 3. Seed and output size
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if (self.width is None) != (self.height is None):
            raise ValueError(
                f"give both width and height or neither, got width={self.width!r}, height={self.height!r}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")

        # 4. Regions
        if self.regions is not None:
            if not isinstance(self.regions, Regions):
                raise ValueError(f"regions must be a Regions object or None, got {describe(self.regions)}")
            self.regions.validate(self.settings, size)

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Split into a JSON-able header and named arrays (the arrays are not copied).

        Returns:
            `(header, arrays)`; `json.dumps(header)` works and `from_parts(header, arrays)` rebuilds an
            equal request.

        Raises:
            ValueError: if the request does not validate.
        """
        self.validate()
        return self._header_and_arrays()

    def header(self) -> dict[str, Any]:
        """The JSON-able header of `to_parts`, for a record of a request that was already validated (the
        check reads every pixel of every array)."""
        return self._header_and_arrays()[0]

    def _header_and_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {"beauty": self.beauty}
        for name, control in self.controls.items():
            arrays[f"control.{name}"] = control
        for name, image in self.images.items():
            arrays[f"image.{name}"] = image
        if self.regions is not None:
            arrays["regions.layer"] = self.regions.layer
        header: dict[str, Any] = {
            "kind": "StyleRequest",
            "format": FORMAT_VERSION,
            "settings": self.settings.to_plain(),
            "seed": _plain(self.seed),
            "width": _plain(self.width),
            "height": _plain(self.height),
            "controls": list(self.controls),
            "images": list(self.images),
        }
        if self.regions is not None:
            header["regions"] = self.regions.plain()
        header["arrays"] = _array_specs(arrays)
        return header, arrays

    @classmethod
    def from_parts(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StyleRequest":
        """Rebuild a request from `to_parts` output (for example after JSON and raw-bytes transport).

        Raises:
            ValueError: if the header is of another kind or format, the settings are unknown or of a newer
                schema, arrays are missing or differ from what the header declares, or the rebuilt request does
                not validate.
        """
        _check_header(
            header,
            "StyleRequest",
            {"settings", "seed", "width", "height", "controls", "images"},
            arrays,
            optional=frozenset({"regions"}),
        )
        regions = header.get("regions")
        if (regions is None) != ("regions.layer" not in arrays):
            raise ValueError("the header's regions and the array 'regions.layer' come together or not at all")
        if regions is not None:
            if (
                not isinstance(regions, dict)
                or set(regions) != {"names", "settings"}
                or not all(isinstance(regions[key], list) for key in regions)
            ):
                raise ValueError(
                    f"the header's regions must be {{names: [...], settings: [...]}}, got {regions!r}"
                )
            regions = Regions(
                layer=arrays["regions.layer"],
                settings=tuple(settings_from_plain(plain) for plain in regions["settings"]),
                names=tuple(regions["names"]),
            )
        request = cls(
            beauty=arrays["beauty"],
            settings=settings_from_plain(header["settings"]),
            controls={name: arrays[f"control.{name}"] for name in header["controls"]},
            images={name: arrays[f"image.{name}"] for name in header["images"]},
            seed=header["seed"],
            width=header["width"],
            height=header["height"],
            regions=regions,
        )
        request.validate()
        return request


@dataclass(eq=False)
class StyleResult:
    """What an engine returns.

    Attributes:
        image: `(H, W, 3)` float32 in [0, 1], display-referred, at the request's output size.
        info: JSON-able facts for reproducing the frame: engine id, model files and their hashes,
            package versions, timings in seconds.
    """

    image: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check the image and that `info` is JSON-able.

        Raises:
            ValueError: naming the bad field.
        """
        _check_image("image", self.image)
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {describe(self.info)}")
        try:
            json.dumps(self.info, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"info must be JSON-able: {exc}") from None

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Split into a JSON-able header and named arrays; see `StyleRequest.to_parts`."""
        self.validate()
        arrays = {"image": self.image}
        header = {"kind": "StyleResult", "format": FORMAT_VERSION, "info": self.info}
        header["arrays"] = _array_specs(arrays)
        return header, arrays

    @classmethod
    def from_parts(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StyleResult":
        """Rebuild a result from `to_parts` output; raises ValueError like `StyleRequest.from_parts`."""
        _check_header(header, "StyleResult", {"info"}, arrays)
        result = cls(image=arrays["image"], info=dict(header["info"]))
        result.validate()
        return result


# --------------------------------------------------------------------------------------------------------
# Engines


class Engine(ABC):
    """Base of every stylisation engine.

    Constructing an engine must be cheap and must not fail when its dependencies are missing: models load
    on the first `run`, and `available()` says whether that can work. One instance may serve many frames,
    so engines keep loaded models until `release()`.
    """

    id: ClassVar[str]
    """Stable identifier stored in settings and files, e.g. `"NEURAL_STYLE"`; equals `settings_type.ENGINE`."""
    label: ClassVar[str]
    """Name shown in the UI."""
    settings_type: ClassVar[type[EngineSettings]]
    """The engine's settings dataclass; `StyleRequest.settings` is an instance of it."""

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether the engine can run here, without loading models.

        Returns:
            `(True, "")`, or `(False, reason)` where the reason names what to install or repair.
        """

    @abstractmethod
    def run(
        self,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
    ) -> StyleResult:
        """Stylise one frame.

        Args:
            request: The frame and its settings.
            progress: Receives `update(done, total, message)` per step; None for no reports.
            abort: Checked between steps; when set, the run raises `Aborted`.

        Returns:
            The stylised image at `request.output_size`.

        Raises:
            ValueError: the request is invalid for this engine (message names the field).
            EngineUnavailable: dependencies or model files are missing or broken.
            Aborted: `abort` was set.
        """

    def batch_key(self, request: StyleRequest) -> Hashable | None:
        """What requests must share to run together in one `run_batch` call (same models, settings and
        sizes; only pixels and seeds differ), or None when this request runs alone. The default: alone."""
        return None

    def run_batch(self, items: Sequence["BatchItem"]) -> list["StyleResult | BaseException"]:
        """Stylise several frames; the outcome of each item, in order: its `StyleResult`, or the exception
        its own `run` would have raised (`Aborted` for an item whose abort was set, `ValueError`, ...).

        An engine that can run frames as one batch (one model call for all of them) overrides this and
        `batch_key`; this default runs the items one after another.
        """
        outcomes: list[StyleResult | BaseException] = []
        for item in items:
            try:
                outcomes.append(self.run(item.request, item.progress, item.abort))
            except Exception as error:  # the item's failure, reported with its item; the others go on
                outcomes.append(error)
        return outcomes

    def release(self) -> None:  # noqa: B027 - engines without models have nothing to free
        """Free loaded models; the next `run` loads them again."""

    def require_available(self) -> None:
        """Raise `EngineUnavailable` with the reason from `available()` when the engine cannot run."""
        ok, reason = self.available()
        if not ok:
            raise EngineUnavailable(self.id, reason)


@dataclass(eq=False)
class BatchItem:
    """One frame of an `Engine.run_batch` call: its request, and its own progress and abort."""

    request: StyleRequest
    progress: Progress = field(default_factory=NullProgress)
    abort: threading.Event | None = None


class SharedProgress:
    """A batch's progress and abort: every update goes to each item still wanted; an item whose abort is set
    (or whose progress raises `Aborted`) is dropped (`dropped`), and the batch stops only when none is left.

    Pass it as both `progress` and `abort` of the batch's one model run (`is_set` makes it an abort event).
    """

    def __init__(self, items: Sequence[BatchItem]) -> None:
        self.items = list(items)
        self.dropped: set[int] = set()

    def update(self, done: int, total: int, message: str = "") -> None:
        for index, item in enumerate(self.items):
            if index in self.dropped:
                continue
            try:
                check_abort(item.abort)
                item.progress.update(done, total, message)
            except Aborted:
                self.dropped.add(index)
        check_abort(self)

    def is_set(self) -> bool:
        """Whether no item is wanted any more (each one's abort set, or dropped)."""
        for index, item in enumerate(self.items):
            if item.abort is not None and item.abort.is_set():
                self.dropped.add(index)
        return len(self.dropped) == len(self.items)


ENGINES: dict[str, type[Engine]] = {}
"""Registered engine classes by id. Use `available_engines()` to also see the built-in ones."""

_instances: dict[str, Engine] = {}
_registry_lock = threading.Lock()
_builtins_loaded = False


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Register an engine class under its `id`; usable as a class decorator.

    Raises:
        ValueError: if `cls` is not an `Engine` with a non-empty `id` and `label`, or another class already
            holds that id.
    """
    if not isinstance(cls, type) or not issubclass(cls, Engine):
        raise ValueError(f"register_engine needs an Engine subclass, got {cls!r}")
    engine_id = getattr(cls, "id", "")
    if not isinstance(engine_id, str) or not engine_id or not isinstance(getattr(cls, "label", None), str):
        raise ValueError(f"engine class {cls.__name__} needs string 'id' and 'label', got id={engine_id!r}")
    settings_type = getattr(cls, "settings_type", None)
    if not (isinstance(settings_type, type) and issubclass(settings_type, EngineSettings)):
        raise ValueError(f"engine class {cls.__name__} needs a settings_type (an EngineSettings dataclass)")
    if settings_type.ENGINE != engine_id:
        raise ValueError(f"engine {engine_id!r} has settings of engine {settings_type.ENGINE!r}")
    register_settings(settings_type)
    with _registry_lock:
        known = ENGINES.get(engine_id)
        # Re-registering the same class is harmless (module reloads); a different class is a clash.
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"engine id {engine_id!r} is already taken by {known.__qualname__}")
        ENGINES[engine_id] = cls
        stale = _instances.pop(engine_id, None)
    if stale is not None and type(stale) is not cls:
        stale.release()
    return cls


def _load_builtin_engines() -> None:
    # Imported lazily: engine modules import this module, and they only register, never load models.
    global _builtins_loaded
    if not _builtins_loaded:
        from . import engines  # noqa: F401

        _builtins_loaded = True


def _instance(engine_id: str) -> Engine:
    _load_builtin_engines()
    with _registry_lock:
        if engine_id not in ENGINES:
            raise ValueError(f"unknown engine {engine_id!r}; known: {sorted(ENGINES)}")
        engine = _instances.get(engine_id)
        if engine is None:
            engine = _instances[engine_id] = ENGINES[engine_id]()
        return engine


def available_engines() -> list[tuple[str, str, bool, str]]:
    """Every registered engine with whether it can run here.

    Returns:
        `[(id, label, ok, reason), ...]` sorted by id; `reason` is "" when `ok`.
    """
    _load_builtin_engines()
    rows = []
    for engine_id in sorted(ENGINES):
        engine = _instance(engine_id)
        ok, reason = engine.available()
        rows.append((engine_id, engine.label, ok, reason))
    return rows


def get_engine(engine_id: str) -> Engine:
    """The shared, warm instance of an engine.

    Raises:
        ValueError: if no engine has that id.
        EngineUnavailable: if it cannot run here; the message names what to install.
    """
    engine = _instance(engine_id)
    engine.require_available()
    return engine


def release_engines() -> None:
    """Release every cached engine's models (e.g. when the add-on is disabled)."""
    with _registry_lock:
        engines = list(_instances.values())
        _instances.clear()
    for engine in engines:
        engine.release()


# --------------------------------------------------------------------------------------------------------
# Helpers


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_unit(name: str, value: object) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_image(name: str, image: object) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or min(image.shape[:2]) < 1
    ):
        raise ValueError(f"{name} must be a (H, W, 3) float32 array, got {describe(image)}")
    if image.dtype != np.float32:
        raise ValueError(f"{name} must have dtype float32, got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    # NaN fails both comparisons, so this also rejects NaN.
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(f"{name} must be display-referred in [0, 1], got values in [{low}, {high}]")


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> JSON types, so the header survives json.dumps/loads unchanged."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array_specs(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()}


def _check_header(
    header: dict[str, Any],
    kind: str,
    fields: set[str],
    arrays: dict[str, np.ndarray],
    optional: frozenset[str] = frozenset(),
) -> None:
    if not isinstance(header, dict) or header.get("kind") != kind:
        got = header.get("kind") if isinstance(header, dict) else header
        raise ValueError(f"header is not a {kind} header: kind={got!r}")
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{kind} header format {header.get('format')!r} is not supported (this side speaks "
            f"{FORMAT_VERSION}): update Stylepass on the older side (Blender or the worker)"
        )
    expected = fields | {"kind", "format", "arrays"} | (optional & set(header))
    if set(header) != expected:
        raise ValueError(
            f"{kind} header fields differ: missing {sorted(expected - set(header))}, "
            f"unknown {sorted(set(header) - expected)}"
        )
    specs = header["arrays"]
    if not isinstance(specs, dict) or set(specs) != set(arrays):
        raise ValueError(f"{kind} arrays {sorted(arrays)} differ from the header's {sorted(specs)}")
    for name, spec in specs.items():
        array = arrays[name]
        if (
            not isinstance(array, np.ndarray)
            or list(array.shape) != spec.get("shape")
            or array.dtype != np.dtype(spec.get("dtype"))
        ):
            raise ValueError(f"array {name!r} is {describe(array)}, header says {spec!r}")
