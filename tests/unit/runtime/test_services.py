from __future__ import annotations

import sys
from pathlib import Path

import pytest

from selfserve.runtime import ServiceSpec, configure, services
from selfserve.runtime._services import local_address
from selfserve.settings import get_settings


def test_api_and_console_are_declared_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_SERVER__API_PORT", "9100")
    monkeypatch.setenv("SELFSERVE_SERVER__CONSOLE_PORT", "9101")
    monkeypatch.setenv("SELFSERVE_CONSOLE__APP_PATH", str(tmp_path / "console.py"))
    get_settings.cache_clear()
    api, console = services(get_settings())

    assert api.name == "api"
    assert api.argv == (sys.executable, "-m", "selfserve.server")
    assert api.health_url == "http://127.0.0.1:9100/api/v1/health"
    assert api.url == "http://127.0.0.1:9100"

    assert console.name == "console"
    assert console.argv[1:5] == ("-m", "streamlit", "run", str(tmp_path / "console.py"))
    flags = dict(zip(console.argv[5::2], console.argv[6::2], strict=True))
    assert flags == {
        "--server.headless": "true",
        "--server.address": "127.0.0.1",
        "--server.port": "9101",
        "--browser.gatherUsageStats": "false",
        "--server.fileWatcherType": "none",
        "--client.toolbarMode": "minimal",
        "--theme.primaryColor": "#4f46e5",
    }
    assert console.health_url == "http://127.0.0.1:9101/_stcore/health"
    assert console.env["SELFSERVE_URL"] == "http://127.0.0.1:9100"
    for spec in (api, console):
        assert spec.env["SELFSERVE_HOME"] == str(get_settings().home)
        assert spec.env["SELFSERVE_SERVER__API_PORT"] == "9100"


def test_flags_override_the_ports_and_reach_the_children() -> None:
    settings = configure(api_port=9200, console_port=9201)
    api, console = services(settings)
    assert (api.port, console.port) == (9200, 9201)
    assert console.env["SELFSERVE_URL"] == "http://127.0.0.1:9200"
    assert api.env["SELFSERVE_SERVER__API_PORT"] == "9200"
    assert api.env["SELFSERVE_SERVER__CONSOLE_PORT"] == "9201"
    assert get_settings().server.api_port == 8700, "the process's settings are left alone"
    assert configure() is get_settings()


def test_port_hint_names_the_flag_the_variable_and_the_setting() -> None:
    spec = ServiceSpec(
        name="tracking",
        argv=("x",),
        host="127.0.0.1",
        port=1,
        health_path="/",
        url="-",
        port_setting="ml.tracking_port",
    )
    assert spec.port_env == "SELFSERVE_ML__TRACKING_PORT"
    assert spec.port_hint == "SELFSERVE_ML__TRACKING_PORT (setting ml.tracking_port)"
    api = services(get_settings())[0]
    assert api.port_hint == "`selfserve up --api-port PORT` or SELFSERVE_SERVER__API_PORT (setting server.api_port)"


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("myhost", "myhost")],
)
def test_local_address(host: str, address: str) -> None:
    assert local_address(host) == address


def test_every_service_has_a_distinct_name_and_port_setting() -> None:
    specs = services(get_settings())
    assert len({s.name for s in specs}) == len(specs)
    assert len({s.port_setting for s in specs}) == len(specs)


def test_the_embedded_api_may_read_the_demo_samples_and_the_admins_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from selfserve.runtime.demo import DATA
    from selfserve.settings import Settings

    monkeypatch.setenv("SELFSERVE_DATA__FILE_ROOTS", json.dumps([str(tmp_path)]))
    get_settings.cache_clear()
    api = next(s for s in services(get_settings()) if s.name == "api")
    roots = json.loads(api.env["SELFSERVE_DATA__FILE_ROOTS"])
    assert roots == [str(tmp_path), str(DATA.resolve())]
    for key, value in api.env.items():
        monkeypatch.setenv(key, value)
    assert Settings().data.file_roots == [tmp_path, DATA.resolve()]
    console = next(s for s in services(get_settings()) if s.name == "console")
    assert "SELFSERVE_DATA__FILE_ROOTS" not in console.env
