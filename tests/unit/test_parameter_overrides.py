"""`darkroom run --parameter-overrides` and DARKROOM_PARAMETER_OVERRIDES read alike, numbers checked as CloudFormation
checks them; no stack is started."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from darkroom_local import cli
from darkroom_local.template import LocalTemplate


class Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class FakeStack:
        def __init__(self, config: Any) -> None:
            seen["parameters"] = dict(config.parameters)
            raise ValueError("captured")

    import darkroom_local.stack as stack_module

    monkeypatch.setattr(stack_module, "LocalStack", FakeStack)
    monkeypatch.setattr(cli, "_port_free", lambda port: True)
    return seen


def test_the_option_takes_a_quoted_value_with_a_space(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli.darkroom, ["run", "--parameter-overrides", "AlarmEmail='a b'"])
    assert captured["parameters"] == {"AlarmEmail": "a b"}, result.output


def test_the_environment_variable_takes_what_the_option_takes(captured: dict[str, Any]) -> None:
    # README: DARKROOM_PARAMETER_OVERRIDES holds "template parameters, as --parameter-overrides takes them"
    result = CliRunner().invoke(cli.darkroom, ["run"], env={"DARKROOM_PARAMETER_OVERRIDES": "AlarmEmail='a b'"})
    assert captured.get("parameters") == {"AlarmEmail": "a b"}, (result.exit_code, result.output)


@pytest.mark.parametrize("value", ["1_000", "nan", "1e3", "0x10", "", "-"])
def test_checked_numbers_are_refused_as_cloudformation_refuses_them(value: str) -> None:
    with pytest.raises(ValueError):
        LocalTemplate({"ApiReservedConcurrency": value}, checked=True)


@pytest.mark.parametrize("value", ["20", "20.5", "-1", ".5", "7."])
def test_numbers_cloudformation_takes_are_taken(value: str) -> None:
    from darkroom_local.template import parameter_problem

    assert parameter_problem("N", value, {"Type": "Number"}) is None


def test_the_option_wins_over_the_environment(captured: dict[str, Any]) -> None:
    CliRunner().invoke(
        cli.darkroom, ["run", "--parameter-overrides", "Stage=dev"], env={"DARKROOM_PARAMETER_OVERRIDES": "Stage=prod"}
    )
    assert captured["parameters"] == {"Stage": "dev"}
