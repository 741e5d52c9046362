# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes: every Stylise Frame of a frame kept and numbered (never reused), an index that names them, the
whole take landing or nothing, and choosing one making it current without losing anything."""

import json
import threading

import numpy as np
import pytest

from stylepass_core import png, takes
from stylepass_core.engine_api import StyleRequest, StyleResult
from stylepass_core.engines.diffusion import DiffusionSettings
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.output_layout import SceneLayout
from stylepass_core.stylise_job import stylise_frame
from stylepass_core.takes import FrameTakes, TakeError, style_label

FRAME = 1
# The built-in styles' names, as the panel offers them (whatever they are called).
PRESET_NAMES = {
    choice[0]: choice[1]
    for name, _, spec, _ in NeuralStyleSettings.specs()
    if name == "style_preset"
    for choice in spec.choices
}


def _layout(tmp_path) -> SceneLayout:
    return SceneLayout(tmp_path, "Scene")


def _request(preset: str = "style_07", seed: int = 42) -> StyleRequest:
    beauty = np.linspace(0, 1, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    return StyleRequest(beauty=beauty, settings=NeuralStyleSettings(style_preset=preset), seed=seed)


def _runner(level: int):
    """An engine stand-in whose picture is one flat grey `level`, so every take's pixels tell which run made it."""

    def run(engine_id, request, progress, abort):
        return StyleResult(np.full(request.beauty.shape, level / 255, np.float32), {"engine": engine_id})

    return run


def _stylise(layout: SceneLayout, level: int, keep: bool = True, alongside=None, **request):
    """One Stylise Frame into `layout`: PNG, record and a compositor copy (here the PNG's levels as .exr)."""

    def copy(levels, place):
        place(layout.compositor_file(FRAME)).write_bytes(levels.tobytes())

    return stylise_frame(
        _request(**request),
        layout.stylised_file(FRAME),
        layout.stylised_file(FRAME, "json"),
        runner=_runner(level),
        alongside=alongside or copy,
        png_level=0,
        takes=FrameTakes(layout, FRAME) if keep else None,
    )


def _current_level(layout: SceneLayout) -> int:
    return int(png.read_png(layout.stylised_file(FRAME))[0, 0, 0])


def _files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- Numbering and the index ---------------------------------------------------------------------------------


def test_each_stylise_frame_keeps_a_numbered_take_named_in_the_index(tmp_path):
    layout = _layout(tmp_path)
    first = _stylise(layout, 20, preset="style_07", seed=42)
    second = _stylise(layout, 80, preset="style_12", seed=7)
    assert (first.take.number, second.take.number) == (1, 2)
    folder = layout.takes_dir(FRAME)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "001.exr", "001.json", "001.png", "002.exr", "002.json", "002.png", "takes.json",
    ]  # fmt: skip
    index = json.loads((folder / "takes.json").read_text())
    assert index["current"] == 2 and index["next_number"] == 3 and index["frame"] == FRAME
    one, two = index["takes"]
    assert one["files"] == {"001.png": "0001.png", "001.json": "0001.json", "001.exr": "compositor/0001.exr"}
    assert one["engine"] == "NEURAL_STYLE" and one["seed"] == 42 and one["strength"] is None
    assert one["style"] == PRESET_NAMES["style_07"] and two["style"] == PRESET_NAMES["style_12"]
    # Neural style ignores the seed, so the name leaves it out; the record and the index keep it.
    assert one["name"] == f"Take 1 · {PRESET_NAMES['style_07']}"
    assert two["name"] == f"Take 2 · {PRESET_NAMES['style_12']}"
    assert one["time"].endswith("Z") and one["source"] == takes.FROM_STYLISE_FRAME
    # The current files are take 2, byte for byte, and its record says so; take 1 is what the first run wrote.
    assert json.loads(layout.stylised_file(FRAME, "json").read_text())["take"] == 2
    assert (folder / "002.png").read_bytes() == layout.stylised_file(FRAME).read_bytes()
    assert (folder / "002.exr").read_bytes() == layout.compositor_file(FRAME).read_bytes()
    assert int(png.read_png(folder / "001.png")[0, 0, 0]) == 20
    assert json.loads((folder / "001.json").read_text())["take"] == 1
    assert FrameTakes(layout, FRAME).current_number() == 2


