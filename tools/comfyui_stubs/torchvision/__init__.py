# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for `torchvision` in the ComfyUI test environment: importable, unusable.

ComfyUI imports torchvision at module level in two Stable Cascade modules and in the LaMa upscaler, but calls
it only when such a model is built; PyPI's torchvision breaks beside the local CPU torch. With this folder on
the server's PYTHONPATH every node loads. `import torchvision`, `import torchvision.x.y` and
`from torchvision.x import y` succeed; calling or indexing anything from it raises `ModuleNotFoundError`.
`./run venv comfyui` copies this package to `<venv>/stubs/`. It has no dist-info, so libraries that ask the
package metadata whether torchvision is installed (transformers) are told it is not.
"""

import importlib.abc
import importlib.machinery
import sys
import types


class _Missing:
    """Any attribute of the stand-in: a chain of further stand-ins that raises once it is used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> "_Missing":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError(
            f"{self._name} needs torchvision, which this ComfyUI test environment leaves out",
            name="torchvision",
        )

    __call__ = __getitem__ = __iter__ = _refuse

    def __repr__(self) -> str:
        return f"<torchvision stand-in {self._name}>"


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> _Missing:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self.__name__}.{attr}")


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every `torchvision.<anything>` importable as another stand-in module."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


def __getattr__(attr: str) -> _Missing:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Missing(f"{__name__}.{attr}")


sys.meta_path.append(_SubmoduleFinder())
