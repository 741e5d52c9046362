"""Stylepass core: everything that runs without bpy (engines, passes maths, layout)."""
