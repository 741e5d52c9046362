# SPDX-License-Identifier: GPL-3.0-or-later
"""Panels cannot be drawn without a window; draw them into a recording layout that checks every property and
operator they name really exists, for every engine and style source."""

import bpy
import pytest
from conftest import addon_module

panels = addon_module("panels")
settings_module = addon_module("addon.settings")


class RecordingLayout:
    """Stands in for UILayout: checks names, returns itself for rows, columns, boxes and operators."""

    def __init__(self, calls):
        self.calls = calls
        self.use_property_split = self.use_property_decorate = self.active = False
        self.scale_y = 1.0
        self.index = 0

    def prop(self, data, name, **kwargs):
        assert data.bl_rna.properties.get(name) is not None, f"{type(data).__name__} has no property {name!r}"
        self.calls.append(("prop", name))

    def template_ID(self, data, name, **kwargs):
        self.prop(data, name)

    def _operator(self, idname, *args, **kwargs):
        category, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, category), name), f"no operator {idname}"
        if args:
            properties = getattr(getattr(bpy.ops, category), name).get_rna_type().properties
            assert properties.get(args[0]) is not None, (idname, args)
        self.calls.append(("operator", idname))
        return self

    operator = _operator
    operator_menu_enum = _operator

    def label(self, **kwargs):
        self.calls.append(("label", kwargs.get("text")))

    def separator(self, **kwargs):
        pass

    def row(self, **kwargs):
        return self

    column = box = row


class Panel:
    def __init__(self, layout):
        self.layout = layout


@pytest.mark.parametrize("engine", ["NEURAL_STYLE", "DIFFUSION"])
@pytest.mark.parametrize("source", ["PRESET", "BLEND", "IMAGE"])
def test_every_panel_draws_with_existing_names(empty_file, engine, source):
    scene = empty_file
    scene.stylepass.engine = engine
    scene.stylepass.style_source = source
    if engine == "DIFFUSION":
        settings_module.apply_diffusion_preset(scene.stylepass, "SD15_DEPTH_LINEART")
    obj = bpy.data.objects.new("Thing", bpy.data.meshes.new("Thing"))
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    for panel_class in panels.classes:
        calls = []
        panel = Panel(RecordingLayout(calls))
        for name, value in vars(panel_class).items():
            if name.startswith("_") and callable(value) and name != "__init__":
                setattr(panel, name, value.__get__(panel))
        for base in panel_class.__mro__:
            if "_split" in vars(base):
                panel._split = vars(base)["_split"].__get__(panel)
        panel_class.draw(panel, bpy.context)
        assert calls, panel_class.__name__
    prefs = bpy.context.preferences.addons[panels.__package__.rpartition(".")[0]].preferences
    for location in ("MANAGED", "PYTHON", "REMOTE"):
        prefs.engine_location = location
        calls = []
        type(prefs).draw(_PrefsProxy(prefs, RecordingLayout(calls)), bpy.context)
        assert ("operator", "stylepass.release_memory") in calls
    prefs.engine_location = "MANAGED"


class _PrefsProxy:
    """The preferences' own values with a recording layout."""

    def __init__(self, prefs, layout):
        object.__setattr__(self, "_prefs", prefs)
        object.__setattr__(self, "layout", layout)

    def __getattr__(self, name):
        return getattr(self._prefs, name)


def test_diffusion_presets_fill_the_settings(empty_file):
    settings = empty_file.stylepass
    for key in settings_module.DIFFUSION_PRESETS:
        bpy.ops.stylepass.diffusion_preset(preset=key)
        assert settings.engine == "DIFFUSION" and settings.model and len(settings.controls) >= 1
    bpy.ops.stylepass.control_add(map="normal")
    assert settings.controls[-1].map == "normal"
    bpy.ops.stylepass.control_remove(index=len(settings.controls) - 1)
    assert all(c.map != "normal" for c in settings.controls)
