# SPDX-License-Identifier: GPL-3.0-or-later
"""The numerical view-transform inverse, on synthetic forward transforms with known inverses."""

import json

import numpy as np
import pytest

from stylepass_core import view_inverse

LEVEL = 1.0 / 255


# Synthetic view transforms ----------------------------------------------------------------------------------


def srgb_encode(linear):
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def srgb_decode(display):
    return np.where(display <= 0.04045, display / 12.92, ((display + 0.055) / 1.055) ** 2.4)


# A filmic-like curve: log2 over 16.5 stops from 2**-12.47, then a normalised logistic sigmoid, per channel.
LOW, RANGE, STEEP, PIVOT = -12.47393, 16.5, 7.0, 0.45
_BOTTOM = 1 / (1 + np.exp(STEEP * PIVOT))
_TOP = 1 / (1 + np.exp(-STEEP * (1 - PIVOT)))


def sigmoid(t):
    return (1 / (1 + np.exp(-STEEP * (t - PIVOT))) - _BOTTOM) / (_TOP - _BOTTOM)


def sigmoid_inverse(s):
    y = s * (_TOP - _BOTTOM) + _BOTTOM
    return PIVOT - np.log(1 / y - 1) / STEEP


def filmic_like(linear):
    t = np.clip((np.log2(np.maximum(linear, 2.0**LOW)) - LOW) / RANGE, 0.0, 1.0)
    return sigmoid(t).astype(np.float32)


# An AgX-like view: inset matrix, log2 and sigmoid per channel, outset matrix, then the sRGB encoding.
INSET = np.array(
    [[0.856627, 0.0951212, 0.0482516], [0.137319, 0.761242, 0.101439], [0.111898, 0.0767994, 0.811302]]
)
OUTSET = np.linalg.inv(
    np.array([[0.899, 0.0718, 0.0292], [0.1066, 0.8388, 0.0546], [0.0703, 0.0552, 0.8745]])
)


def agx_like(linear):
    working = linear @ INSET.T
    t = np.clip((np.log2(np.maximum(working, 2.0**LOW)) - LOW) / RANGE, 0.0, 1.0)
    return srgb_encode(sigmoid(t) @ OUTSET.T)


def agx_like_inverse(display):
    """(working-space preimage, sigmoid values): the colour is comfortably reachable when all sigmoid values are
    well inside (0, 1)."""
    s = srgb_decode(display) @ np.linalg.inv(OUTSET).T
    t = sigmoid_inverse(np.clip(s, 1e-6, 1 - 1e-6))
    return np.exp2(t * RANGE + LOW), s


def random_display(count, seed=0):
    return np.random.default_rng(seed).random((count, 3)).astype(np.float32)


def in_reached_cells(inverse, display):
    """True for colours whose 8 surrounding nodes the view reproduces (interpolation between exact nodes)."""
    steps = inverse.size - 1
    index = np.minimum((np.clip(display, 0, 1) * steps).astype(int), steps - 1)
    inside = np.ones(len(display), dtype=bool)
    for corner in np.ndindex(2, 2, 2):
        node = index + np.array(corner)
        inside &= inverse.distance[node[:, 0], node[:, 1], node[:, 2]] <= inverse.report.tolerance
    return inside


@pytest.fixture(scope="module")
def srgb_inverse():
    return view_inverse.build(srgb_encode)


@pytest.fixture(scope="module")
def agx_inverse():
    return view_inverse.build(agx_like, to_working=INSET)


# Round trips ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("forward", [srgb_encode, filmic_like], ids=["srgb", "filmic-like"])
def test_per_channel_views_round_trip_everywhere(forward):
    inverse = view_inverse.build(forward)
    display = random_display(50_000)
    error = np.abs(forward(inverse.apply(display)) - display)
    assert inverse.report.unreachable == 0
    assert error.max() < 0.5 * LEVEL
    assert error.mean() < 0.05 * LEVEL


