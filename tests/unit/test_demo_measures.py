# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's measures (demo/, not shipped): the flicker metrics of `flicker` on sequences with known motion,
and the GIF writer of `gif`, decoded by a spec-following decoder and by PIL."""

import itertools
import os
import struct

import flicker  # demo/ is on sys.path through tests/pytest.ini
import gif
import numpy as np
import pytest

from stylepass_core import exr, fusion, png, temporal
from stylepass_core.output_layout import SceneLayout

RNG = np.random.default_rng(6)


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------
def vector_pass(shape: tuple[int, int], right: float, up: float) -> np.ndarray:
    """Blender's Vector pass for steady motion of `right` px right and `up` px up per frame (+y up; channels
    0, 1 = previous position minus current, 2, 3 = current minus next; see test_temporal.py)."""
    vectors = np.empty((*shape, 4), dtype=np.float32)
    vectors[:] = (-right, -up, -right, -up)
    return vectors


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ------------------------------------------------------------------------------------------------------------
# 1. Flicker metrics
# ------------------------------------------------------------------------------------------------------------
def panning_sequence(count: int, shape: tuple[int, int], right: int, up: int) -> list[np.ndarray]:
    """Frames of a random texture moving steadily: frame t is a window of a larger texture."""
    margin = count * max(abs(right), abs(up))
    texture = RNG.random((shape[0] + 2 * margin, shape[1] + 2 * margin, 3), dtype=np.float32)
    return [
        texture[
            margin + t * up : margin + t * up + shape[0], margin - t * right : margin - t * right + shape[1]
        ]
        for t in range(count)
    ]


def test_warping_error_of_a_consistent_sequence_is_zero_and_of_noise_one_sixth() -> None:
    shape = (32, 36)
    frames = panning_sequence(5, shape, 3, 2)
    vectors = [None] + [vector_pass(shape, 3, 2)] * 4
    masks = [None] + [temporal.occlusion_mask(v, v) for v in vectors[1:]]
    assert flicker.warping_error(frames, vectors, masks) < 1e-12
    # Ignoring the motion makes the same frames look like flicker.
    still = [None] + [vector_pass(shape, 0, 0)] * 4
    assert flicker.warping_error(frames, still, [None] + [np.ones(shape, bool)] * 4) > 0.1

    # Independent uniform noise: E[(a - b)^2] = 1/6 per channel, averaged (not summed) over RGB.
    noise = [RNG.random((64, 64, 3), dtype=np.float32) for _ in range(4)]
    all_valid = [None] + [np.ones((64, 64), dtype=bool)] * 3
    error = flicker.warping_error(noise, [None] + [vector_pass((64, 64), 0, 0)] * 3, all_valid)
    assert error == pytest.approx(1 / 6, abs=0.005)


def test_warping_error_ignores_masked_and_out_of_frame_pixels() -> None:
    shape = (20, 24)
    frames = [frame.copy() for frame in panning_sequence(3, shape, 2, 0)]
    vectors = [None] + [vector_pass(shape, 2, 0)] * 2
    masks = [None, np.ones(shape, bool), np.ones(shape, bool)]  # in-frame is added by the metric
    frames[2][:, 10:14] = 5.0  # garbage where the mask says "occluded"
    masks[2][:, 10:14] = False
    assert flicker.warping_error(frames, vectors, masks) < 1e-12
    empty = [None, np.zeros(shape, bool), np.zeros(shape, bool)]
    with pytest.raises(ValueError, match="every mask is empty"):
        flicker.warping_error(frames, vectors, empty)
    with pytest.raises(ValueError, match="one entry per frame, got 3, 2 and 3"):
        flicker.warping_error(frames, vectors[:2], masks)


def square_frame(left: int, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stylised-looking frame (flat square over a flat background plus brush texture) and its line art."""
    inside = square(texture.shape[:2], top=20, left=left, size=24)
    frame = np.where(inside[..., None], np.float32(0.8), np.float32(0.25)) + texture
    ring = inside & ~square(texture.shape[:2], top=21, left=left + 1, size=22)  # line art on the nearer side
    return np.clip(frame, 0, 1), ring.astype(np.float32)


def test_structure_fidelity_is_high_when_edges_follow_the_line_art_and_low_for_a_frozen_frame() -> None:
    texture = (np.random.default_rng(3).random((64, 64, 3), dtype=np.float32) - 0.5) * 0.08
    earlier, _ = square_frame(14, texture)
    now, lines_now = square_frame(22, texture)  # the square moved 8 px

    fresh = flicker.structure_fidelity(now, lines_now)
    frozen = flicker.structure_fidelity(earlier, lines_now)
    assert fresh > 0.7
    assert frozen < 0.35
    assert fresh - frozen > 0.4
    # Line art moved by one pixel is within the default tolerance; with radius 0 it hurts more.
    shifted = np.roll(lines_now, 1, axis=1)
    assert flicker.structure_fidelity(now, shifted) > 0.6
    assert flicker.structure_fidelity(now, shifted, radius=0) < flicker.structure_fidelity(
        now, lines_now, radius=0
    )
    assert flicker.structure_fidelity(np.full((64, 64, 3), 0.5, np.float32), lines_now) == 0.0


