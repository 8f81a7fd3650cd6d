"""Fixtures of the deployment checks (helpers live in deploy_helpers.py, a name no other test
directory uses, so that `import` never picks another directory's module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_helpers import load_crd, operator_binary, render_chart


@pytest.fixture(scope="session")
def operator_bin() -> Path:
    return operator_binary()


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return load_crd()


@pytest.fixture(scope="session")
def default_objects() -> list[dict[str, Any]]:
    return render_chart(None)