def test_srgb_inverse_is_the_srgb_decoding(srgb_inverse):
    display = random_display(10_000, seed=1)
    linear = srgb_inverse.apply(display)
    expected = srgb_decode(display)
    # Compared where the encoding is not flat: linear 1e-3 is ~3 8-bit levels from black.
    np.testing.assert_allclose(linear, expected, rtol=2e-3, atol=2e-5)


def test_greys_and_extremes_round_trip(srgb_inverse):
    greys = np.repeat(np.linspace(0, 1, 256, dtype=np.float32)[:, None], 3, axis=1)
    corners = np.array(list(np.ndindex(2, 2, 2)), dtype=np.float32)
    for display in (greys, corners):
        np.testing.assert_allclose(srgb_encode(srgb_inverse.apply(display)), display, atol=0.25 * LEVEL)
    # Black needs no light; white needs exactly enough, not more (the view is flat above it).
    np.testing.assert_allclose(srgb_inverse.apply(np.zeros((1, 3), np.float32)), 0.0, atol=1e-6)
    np.testing.assert_allclose(srgb_inverse.apply(np.ones((1, 3), np.float32)), 1.0, atol=2e-3)


def test_channel_mixing_view_round_trips_on_reachable_colours(agx_inverse):
    display = random_display(100_000, seed=2)
    _, sigmoid_values = agx_like_inverse(display)
    # Comfortably reachable: the preimage exists with margin, and the colour's cell has only exact nodes.
    reachable = np.all((sigmoid_values > 0.02) & (sigmoid_values < 0.98), axis=1)
    reachable &= in_reached_cells(agx_inverse, display)
    assert reachable.mean() > 0.5
    error = np.abs(agx_like(agx_inverse.apply(display[reachable])) - display[reachable]).max(axis=1)
    assert np.percentile(error, 99) < 0.5 * LEVEL
    assert error.mean() < 0.1 * LEVEL


def test_channel_mixing_view_needs_the_wide_working_space():
    display = random_display(20_000, seed=3)
    _, sigmoid_values = agx_like_inverse(display)
    reachable = np.all((sigmoid_values > 0.02) & (sigmoid_values < 0.98), axis=1)
    narrow = view_inverse.build(agx_like)  # non-negative linear RGB only
    wide = view_inverse.build(agx_like, to_working=INSET)
    assert narrow.report.unreachable > 4 * wide.report.unreachable
    # The wide search returns light outside the RGB gamut (negative components) where that is what it takes.
    assert (wide.apply(display[reachable]) < 0).any()


# Colours the view cannot produce ----------------------------------------------------------------------------


def test_unreachable_colours_are_counted_and_clipped_to_the_closest():
    def half_bright(linear):
        return 0.5 * srgb_encode(linear)

    size = 17
    inverse = view_inverse.build(half_bright, size=size)
    axis = np.linspace(0, 1, size)
    reachable_per_axis = np.count_nonzero(axis <= 0.5)
    assert inverse.report.nodes == size**3
    assert inverse.report.unreachable == size**3 - reachable_per_axis**3
    assert inverse.report.max_distance == pytest.approx(0.5, abs=1e-3)
    # Each node lands on the closest colour the view makes: its target clipped to 0.5.
    targets = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    np.testing.assert_allclose(inverse.distance, np.max(np.maximum(targets - 0.5, 0), axis=-1), atol=1e-3)
    display = random_display(5_000, seed=4)
    np.testing.assert_allclose(
        half_bright(inverse.apply(display)), np.minimum(display, 0.5), atol=0.5 * LEVEL
    )
    np.testing.assert_allclose(
        inverse.distance_at(display), np.max(np.maximum(display - 0.5, 0), axis=1), atol=0.04
    )
    # The worst corner bounds the interpolated distance from above.
    worst = inverse.distance_at(display, worst=True)
    assert np.all(worst >= inverse.distance_at(display) - 1e-6)
    assert np.all(worst[np.all(display < 0.5 - 1 / (size - 1), axis=1)] < 0.01 * LEVEL)