def test_numbers_are_never_reused_even_after_deletions(tmp_path):
    layout = _layout(tmp_path)
    for level in (10, 20, 30):
        _stylise(layout, level)
    folder = layout.takes_dir(FRAME)
    for path in folder.glob("003.*"):  # the artist deletes the newest take, files and entry
        path.unlink()
    index = json.loads((folder / "takes.json").read_text())
    index["takes"] = [t for t in index["takes"] if t["number"] != 3]
    (folder / "takes.json").write_text(json.dumps(index))
    assert _stylise(layout, 40).take.number == 4
    (folder / "takes.json").unlink()  # and then the index itself: the files still count
    assert _stylise(layout, 50).take.number == 5


def test_a_lost_or_broken_index_is_found_again_from_the_files(tmp_path):
    layout = _layout(tmp_path)
    _stylise(layout, 20, preset="style_03")
    _stylise(layout, 60, preset="style_05")
    index_path = layout.takes_dir(FRAME) / "takes.json"
    index_path.write_text("{ not json")
    found = FrameTakes(layout, FRAME).read()
    assert [t.number for t in found.takes] == [1, 2] and found.next_number == 3
    assert [t.name for t in found.takes] == [
        f"Take 1 · {PRESET_NAMES['style_03']}",
        f"Take 2 · {PRESET_NAMES['style_05']}",
    ]
    assert found.takes[0].files["001.exr"] == "compositor/0001.exr"
    assert _stylise(layout, 90).take.number == 3
    assert [t["number"] for t in json.loads(index_path.read_text())["takes"]] == [1, 2, 3]


def test_the_compositor_layers_file_is_kept_with_its_take_and_found_again(tmp_path):
    # Two files of a take end in .exr: the layers file is kept as "NNN.layers.exr", never over the copy.
    layout = _layout(tmp_path)

    def copies(levels, place):
        place(layout.compositor_file(FRAME)).write_bytes(b"colour" + levels.tobytes())
        place(layout.layers_file(FRAME)).write_bytes(b"layers" + levels.tobytes())

    _stylise(layout, 20, alongside=copies)
    _stylise(layout, 60, alongside=copies)
    folder = layout.takes_dir(FRAME)
    assert (folder / "001.layers.exr").read_bytes().startswith(b"layers")
    assert (folder / "001.exr").read_bytes().startswith(b"colour")
    (folder / "takes.json").unlink()
    first = FrameTakes(layout, FRAME).read().takes[0]
    assert first.files == {
        "001.exr": "compositor/0001.exr",
        "001.json": "0001.json",
        "001.layers.exr": "layers/0001.exr",
        "001.png": "0001.png",
    }
    FrameTakes(layout, FRAME).choose(1)
    assert layout.layers_file(FRAME).read_bytes() == (folder / "001.layers.exr").read_bytes()


def test_a_take_keeps_copies_not_links(tmp_path):
    # A program saving over the current file in place (Blender's Image > Save) must not change a take.
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    kept = (layout.takes_dir(FRAME) / "001.png").read_bytes()
    with open(layout.stylised_file(FRAME), "r+b") as stream:
        stream.write(b"painted over")
    assert (layout.takes_dir(FRAME) / "001.png").read_bytes() == kept


def test_without_takes_nothing_is_kept_and_earlier_takes_stay(tmp_path):
    # Stylise Animation writes the current files only; it never touches the takes.
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    before = _files(layout.takes_dir(FRAME))
    frame = _stylise(layout, 70, keep=False)
    assert frame.take is None and "take" not in frame.record
    assert _files(layout.takes_dir(FRAME)) == before
    assert FrameTakes(layout, FRAME).current_number() is None  # the current result is no take


# -- Atomicity -----------------------------------------------------------------------------------------------


