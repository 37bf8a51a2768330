"""The ``pipelines`` section of the settings: defaults, overrides, and the secrets derived for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from selfserve.settings import PipelinesSettings, Settings, get_settings


def test_every_pipelines_setting_is_described() -> None:
    for name, info in PipelinesSettings.model_fields.items():
        assert info.description, f"pipelines.{name} has no description"


def test_defaults_reach_the_embedded_prefect_and_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELFSERVE_PIPELINES__ENABLED")
    get_settings.cache_clear()
    s = get_settings()
    assert s.pipelines.enabled
    assert s.prefect_url == f"http://127.0.0.1:{s.pipelines.prefect_port}/api"
    assert s.runner_api_url == f"http://127.0.0.1:{s.server.api_port}"
    assert s.pipelines.flows_dir.is_dir() and (s.pipelines.flows_dir / "ingest.py").is_file()


def test_the_unit_suite_runs_without_pipelines() -> None:
    assert get_settings().pipelines.enabled is False  # tests/conftest.py: no Prefect server here


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSERVE_PIPELINES__PREFECT_URL", "http://prefect.internal:4200/api")
    monkeypatch.setenv("SELFSERVE_PIPELINES__RUNNER_API_URL", "http://api.internal:8700")
    monkeypatch.setenv("SELFSERVE_PIPELINES__CHECK_TIMEOUT", "7.5")
    monkeypatch.setenv("SELFSERVE_PIPELINES__MAX_CODE_BYTES", "1048576")
    get_settings.cache_clear()
    s = get_settings()
    assert s.prefect_url == "http://prefect.internal:4200/api"
    assert s.runner_api_url == "http://api.internal:8700"
    assert (s.pipelines.check_timeout, s.pipelines.max_code_bytes) == (7.5, 1048576)


def test_the_api_url_for_runs_follows_the_servers_address(tmp_path: Path) -> None:
    s = Settings.model_validate({"home": tmp_path, "server": {"host": "10.0.0.5", "api_port": 9000}})
    assert s.runner_api_url == "http://10.0.0.5:9000"
    s = Settings.model_validate({"home": tmp_path, "server": {"host": "0.0.0.0", "api_port": 9000}})
    assert s.runner_api_url == "http://127.0.0.1:9000"  # a wildcard bind is no address to call


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("check_timeout", 0),
        ("heartbeat_seconds", -1),
        ("lost_after", 0),
        ("max_code_bytes", 0),
        ("prefect_port", 70000),
        ("env_build_timeout", 0),
        ("max_run_time", "forever"),
        ("max_run_time", "0s"),
    ],
)
def test_nonsense_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        PipelinesSettings.model_validate({field: value})


def test_prefect_auth_and_runner_key_are_derived_distinct_and_stable(tmp_path: Path) -> None:
    s = Settings.model_validate({"home": tmp_path, "secret_key": "k" * 40})
    user, _, password = s.prefect_auth_string().partition(":")
    assert user == "selfserve" and len(password) == 64
    assert s.runner_key() != password
    again = Settings.model_validate({"home": tmp_path, "secret_key": "k" * 40})
    assert (again.prefect_auth_string(), again.runner_key()) == (s.prefect_auth_string(), s.runner_key())
    other = Settings.model_validate({"home": tmp_path, "secret_key": "j" * 40})
    assert other.runner_key() != s.runner_key()


def test_a_configured_prefect_auth_wins(tmp_path: Path) -> None:
    s = Settings.model_validate({"home": tmp_path, "pipelines": {"prefect_auth": "ops:hunter2"}})
    assert s.prefect_auth_string() == "ops:hunter2"
    assert "hunter2" not in repr(s.pipelines)