def varying_pan(shape: tuple[int, int], shifts: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames of a texture panning right by `shifts[t]` px from frame t - 1 to frame t (`shifts[0]` unused),
    and their Vector passes: the pace changes, so only motion composed frame by frame is right."""
    positions = list(itertools.accumulate(shifts[1:], initial=0))
    margin = positions[-1]
    texture = RNG.random((shape[0], shape[1] + margin, 3), dtype=np.float32)
    frames = [texture[:, margin - x : margin - x + shape[1]] for x in positions]
    ahead = [*shifts[1:], shifts[-1]]
    vectors = []
    for back, forward in zip(shifts, ahead, strict=True):
        vec = vector_pass(shape, back, 0)
        vec[..., 2] = -forward
        vectors.append(vec)
    return frames, vectors


def test_step_maps_compose_the_true_motion_through_skipped_frames() -> None:
    shape = (24, 40)
    frames, vectors = varying_pan(shape, [0, 1, 3, 2, 4])  # positions 0, 1, 4, 6, 10
    depths = [np.full(shape, 5.0, np.float32)] * len(frames)
    # Step 1: the single backward step of `fusion`, in frame.
    ones = flicker.step_maps(vectors, depths, 1)
    assert len(ones) == 5 and ones[0] is None
    for t in range(1, 5):
        single = fusion.backward_step(vectors[t], vectors[t - 1], depths[t], depths[t - 1])
        inside = (single.x >= -0.5) & (single.x <= shape[1] - 0.5)  # composing adds the in-frame test
        assert np.array_equal(ones[t].valid, single.valid & inside)
        assert np.array_equal(ones[t].x[inside], single.x[inside])
    errors = flicker.carried_warping_errors(frames, ones)
    assert errors[0] is None and max(errors[1:]) < 1e-10

    # Step 2: rendered frames 0, 2, 4 moved 4 and 6 px; the map follows the composed motion, not 2 x the last
    # frame's vector (6 and 8 px).
    twos = flicker.step_maps(vectors, depths, 2)
    assert len(twos) == 3
    cols = np.arange(shape[1])
    assert np.allclose(twos[1].x[0][twos[1].valid[0]], (cols - 4)[cols >= 4])
    assert np.array_equal(twos[2].valid[0], cols >= 6)
    rendered = frames[::2]
    errors = flicker.carried_warping_errors(rendered, twos)
    assert max(errors[1:]) < 1e-10
    # A picture that does not follow the motion (a still frame) scores as flicker.
    still = [frames[0]] * 3
    assert min(flicker.carried_warping_errors(still, twos)[1:]) > 0.05
    with pytest.raises(ValueError, match="whole steps of 2"):
        flicker.step_maps(vectors[:4], depths[:4], 2)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        flicker.step_maps(vectors, depths, 0)


def test_carried_warping_errors_find_the_frame_that_pops() -> None:
    shape = (24, 40)
    steady, vectors = varying_pan(shape, [0] + [2] * 7)
    restarted, _ = varying_pan(shape, [0] + [2] * 7)  # another texture along the same motion
    frames = steady[:5] + restarted[5:]  # a keyframe restarting at frame 5
    depths = [np.full(shape, 5.0, np.float32)] * 8
    errors = flicker.carried_warping_errors(frames, flicker.step_maps(vectors, depths))
    assert int(np.argmax([-1.0 if e is None else e for e in errors])) == 5
    assert errors[5] == pytest.approx(1 / 6, abs=0.02)  # two independent uniform textures
    assert max(errors[1:5] + errors[6:]) < 1e-10
    # A frame nothing of which is seen in the frame before has no error rather than a made-up one.
    hidden = flicker.step_maps(vectors, depths)
    hidden[3] = fusion.FlowMap(hidden[3].x, hidden[3].y, np.zeros(shape, bool))
    assert flicker.carried_warping_errors(frames, hidden)[3] is None


def test_edge_energy_is_the_mean_sobel_magnitude_and_drops_when_blurred() -> None:
    step = np.zeros((8, 10, 3), np.float32)
    step[:, 5:] = 1.0
    # A unit step reads 4 on the two columns either side of it: 2 * 4 / 10 per row.
    assert flicker.edge_energy(step) == pytest.approx(0.8)
    assert flicker.edge_energy(np.full((8, 10, 3), 0.3, np.float32)) == 0.0
    sharp = RNG.random((48, 48, 3), dtype=np.float32)
    padded = np.pad(sharp, ((1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[r : r + 48, c : c + 48] for r in range(3) for c in range(3)) / 9
    assert flicker.edge_energy(blurred) < 0.5 * flicker.edge_energy(sharp)
    with pytest.raises(ValueError, match="must be finite"):
        flicker.edge_energy(np.full((4, 4, 3), np.nan, np.float32))


def write_shot(layout: SceneLayout, frames: list[np.ndarray], vectors: list[np.ndarray], first: int) -> None:
    """Passes (Vector, Depth, line art) of every frame, as Blender's pass render writes them."""
    for offset, (frame, vec) in enumerate(zip(frames, vectors, strict=True)):
        number = first + offset
        for name in ("vector", "depth", "lineart"):
            layout.pass_file(name, number).parent.mkdir(parents=True, exist_ok=True)
        exr.write_exr(
            layout.pass_file("vector", number, "exr"), {c: vec[..., i] for i, c in enumerate("XYZW")}
        )
        exr.write_exr(
            layout.pass_file("depth", number, "exr"), {"Z": np.full(frame.shape[:2], 5.0, np.float32)}
        )
        png.write_png(layout.pass_file("lineart", number), (frame[..., 0] > 0.5).astype(np.float32))


def test_shot_figures_measure_a_frame_step_with_every_frames_passes(tmp_path) -> None:
    shape = (24, 40)
    steady, vectors = varying_pan(shape, [0, 1, 3, 2, 4, 1, 2])
    restarted, _ = varying_pan(shape, [0, 1, 3, 2, 4, 1, 2])
    layout = SceneLayout(tmp_path / "step1", "Shot")
    write_shot(layout, steady, vectors, first=11)
    stylised = tmp_path / "step2"
    stylised.mkdir()
    pictures = steady[:4] + restarted[4:]  # rendered on twos, frames 11, 13, 15, 17: 15 pops
    for offset in range(0, 7, 2):
        png.write_png(stylised / f"{11 + offset:04d}.png", pictures[offset], bit_depth=16)

    figures = flicker.shot_figures(layout, [11, 13, 15, 17], stylised)
    assert figures.frames == (11, 13, 15, 17)
    assert figures.errors[0] is None and figures.errors[1] < 1e-6 and figures.errors[3] < 1e-6
    assert (figures.worst_frame, figures.worst_error) == (15, figures.errors[2])
    assert figures.worst_error == pytest.approx(1 / 6, abs=0.02)
    assert figures.warping_error == pytest.approx(figures.worst_error / 3)
    assert figures.detail == pytest.approx(np.mean([flicker.edge_energy(p) for p in pictures[::2]]), rel=1e-3)
    assert -1.0 <= figures.structure_fidelity <= 1.0
    with pytest.raises(ValueError, match="evenly spaced"):
        flicker.shot_figures(layout, [11, 13, 16], stylised)


# ------------------------------------------------------------------------------------------------------------
# 2. GIF
# ------------------------------------------------------------------------------------------------------------
def lzw_decode(stream: bytes, min_code_size: int) -> bytes:
    """The GIF89a specification's LZW decoder, written independently of the encoder under test."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    table = [bytes([i]) for i in range(clear)] + [b"", b""]
    width, previous = min_code_size + 1, None
    out = bytearray()
    accumulator = bits = position = 0
    while True:
        while bits < width:
            accumulator |= stream[position] << bits
            position += 1
            bits += 8
        code = accumulator & ((1 << width) - 1)
        accumulator >>= width
        bits -= width
        if code == clear:
            table, width, previous = table[: clear + 2], min_code_size + 1, None
            continue
        if code == end:
            return bytes(out)
        if previous is None:
            entry = table[code]
        else:
            entry = table[code] if code < len(table) else previous + previous[:1]
            if len(table) < 4096:
                table.append(previous + entry[:1])
            if len(table) == 1 << width and width < 12:
                width += 1
        out += entry
        previous = entry


def decode_gif(data: bytes) -> tuple[list[np.ndarray], list[int], int | None]:
    """Frames `(H, W, 3)` uint8, delays in 1/100 s and the NETSCAPE loop count of a GIF89a file."""
    assert data[:6] == b"GIF89a"
    _, _, packed, _, _ = struct.unpack("<HHBBB", data[6:13])
    assert packed & 0x80, "global colour table expected"
    size = 2 << (packed & 7)
    palette = np.frombuffer(data[13 : 13 + 3 * size], np.uint8).reshape(size, 3)
    position = 13 + 3 * size
    frames, delays, loop = [], [], None

    def sub_blocks() -> list[bytes]:
        nonlocal position
        blocks = []
        while data[position]:
            blocks.append(data[position + 1 : position + 1 + data[position]])
            position += 1 + data[position]
        position += 1
        return blocks

    while True:
        kind = data[position]
        position += 1
        if kind == 0x3B:
            return frames, delays, loop
        if kind == 0x21:
            label = data[position]
            position += 1
            blocks = sub_blocks()
            if label == 0xF9:
                delays.append(struct.unpack("<H", blocks[0][1:3])[0])
            elif label == 0xFF and blocks[0] == b"NETSCAPE2.0":
                loop = struct.unpack("<H", blocks[1][1:3])[0]
        elif kind == 0x2C:
            _, _, width, height, flags = struct.unpack("<HHHHB", data[position : position + 9])
            assert flags == 0, "no local colour table or interlacing expected"
            min_code_size = data[position + 9]
            position += 10
            indices = np.frombuffer(lzw_decode(b"".join(sub_blocks()), min_code_size), np.uint8)
            assert indices.size == width * height
            frames.append(palette[indices].reshape(height, width, 3))
        else:
            raise AssertionError(f"unexpected block {kind:#x} at {position - 1}")


def nearest_palette_colours(frame: np.ndarray) -> np.ndarray:
    """The 6 x 7 x 6 palette colour each pixel should get without dithering."""
    out = np.empty(frame.shape, dtype=np.uint8)
    for channel, levels in enumerate((6, 7, 6)):
        level = np.floor(np.clip(frame[..., channel], 0, 1) * (levels - 1) + 0.5)
        out[..., channel] = np.round(level * 255 / (levels - 1))
    return out


def test_gif_round_trip_through_an_independent_decoder(tmp_path) -> None:
    # 130 x 97 of noise is ~12,600 pixels per frame: the 4096-entry table fills and is cleared many times.
    frames = [RNG.random((97, 130, 3), dtype=np.float32) for _ in range(2)]
    frames.append(np.clip(frames[1] * 1.3 - 0.1, 0, 1))  # some values outside [0, 1] before clipping
    path = tmp_path / "clip.gif"
    gif.write_gif(path, frames, fps=24, dither=False)

    decoded, delays, loop = decode_gif(path.read_bytes())
    assert len(decoded) == 3
    for frame, got in zip(frames, decoded, strict=True):
        np.testing.assert_array_equal(got, nearest_palette_colours(frame))
    assert delays == [4, 4, 5]  # 100 / 24 s, rounded cumulatively
    assert loop == 0
    assert os.listdir(tmp_path) == ["clip.gif"]  # the temporary file was renamed, not left behind


def test_gif_ordered_dither_keeps_the_mean(tmp_path) -> None:
    path = tmp_path / "grey.gif"
    gif.write_gif(path, [np.full((16, 16, 3), 0.5, np.float32)], fps=10)
    (frame,), delays, _ = decode_gif(path.read_bytes())
    assert delays == [10]
    # Red has 6 levels: 0.5 falls half way between 102 and 153, so half the pixels take each.
    assert sorted(np.unique(frame[..., 0])) == [102, 153]
    assert frame[..., 0].mean() == pytest.approx(127.5)
    # Green has 7 levels, and 0.5 is exactly level 3 (128): no dithering needed.
    assert np.all(frame[..., 1] == 128)


def test_gif_opens_in_pillow(tmp_path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    frames = [np.clip(RNG.random((20, 33, 3), dtype=np.float32), 0, 1) for _ in range(4)]
    path = tmp_path / "pil.gif"
    gif.write_gif(path, frames, fps=12.5, dither=False)
    with image_module.open(path) as image:
        assert image.n_frames == 4
        assert image.info["loop"] == 0
        for index, frame in enumerate(frames):
            image.seek(index)
            assert image.info["duration"] == 80
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), nearest_palette_colours(frame))


def test_gif_overwrites_atomically_and_checks_inputs(tmp_path) -> None:
    path = tmp_path / "out.gif"
    path.write_bytes(b"old")
    gif.write_gif(path, [np.zeros((4, 4, 3), np.float32)], fps=24)
    assert path.read_bytes()[:6] == b"GIF89a"
    with pytest.raises(ValueError, match="non-empty list"):
        gif.write_gif(path, [], fps=24)
    with pytest.raises(ValueError, match=r"frames\[1\] must be 4 x 4 pixels"):
        gif.write_gif(path, [np.zeros((4, 4, 3), np.float32), np.zeros((5, 4, 3), np.float32)], fps=24)
    with pytest.raises(ValueError, match="fps must be > 0"):
        gif.write_gif(path, [np.zeros((4, 4, 3), np.float32)], fps=0)
    with pytest.raises(ValueError, match="must be float in"):
        gif.write_gif(path, [np.zeros((4, 4, 3), np.uint8)], fps=24)
    nan = np.zeros((4, 4, 3), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        gif.write_gif(path, [nan], fps=24)
    assert path.read_bytes()[:6] == b"GIF89a"
