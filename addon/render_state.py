# SPDX-License-Identifier: GPL-3.0-or-later
"""Temporarily change Blender settings and put every one of them back, also when the work fails.

The data-pass render has to switch engines, samples, passes and file formats. An artist must never find their
scene changed afterwards, so every change goes through `SettingsOverride`, which records the original value
before the first write and restores in reverse order on exit, whatever happened in between.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SettingsOverride:
    """Records (owner, attribute) originals before overriding them; `restore()` undoes all, newest first."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []
        self._seen: set[tuple[int, str]] = set()

    def remember(self, owner: Any, *attributes: str) -> None:
        """Record originals without changing them (each pair only the first time it is seen).

        Needed where setting one property changes others, such as a file format resetting the colour depth:
        record the dependants before the property they depend on.
        """
        for attribute in attributes:
            key = (owner.as_pointer() if hasattr(owner, "as_pointer") else id(owner), attribute)
            if key in self._seen:
                continue
            original = getattr(owner, attribute)
            # Vectors and colours come back as live views; keep a copy of the numbers.
            if hasattr(original, "__len__") and not isinstance(original, str):
                original = tuple(original)
            self._saved.append((owner, attribute, original))
            self._seen.add(key)

    def set(self, owner: Any, attribute: str, value: Any) -> None:
        """Set `owner.attribute = value`, remembering the original the first time this pair is touched."""
        self.remember(owner, attribute)
        if getattr(owner, attribute) != value:
            setattr(owner, attribute, value)

    def set_many(self, owner: Any, **values: Any) -> None:
        for attribute, value in values.items():
            self.set(owner, attribute, value)

    def restore(self) -> list[str]:
        """Put every original back, newest first. Returns messages for values that could not be restored."""
        problems = []
        for owner, attribute, original in reversed(self._saved):
            try:
                if getattr(owner, attribute) != original:
                    setattr(owner, attribute, original)
            except (AttributeError, TypeError, ValueError, ReferenceError) as error:
                problems.append(f"{attribute}: {error}")
        self._saved.clear()
        self._seen.clear()
        return problems


@contextmanager
def overridden() -> Iterator[SettingsOverride]:
    """Context manager form: everything set through the yielded object is restored on exit."""
    override = SettingsOverride()
    try:
        yield override
    finally:
        problems = override.restore()
        if problems:
            print("Stylepass: could not restore some settings:", "; ".join(problems))