def test_a_failure_while_keeping_a_take_leaves_everything_as_it_was(tmp_path, monkeypatch):
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    _stylise(layout, 40)
    before = _files(layout.stylised_dir)
    copies = []
    real_copy = takes._copy

    def disk_full_on_the_second_copy(source, target):
        copies.append(target)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        real_copy(source, target)

    monkeypatch.setattr(takes, "_copy", disk_full_on_the_second_copy)
    with pytest.raises(OSError, match="No space"):
        _stylise(layout, 90)
    after = _files(layout.stylised_dir)
    # Every file as it was, no temporary file left; only the reserved number is spent.
    index = "takes/0001/takes.json"
    assert {k: v for k, v in after.items() if k != index} == {k: v for k, v in before.items() if k != index}
    assert json.loads(after[index])["takes"] == json.loads(before[index])["takes"]
    assert json.loads(after[index])["current"] == 2
    assert not [p for p in layout.stylised_dir.rglob("*") if p.name.endswith((".take", ".tmp"))]
    monkeypatch.setattr(takes, "_copy", real_copy)
    assert _stylise(layout, 90).take.number == 4  # 3 went to the failed run


def test_a_failing_compositor_copy_keeps_no_take(tmp_path):
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    before = _files(layout.stylised_dir)

    def broken(levels, place):
        place(layout.compositor_file(FRAME))
        raise ValueError("the view transform failed")

    with pytest.raises(ValueError, match="view transform"):
        _stylise(layout, 50, alongside=broken)
    after = _files(layout.stylised_dir)
    assert {k: v for k, v in after.items() if not k.endswith("takes.json")} == {
        k: v for k, v in before.items() if not k.endswith("takes.json")
    }
    assert [t.number for t in FrameTakes(layout, FRAME).read().takes] == [1]


def test_two_runs_on_one_frame_at_once_each_keep_their_own_take(tmp_path):
    layout = _layout(tmp_path)
    results, errors = {}, []

    def work(level):
        try:
            results[level] = _stylise(layout, level)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(level,)) for level in (10, 30, 50, 70)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    numbers = sorted(frame.take.number for frame in results.values())
    assert numbers == [1, 2, 3, 4]
    index = FrameTakes(layout, FRAME).read()
    assert [t.number for t in index.takes] == [1, 2, 3, 4]
    folder = layout.takes_dir(FRAME)
    for level, frame in results.items():  # each take holds its own run's pixels
        number = frame.take.number
        assert int(png.read_png(folder / f"{number:03d}.png")[0, 0, 0]) == level
    # The current files are one whole take, and the record names that take.
    current = FrameTakes(layout, FRAME).current_number()
    assert layout.stylised_file(FRAME).read_bytes() == (folder / f"{current:03d}.png").read_bytes()
    assert layout.compositor_file(FRAME).read_bytes() == (folder / f"{current:03d}.exr").read_bytes()


# -- Choosing ------------------------------------------------------------------------------------------------


def test_choosing_a_take_makes_it_current_and_keeps_every_take(tmp_path):
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    _stylise(layout, 80)
    folder = layout.takes_dir(FRAME)
    take_two = _files(folder)
    chosen = FrameTakes(layout, FRAME).choose(1)
    assert chosen.entry.number == 1 and chosen.kept is None
    assert _current_level(layout) == 20
    assert layout.compositor_file(FRAME).read_bytes() == (folder / "001.exr").read_bytes()
    assert json.loads(layout.stylised_file(FRAME, "json").read_text())["take"] == 1
    index = FrameTakes(layout, FRAME).read()
    assert index.current == 1 and FrameTakes(layout, FRAME).current_number() == 1
    assert {k: v for k, v in _files(folder).items() if k != "takes.json"} == {
        k: v for k, v in take_two.items() if k != "takes.json"
    }
    FrameTakes(layout, FRAME).choose(2)  # and back
    assert _current_level(layout) == 80
    assert _stylise(layout, 50).take.number == 3


