import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeswitch import Gateway  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def gateway(tmp_path):
    """A GatewayController wired to one fake switch (ports 1-4, monitor on 3)."""
    return Gateway(tmp_path)
