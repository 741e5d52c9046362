# SPDX-License-Identifier: GPL-3.0-or-later
"""A blocked-out scene built by script: buildings, ground, a sphere, a figure-sized capsule, camera and sun.

Used by the demo, the benchmarks and the Blender tests, so all three look at the same kind of shot an artist
blocks out before stylising.
"""

import math

import bmesh
import bpy
from mathutils import Vector


def _mesh_object(scene, name, build, location=(0, 0, 0), scale=(1, 1, 1), material=None):
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    build(bm)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    obj.scale = scale
    if material is not None:
        mesh.materials.append(material)
    scene.collection.objects.link(obj)
    return obj


def _material(name, rgb):
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*rgb, 1.0)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    return mat


def _smooth(bm):
    for face in bm.faces:
        face.smooth = True


def build_demo_scene(width: int = 512, height: int = 512, name: str = "Demo") -> bpy.types.Scene:
    """Fill the context's scene (renamed `name`) with the blocked-out shot; best on an empty file."""
    scene = bpy.context.scene
    scene.name = name
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.frame_start, scene.frame_end = 1, 24

    world = bpy.data.worlds.new(f"{name} Sky")
    world.color = (0.45, 0.6, 0.85)
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (0.45, 0.6, 0.85, 1.0)
    scene.world = world

    concrete = _material("Concrete", (0.55, 0.52, 0.5))
    brick = _material("Brick", (0.6, 0.25, 0.18))
    grass = _material("Grass", (0.2, 0.45, 0.15))
    skin = _material("Figure", (0.8, 0.6, 0.45))
    chrome = _material("Ball", (0.2, 0.35, 0.8))

    ground = _mesh_object(
        scene,
        "Ground",
        lambda bm: bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=20),
        material=grass,
    )
    buildings = []
    for i, (x, y, w, d, h, mat) in enumerate(
        [
            (-4.0, 4.0, 2.5, 2.5, 5.0, concrete),
            (0.5, 7.0, 3.0, 2.0, 7.5, brick),
            (5.0, 3.0, 2.0, 3.0, 3.5, concrete),
        ]
    ):
        buildings.append(
            _mesh_object(
                scene,
                f"Building.{i + 1:03d}",
                lambda bm: bmesh.ops.create_cube(bm, size=1.0),
                location=(x, y, h / 2),
                scale=(w, d, h),
                material=mat,
            )
        )

    def sphere(bm):
        bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=1.0)
        _smooth(bm)

    ball = _mesh_object(scene, "Sphere", sphere, location=(2.2, -0.5, 1.0), material=chrome)

    def capsule(bm):
        # A cylinder with two hemispheres: a stand-in for a person, 1.8 units tall.
        bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=16, radius=0.3)
        for vert in bm.verts:
            vert.co.z += 0.6 if vert.co.z > 0 else -0.6
        _smooth(bm)

    figure = _mesh_object(scene, "Figure", capsule, location=(-1.0, 0.0, 0.9), material=skin)

    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 35
    camera = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(camera)
    camera.location = (0.0, -10.0, 3.0)
    direction = Vector((0.5, 3.0, 1.8)) - camera.location
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera

    sun_data = bpy.data.lights.new("Sun", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("Sun", sun_data)
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(30))
    scene.collection.objects.link(sun)

    # Semantic classes so the segmentation pass speaks ADE20K.
    if hasattr(ground, "stylepass"):
        ground.stylepass.semantic_class = "GRASS"
        for building in buildings:
            building.stylepass.semantic_class = "BUILDING"
        figure.stylepass.semantic_class = "PERSON"
    _ = ball
    return scene


def animate_demo_scene(scene: bpy.types.Scene, frames: int = 24) -> None:
    """A short shot on the demo scene: the camera dollies and pans, the sphere rolls across the street."""
    scene.frame_start, scene.frame_end = 1, frames
    camera = scene.camera
    ball = scene.objects["Sphere"]
    start_cam, end_cam = Vector((-1.5, -10.0, 3.0)), Vector((1.0, -8.5, 2.6))
    start_ball, end_ball = Vector((3.2, -0.5, 1.0)), Vector((0.2, -1.2, 1.0))
    for frame in (1, frames):
        t = (frame - 1) / max(1, frames - 1)
        camera.location = start_cam.lerp(end_cam, t)
        direction = Vector((0.5, 3.0, 1.8)) - camera.location
        camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
        ball.location = start_ball.lerp(end_ball, t)
        ball.rotation_euler = (0.0, -3.0 * t, 0.0)
        ball.keyframe_insert("location", frame=frame)
        ball.keyframe_insert("rotation_euler", frame=frame)
    scene.frame_set(1)


def animate_fast_shot(scene: bpy.types.Scene, frames: int = 24) -> None:
    """A faster shot on the demo scene: the camera orbits 50 degrees around the street while the sphere
    bounces across the whole frame in front of the figure and the buildings (occlusions), against the orbit.

    The sphere moves several times the demo shot's pixels per frame. Every frame is keyframed, so the orbit is
    a true arc at a steady pace, with no ease in or out.
    """
    scene.frame_start, scene.frame_end = 1, frames
    camera = scene.camera
    ball = scene.objects["Sphere"]
    target = Vector((0.0, 1.5, 1.5))
    start_ball, end_ball = Vector((6.0, -2.2, 1.0)), Vector((-6.0, -1.2, 1.0))
    for frame in range(1, frames + 1):
        t = (frame - 1) / max(1, frames - 1)
        angle = math.radians(-25.0 + 50.0 * t)
        camera.location = target + Vector((10.0 * math.sin(angle), -10.0 * math.cos(angle), 1.5))
        direction = target - camera.location
        camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
        ball.location = start_ball.lerp(end_ball, t)
        ball.location.z += 1.2 * abs(math.sin(3.0 * math.pi * t))  # three bounces
        ball.rotation_euler = (0.0, -12.0 * t, 0.0)  # rolls the way it travels: 12 units, radius 1
        ball.keyframe_insert("location", frame=frame)
        ball.keyframe_insert("rotation_euler", frame=frame)
    scene.frame_set(1)