def test_choosing_keeps_a_result_that_is_no_take_first(tmp_path):
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    _stylise(layout, 60, keep=False)  # e.g. Stylise Animation wrote this frame since
    animated = layout.stylised_file(FRAME).read_bytes()
    chosen = FrameTakes(layout, FRAME).choose(1)
    assert chosen.kept is not None and chosen.kept.number == 2
    assert chosen.kept.name.endswith("kept")
    assert (layout.takes_dir(FRAME) / "002.png").read_bytes() == animated
    assert _current_level(layout) == 20
    FrameTakes(layout, FRAME).choose(2)
    assert layout.stylised_file(FRAME).read_bytes() == animated


def test_choosing_a_take_with_missing_files_says_which_and_changes_nothing(tmp_path):
    layout = _layout(tmp_path)
    _stylise(layout, 20)
    _stylise(layout, 80)
    (layout.takes_dir(FRAME) / "001.exr").unlink()
    before = _files(layout.stylised_dir)
    with pytest.raises(
        TakeError, match=rf"Take 1 · {PRESET_NAMES['style_07']} of frame 1 is missing 001\.exr"
    ) as caught:
        FrameTakes(layout, FRAME).choose(1)
    assert "nothing was changed" in str(caught.value)
    with pytest.raises(TakeError, match=r"no take 7 \(its takes: 1, 2\)"):
        FrameTakes(layout, FRAME).choose(7)
    assert _files(layout.stylised_dir) == before


def test_an_index_entry_cannot_write_outside_the_stylised_folder(tmp_path):
    with pytest.raises(ValueError, match="not a take's file"):
        takes.TakeEntry.from_json({"number": 1, "files": {"001.png": "../../elsewhere.png"}})
    with pytest.raises(ValueError, match="not a take's file"):
        takes.TakeEntry.from_json({"number": 1, "files": {"../x.png": "0001.png"}})


# -- Names ---------------------------------------------------------------------------------------------------


def test_style_labels_say_the_look_in_a_few_words():
    assert style_label(NeuralStyleSettings(style_preset="style_03")) == PRESET_NAMES["style_03"]
    blend = NeuralStyleSettings(
        style_source="BLEND", style_preset="style_01", style_blend_preset="style_02", style_blend_amount=0.25
    )
    assert style_label(blend) == f"{PRESET_NAMES['style_01']} + {PRESET_NAMES['style_02']} 25%"
    image = NeuralStyleSettings(style_source="IMAGE")
    assert style_label(image, {"style_image": "Starry Night.jpg"}) == "Starry Night.jpg"
    assert style_label(image) == "Style Image"
    prompt = DiffusionSettings(
        prompt="a   watercolour village at dusk with long shadows", style_preset="none"
    )
    assert style_label(prompt) == "a watercolour village at dusk w…"
    preset = DiffusionSettings(prompt="a village", style_preset="watercolour")
    assert style_label(preset) == "Watercolour: a village"


def test_names_show_the_seed_where_it_matters_and_a_strength_below_one():
    record = {
        "engine": "DIFFUSION",
        "request": {"settings": DiffusionSettings(prompt="a village").to_plain(), "seed": 42},
        "frame": {"strength": 0.5},
        "context": {"compositor_colour_space": "Linear Rec.709"},
    }
    entry = takes.entry_from_record(3, record, {}, takes.FROM_STYLISE_FRAME)
    assert entry.name == "Take 3 · a village · seed 42 · strength 0.50"
    assert entry.colour_space == "Linear Rec.709" and entry.seed == 42 and entry.strength == 0.5
    unknown = takes.entry_from_record(4, {"request": {"settings": {"engine": "GONE"}}}, {}, takes.RECOVERED)
    assert unknown.name == "Take 4 · unknown style"
    # A take with style groups says so: three groups in other styles are not the scene's style alone.
    record["context"]["style_groups"] = [{"name": "Ink"}, {"name": "Sky"}, {"name": "Hero"}]
    grouped = takes.entry_from_record(5, record, {}, takes.FROM_STYLISE_FRAME)
    assert grouped.name == "Take 5 · a village + 3 style groups · seed 42 · strength 0.50"
