"""Settings from FETALHC_* variables: typed, refused at start with the variable and the choices, secrets hidden."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from worker.core.settings import AcceptOther, Device, LogFormat, Settings


def test_defaults_are_those_of_the_readme(fetalhc_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.batch_size, s.task_time_limit_s, s.max_attempts, s.max_frames, s.metrics_port) == (8, 300.0, 10, 16, 9808)
    assert (s.device, s.growth_standard, s.accept_other, s.log_format) == ("cpu", "intergrowth", "ignore", "text")
    assert (s.head_plane_gate, s.head_plane_threshold, s.stale_after_s) == ("on", None, 2 * 300.0 + 120.0)
    assert s.api_token is None and s.broker_url == "redis://localhost:6379/0"
    assert isinstance(s.device, Device) and isinstance(s.log_format, LogFormat)


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("FETALHC_BATCH_SIZE", "8.5", "FETALHC_BATCH_SIZE='8.5': input should be a valid integer"),  # was silently 8
    ("FETALHC_MAX_ATTEMPTS", "ten", "FETALHC_MAX_ATTEMPTS='ten'"),
    ("FETALHC_TASK_TIME_LIMIT", "5 minutes", "FETALHC_TASK_TIME_LIMIT='5 minutes'"),
    ("FETALHC_DEVICE", "gpu", "FETALHC_DEVICE='gpu': choose one of: auto, cpu, cuda"),
    ("FETALHC_GROWTH_STANDARD", "fenton", "choose one of: intergrowth, who"),
    ("FETALHC_ACCEPT_OTHER", "drop", "choose one of: ignore, refuse"),
    ("FETALHC_LOG_FORMAT", "xml", "FETALHC_LOG_FORMAT='xml': choose one of: text, json"),
    ("FETALHC_TASK_TIME_LIMIT", "0", "FETALHC_TASK_TIME_LIMIT must be above 0"),
])
def test_an_invalid_value_is_refused_naming_the_variable(fetalhc_env: pytest.MonkeyPatch, name: str, value: str,
                                                         needle: str) -> None:
    fetalhc_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)  # older `except ValueError` callers still catch it


def test_blank_values_are_unset_and_numbers_are_typed(fetalhc_env: pytest.MonkeyPatch) -> None:
    fetalhc_env.setenv("FETALHC_BATCH_SIZE", " 4 ")
    fetalhc_env.setenv("FETALHC_API_TOKEN", "   ")
    fetalhc_env.setenv("FETALHC_ACCEPT_OTHER", "refuse")
    s = Settings()
    assert (s.batch_size, s.api_token, s.accept_other) == (4, None, AcceptOther.REFUSE)
    assert Settings(batch_size=2).batch_size == 2  # keyword arguments (field names) win over the environment


def test_secrets_are_secret_str_and_never_in_a_repr(fetalhc_env: pytest.MonkeyPatch) -> None:
    fetalhc_env.setenv("FETALHC_API_TOKEN", "tok-s3cret")
    fetalhc_env.setenv("FETALHC_DICOMWEB_USER", "alice")
    fetalhc_env.setenv("FETALHC_DICOMWEB_PASSWORD", "pw-s3cret")
    s = Settings()
    assert s.api_token is not None and s.api_token.get_secret_value() == "tok-s3cret"
    assert s.dicomweb_password is not None and s.dicomweb_password.get_secret_value() == "pw-s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


def test_replace_validates_like_the_environment(fetalhc_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.replace(listen_port=11113).listen_port == 11113 and s.listen_port == 11112
    with pytest.raises(ConfigError, match="FETALHC_LISTEN_PORT=0 is not a TCP port"):
        s.replace(listen_port=0)
    with pytest.raises(Exception):  # noqa: B017 - frozen: settings are read once and never changed in place
        s.batch_size = 3  # type: ignore[misc]


def test_the_cli_refuses_a_bad_setting_at_start_with_one_line(fetalhc_env: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    fetalhc_env.setenv("FETALHC_BATCH_SIZE", "8.5")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fetalhc db: error: FETALHC_BATCH_SIZE='8.5': input should be a valid integer, unable to parse "
                   "string as an integer"]
