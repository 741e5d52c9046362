# SPDX-License-Identifier: GPL-3.0-or-later
"""The sRGB curve both ways (the live preview linearises its picture for Blender 4.x's sRGB overlay buffer)."""

import numpy as np

from stylepass_core import imageops


def test_srgb_round_trip_and_known_points():
    values = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    assert np.allclose(imageops.srgb_encode(imageops.srgb_to_linear(values)), values, atol=1e-5)
    # Mid grey: 0.5 encoded is 0.214 linear; 0.0031308 linear is the curve's knee at 0.04045 encoded.
    assert np.isclose(imageops.srgb_to_linear(np.float32(0.5)), 0.21404, atol=1e-4)
    assert np.isclose(imageops.srgb_encode(np.float32(0.0031308)), 0.04045, atol=1e-5)
    assert (
        imageops.srgb_to_linear(np.float32(1.2)) == 1.0 and imageops.srgb_to_linear(np.float32(-0.1)) == 0.0
    )
