# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine interface: what an engine is given, what it returns, how it reports progress and stops.

    StyleRequest (beauty + control passes + settings) --Engine.run(progress, abort)--> StyleResult

Requests and results split into a JSON-able header and named numpy arrays (`to_parts` / `from_parts`), so
they cross a process or network boundary without pickle. Engines register by id; `get_engine` keeps one warm
instance per id so loaded models survive between frames.
"""

import json
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .checks import describe

# Bump when the header layout changes; `from_parts` refuses newer formats instead of misreading them.
FORMAT_VERSION = 1

ParamValue = float | int | str | bool


class Aborted(Exception):
    """The caller set the abort event; the engine stopped between two steps and produced nothing."""


class EngineUnavailable(RuntimeError):
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


# eq=False: field-wise == on numpy arrays is ambiguous, so requests and results compare by identity.
@dataclass(eq=False)
class StyleRequest:
    """Everything an engine needs to stylise one frame.

    All per-pixel arrays share the beauty's `(H, W)`; the output size may differ (`width`, `height`).

    Attributes:
        beauty: `(H, W, 3)` float32 in [0, 1], display-referred (view transform already applied).
        controls: Control passes by name, each `(H, W)` or `(H, W, C)` numeric, e.g. `"depth"` `(H, W)`
            float32, `"normal"` `(H, W, 3)`, `"lineart"`, `"segmentation"`. Engines ignore names they
            do not use.
        object_index: `(H, W)` int32 object pass indices, or None. Needed when an include or exclude list
            is given.
        include_objects: Object indices to stylise; empty means every pixel.
        exclude_objects: Object indices to keep as beauty; must not overlap `include_objects`.
        style: Engine-specific style id (see `Engine.styles()`), e.g. a preset name.
        style_image: `(h, w, 3)` float32 in [0, 1] picture to take the style from, or None.
        style_blend: A second style id to blend with `style`, or None.
        blend_amount: Weight of `style_blend` in [0, 1] (0 = only `style`, 1 = only `style_blend`).
        strength: In [0, 1]; 1 = fully stylised, 0 = the beauty unchanged.
        keep_colours: Keep the beauty's colours and take only the stylised brightness.
        detail_scale: In (0, 16]; resolution the network sees relative to the output. Below 1 the
            brush strokes grow relative to the frame, above 1 they shrink; independent of output size.
        seed: Seed for engines that sample noise (>= 0); deterministic engines record and ignore it.
        width: Output width in pixels, or None for the beauty's width. Give both or neither.
        height: Output height in pixels, or None for the beauty's height.
        params: Engine-specific extras, values float, int, str or bool; engines reject names they do not
            know.
    """

    beauty: np.ndarray
    controls: dict[str, np.ndarray] = field(default_factory=dict)
    object_index: np.ndarray | None = None
    include_objects: tuple[int, ...] = ()
    exclude_objects: tuple[int, ...] = ()
    style: str = ""
    style_image: np.ndarray | None = None
    style_blend: str | None = None
    blend_amount: float = 0.5
    strength: float = 1.0
    keep_colours: bool = False
    detail_scale: float = 1.0
    seed: int = 0
    width: int | None = None
    height: int | None = None
    params: dict[str, ParamValue] = field(default_factory=dict)

    # Fields that travel in the header as plain JSON values; the arrays travel separately.
    _SCALARS: ClassVar[tuple[str, ...]] = (
        "include_objects",
        "exclude_objects",
        "style",
        "style_blend",
        "blend_amount",
        "strength",
        "keep_colours",
        "detail_scale",
        "seed",
        "width",
        "height",
        "params",
    )

    @property
    def output_size(self) -> tuple[int, int]:
        """`(height, width)` of the result: `height`/`width` when given, else the beauty's size."""
        if self.width is not None and self.height is not None:
            return self.height, self.width
        return int(self.beauty.shape[0]), int(self.beauty.shape[1])

    def validate(self) -> None:
        """Check every field's type, shape and range.

        Raises:
            ValueError: naming the first bad field and quoting its value.
        """
        # 1. Pixels
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
        if self.object_index is not None:
            if not isinstance(self.object_index, np.ndarray) or self.object_index.shape != size:
                raise ValueError(
                    f"object_index must be a {size} int32 array, got {describe(self.object_index)}"
                )
            if self.object_index.dtype != np.int32:
                raise ValueError(f"object_index must have dtype int32, got {self.object_index.dtype}")
        if self.style_image is not None:
            _check_image("style_image", self.style_image)

        # 2. Object selection
        for name in ("include_objects", "exclude_objects"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(_is_int(v) and v >= 0 for v in value):
                raise ValueError(f"{name} must be a tuple of object indices >= 0, got {value!r}")
        both = sorted(set(self.include_objects) & set(self.exclude_objects))
        if both:
            raise ValueError(f"objects {both} are in both include_objects and exclude_objects")
        if (self.include_objects or self.exclude_objects) and self.object_index is None:
            raise ValueError(
                f"include_objects {self.include_objects!r} / exclude_objects {self.exclude_objects!r} "
                "need an object_index pass, got None"
            )

        # 3. Style settings
        if not isinstance(self.style, str):
            raise ValueError(f"style must be a string, got {self.style!r}")
        if self.style_blend is not None and not isinstance(self.style_blend, str):
            raise ValueError(f"style_blend must be a string or None, got {self.style_blend!r}")
        _check_unit("blend_amount", self.blend_amount)
        _check_unit("strength", self.strength)
        if not isinstance(self.keep_colours, bool):
            raise ValueError(f"keep_colours must be a bool, got {self.keep_colours!r}")
        if not _is_number(self.detail_scale) or not 0.0 < self.detail_scale <= 16.0:
            raise ValueError(f"detail_scale must be in (0, 16], got {self.detail_scale!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

        # 4. Output size and extras
        if (self.width is None) != (self.height is None):
            raise ValueError(
                f"give both width and height or neither, got width={self.width!r}, height={self.height!r}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        if not isinstance(self.params, dict):
            raise ValueError(f"params must be a dict, got {describe(self.params)}")
        for key, value in self.params.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"params names must be non-empty strings, got {key!r}")
            if not isinstance(value, bool | int | float | str) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise ValueError(f"params[{key!r}] must be a finite float, int, str or bool, got {value!r}")

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
        if self.object_index is not None:
            arrays["object_index"] = self.object_index
        if self.style_image is not None:
            arrays["style_image"] = self.style_image
        header: dict[str, Any] = {"kind": "StyleRequest", "format": FORMAT_VERSION}
        for name in self._SCALARS:
            header[name] = _plain(getattr(self, name))
        header["controls"] = list(self.controls)
        header["arrays"] = _array_specs(arrays)
        return header, arrays

    @classmethod
    def from_parts(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StyleRequest":
        """Rebuild a request from `to_parts` output (for example after JSON and raw-bytes transport).

        Raises:
            ValueError: if the header is of another kind or format, arrays are missing or differ from
                what the header declares, or the rebuilt request does not validate.
        """
        _check_header(header, "StyleRequest", {*cls._SCALARS, "controls"}, arrays)
        controls = {name: arrays[f"control.{name}"] for name in header["controls"]}
        values = {name: header[name] for name in cls._SCALARS}
        values["include_objects"] = tuple(values["include_objects"])
        values["exclude_objects"] = tuple(values["exclude_objects"])
        values["params"] = dict(values["params"])
        request = cls(
            beauty=arrays["beauty"],
            controls=controls,
            object_index=arrays.get("object_index"),
            style_image=arrays.get("style_image"),
            **values,
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
    """Stable identifier stored in settings and files, e.g. `"NEURAL_STYLE"`."""
    label: ClassVar[str]
    """Name shown in the UI."""

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether the engine can run here, without loading models.

        Returns:
            `(True, "")`, or `(False, reason)` where the reason names what to install or repair.
        """

    @abstractmethod
    def styles(self) -> list[tuple[str, str]]:
        """The style ids this engine accepts in `StyleRequest.style`, as `(id, label)` pairs."""

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

    def release(self) -> None:  # noqa: B027 - engines without models have nothing to free
        """Free loaded models; the next `run` loads them again."""

    def require_available(self) -> None:
        """Raise `EngineUnavailable` with the reason from `available()` when the engine cannot run."""
        ok, reason = self.available()
        if not ok:
            raise EngineUnavailable(self.id, reason)


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


def _check_header(header: dict[str, Any], kind: str, fields: set[str], arrays: dict[str, np.ndarray]) -> None:
    if not isinstance(header, dict) or header.get("kind") != kind:
        got = header.get("kind") if isinstance(header, dict) else header
        raise ValueError(f"header is not a {kind} header: kind={got!r}")
    if not _is_int(header.get("format")) or not 1 <= header["format"] <= FORMAT_VERSION:
        raise ValueError(
            f"{kind} header format {header.get('format')!r} is not supported (<= {FORMAT_VERSION})"
        )
    expected = fields | {"kind", "format", "arrays"}
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
