# SPDX-License-Identifier: GPL-3.0-or-later
"""Small scenes with known geometry for the Blender tests."""

import bmesh
import bpy

WIDTH, HEIGHT = 80, 60


def _link(scene, name, mesh):
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    return obj


def quad(scene, name, half_w, half_h, z):
    """A rectangle facing +Z (towards a camera at the origin looking down -Z), at depth z."""
    mesh = bpy.data.meshes.new(name)
    verts = [(-half_w, -half_h, z), (half_w, -half_h, z), (half_w, half_h, z), (-half_w, half_h, z)]
    mesh.from_pydata(verts, [], [(0, 1, 2, 3)])
    return _link(scene, name, mesh)


def box(scene, name, half, location):
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2 * half)
    bm.to_mesh(mesh)
    bm.free()
    obj = _link(scene, name, mesh)
    obj.location = location
    return obj


def sphere(scene, name, radius, location):
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=radius)
    for face in bm.faces:
        face.smooth = True
    bm.to_mesh(mesh)
    bm.free()
    obj = _link(scene, name, mesh)
    obj.location = location
    return obj


def known_scene(scene):
    """Camera at the origin looking down -Z; a wall at 6 units, a box face at 2.7, a sphere at ~4.

    Returns a dict of the objects.
    """
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(cam)
    cam.data.lens = 50
    cam.data.sensor_width = 36
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.render.resolution_percentage = 100
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    scene.collection.objects.link(sun)
    objects = {
        "wall": quad(scene, "Wall", 1.5, 1.0, -6.0),
        "box": box(scene, "Box", 0.3, (0.0, 0.0, -3.0)),
        "sphere": sphere(scene, "Sphere", 0.35, (0.9, 0.35, -4.0)),
        "camera": cam,
    }
    scene.stylepass.pass_samples = 2
    return objects


def animated_scene(scene, frames: int = 4):
    """`known_scene` with the box sliding right and the sphere rising over `frames` frames."""
    objects = known_scene(scene)
    scene.frame_start, scene.frame_end = 1, frames
    box, ball = objects["box"], objects["sphere"]
    for frame in range(1, frames + 1):
        box.location.x = -0.3 + 0.12 * (frame - 1)
        box.keyframe_insert("location", frame=frame)
        ball.location.y = 0.2 + 0.05 * (frame - 1)
        ball.keyframe_insert("location", frame=frame)
    for fcurve in _fcurves(box) + _fcurves(ball):
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"
    scene.frame_set(1)
    return objects


def _fcurves(obj):
    action = obj.animation_data.action
    if hasattr(action, "fcurves") and len(action.fcurves):
        return list(action.fcurves)
    # Blender 5.x: layered actions keep F-curves in channelbags.
    curves = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                curves.extend(bag.fcurves)
    return curves


def erode(mask, steps=1):
    """`mask` shrunk by `steps` pixels (4-neighbourhood): compare passes away from edges."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask
