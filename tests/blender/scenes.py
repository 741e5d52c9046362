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
