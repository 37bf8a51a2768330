from __future__ import annotations

import subprocess
import sys

from selfserve import runtime


def test_the_public_names_are_sorted_and_exist() -> None:
    assert runtime.__all__ == sorted(runtime.__all__)
    assert set(runtime.__all__) == {
        "DownResult",
        "ServiceSpec",
        "ServiceStatus",
        "StartFailed",
        "StatusReport",
        "UpResult",
        "configure",
        "down",
        "login_admin",
        "services",
        "status",
        "up",
    }
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None


def test_the_cli_does_not_load_the_runtime_or_the_server_for_help() -> None:
    code = (
        "import sys; from selfserve.cli import app; "
        "print(sorted(m for m in ('selfserve.runtime', 'selfserve.server', 'psutil', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