def test_distance_at_is_zero_where_the_view_reaches(srgb_inverse):
    display = random_display(1_000, seed=5).reshape(10, 100, 3)
    for worst in (False, True):
        distance = srgb_inverse.distance_at(display, worst=worst)
        assert distance.shape == (10, 100)
        assert distance.max() < 0.1 * LEVEL


# Cache ------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, agx_inverse):
    key = view_inverse.cache_key({"view": "AgX", "exposure": 0.5})
    path = agx_inverse.save(tmp_path, key)
    assert path == tmp_path / f"{key}.npy"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json", f"{key}.npy", f"{key}.shaper.npy"]
    loaded = view_inverse.InverseView.load(tmp_path, key)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.nodes, agx_inverse.nodes)
    np.testing.assert_array_equal(loaded.distance, agx_inverse.distance)
    np.testing.assert_array_equal(loaded.to_linear, agx_inverse.to_linear)
    assert loaded.report == agx_inverse.report
    display = random_display(1_000, seed=6).reshape(20, 50, 3)
    np.testing.assert_array_equal(loaded.apply(display), agx_inverse.apply(display))
    # Plain arrays: readable without pickle.
    assert np.load(path, allow_pickle=False).shape == (33, 33, 33, 4)


def test_load_misses_quietly(tmp_path, srgb_inverse):
    key = view_inverse.cache_key({"view": "Standard"})
    assert view_inverse.InverseView.load(tmp_path, key) is None
    srgb_inverse.save(tmp_path, key)
    meta = json.loads((tmp_path / f"{key}.json").read_text())
    (tmp_path / f"{key}.json").write_text(json.dumps({**meta, "format_version": -1}))
    assert view_inverse.InverseView.load(tmp_path, key) is None
    srgb_inverse.save(tmp_path, key)
    (tmp_path / f"{key}.npy").write_bytes(b"not an array")
    assert view_inverse.InverseView.load(tmp_path, key) is None


def test_cache_key_is_stable_and_file_safe():
    a = view_inverse.cache_key({"view": "AgX", "look": "None", "exposure": 0.0})
    b = view_inverse.cache_key({"exposure": 0.0, "look": "None", "view": "AgX"})
    c = view_inverse.cache_key({"view": "AgX", "look": "None", "exposure": 0.5})
    assert a == b != c
    assert all(ch.isalnum() or ch == "-" for ch in a)
    with pytest.raises(ValueError, match="plain file name"):
        view_inverse.InverseView.load(".", "../escape")


# Inputs -----------------------------------------------------------------------------------------------------


