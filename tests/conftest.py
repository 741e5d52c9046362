# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest options: `--runslow` opts into cases marked `slow` (kept out of the default run)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running case, run with --runslow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with ./run test --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