def test_apply_keeps_the_shape_and_clips_to_the_cube(srgb_inverse):
    image = random_display(6 * 7, seed=7).reshape(6, 7, 3)
    out = srgb_inverse.apply(image)
    assert out.shape == (6, 7, 3) and out.dtype == np.float32
    outside = np.array([[-0.5, 1.5, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(srgb_inverse.apply(outside), srgb_inverse.apply(np.clip(outside, 0, 1)))
    np.testing.assert_array_equal(srgb_inverse.apply(image, workers=1), out)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((4, 4), np.float32), "shape"),
        (np.zeros((4, 4, 3), np.uint8), "float"),
        (np.full((2, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_apply_rejects_bad_pixels(srgb_inverse, pixels, message):
    with pytest.raises(ValueError, match=message):
        srgb_inverse.apply(pixels)


def test_build_rejects_bad_arguments_and_bad_forwards():
    with pytest.raises(ValueError, match="size"):
        view_inverse.build(srgb_encode, size=1)
    with pytest.raises(ValueError, match="to_working"):
        view_inverse.build(srgb_encode, to_working=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        view_inverse.build(lambda linear: linear[:, :2])
    with pytest.raises(ValueError, match="non-finite"):
        view_inverse.build(lambda linear: np.full_like(linear, np.nan))


def test_report_counts_the_forward_batches():
    calls = []

    def counted(linear):
        calls.append(len(linear))
        return srgb_encode(linear)

    inverse = view_inverse.build(counted, size=9, forward_size=17)
    assert inverse.report.forward_calls == len(calls)
    assert inverse.report.forward_pixels == sum(calls)
    assert max(calls) >= 17**3


# 8-bit images -----------------------------------------------------------------------------------------------


def random_bytes(height, width, seed=0, colours=None):
    rng = np.random.default_rng(seed)
    if colours is None:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    return palette[rng.integers(0, colours, (height, width))]


@pytest.fixture(scope="module")
def half_bright_inverse():
    return view_inverse.build(lambda linear: 0.5 * srgb_encode(linear), size=17)


@pytest.mark.parametrize("name", ["srgb_inverse", "agx_inverse", "half_bright_inverse"])
def test_byte_lookup_equals_interpolating_each_pixel(request, name):
    inverse = request.getfixturevalue(name)
    table = view_inverse.ByteInverse(inverse)
    rgb8 = random_bytes(48, 64, seed=1)
    linear, levels = table.lookup(rgb8)
    display = rgb8.astype(np.float32) / 255
    expected = inverse.apply(display)
    assert linear.shape == (48, 64, 3) and linear.dtype == np.float16
    # float16 keeps 11 significant bits: a relative error of at most 2**-11 (plus the smallest normal).
    np.testing.assert_allclose(linear.astype(np.float32), expected, rtol=2**-11, atol=2**-14)
    assert levels.shape == (48, 64) and levels.dtype == np.float32
    np.testing.assert_allclose(levels, inverse.distance_at(display, worst=True) * 255, rtol=2**-10, atol=1e-3)
    assert np.all(levels >= 0)  # never a negative zero or a sign left over from the packing


def test_byte_lookup_meets_each_colour_once_and_agrees_with_itself(srgb_inverse):
    table = view_inverse.ByteInverse(srgb_inverse)
    first = random_bytes(32, 32, seed=2, colours=50)
    linear, _ = table.lookup(first)
    assert table.colours_met == len(np.unique(first.reshape(-1, 3), axis=0))
    met = table.colours_met
    again, _ = table.lookup(first[::-1])  # same colours: nothing new is interpolated
    assert table.colours_met == met
    np.testing.assert_array_equal(again, linear[::-1])
    black = np.zeros((4, 4, 3), np.uint8)  # all-zero entry: must not read as "not met yet"
    table.lookup(black)
    table.lookup(black)
    assert table.colours_met == met + 1


def test_byte_lookup_subsamples_the_levels(half_bright_inverse):
    table = view_inverse.ByteInverse(half_bright_inverse)
    rgb8 = random_bytes(40, 30, seed=3)
    _, every = table.lookup(rgb8)
    _, sampled = table.lookup(rgb8, stride=4)
    np.testing.assert_array_equal(sampled, every[::4, ::4])
    # The half-bright view cannot show anything above 0.5: those pixels are about (value - 0.5) off.
    bright = rgb8.max(axis=2) > 200
    assert np.all(every[bright] > 60)


def test_byte_lookup_is_safe_across_threads(agx_inverse):
    from concurrent.futures import ThreadPoolExecutor

    table = view_inverse.ByteInverse(agx_inverse)
    images = [random_bytes(64, 64, seed=s, colours=2000) for s in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda image: table.lookup(image)[0].copy(), images))
    fresh = view_inverse.ByteInverse(agx_inverse)
    for image, result in zip(images, results, strict=True):
        np.testing.assert_array_equal(result, fresh.lookup(image)[0])


def test_byte_lookup_refuses_what_it_cannot_hold(srgb_inverse):
    table = view_inverse.ByteInverse(srgb_inverse)
    with pytest.raises(ValueError, match="uint8"):
        table.lookup(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        table.lookup(np.zeros((4, 4), np.uint8))
    # An inverse reaching past the float16 range (an extreme exposure) stays with float32 interpolation.
    huge = view_inverse.InverseView(
        srgb_inverse.nodes, srgb_inverse.distance, view_inverse.Shaper(srgb_inverse.shaper.table * 1e6)
    )
    assert not view_inverse.ByteInverse.fits(huge)
    with pytest.raises(ValueError, match="float16"):
        view_inverse.ByteInverse(huge)
