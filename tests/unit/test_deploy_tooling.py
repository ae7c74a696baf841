"""What `make build` and `make deploy` check before the SAM CLI runs: the runtime's Python and AWS settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from darkroom_local import deploy
from darkroom_local.template import load_template


def _fake_python(path: Path, shows: str) -> Path:
    """An executable that answers the version question the way a real python<version> would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {shows}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A machine with nothing on PATH and an empty home: no pyenv, no uv, no python3.13."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    monkeypatch.delenv("UV_PYTHON_INSTALL_DIR", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    return bin_dir, home


def test_the_runtime_version_comes_from_the_template():
    assert deploy.runtime_version() == "3.13"


def test_the_layer_is_built_for_the_functions_runtime_and_architecture():
    template = load_template()
    function = template["Globals"]["Function"]
    layer = template["Resources"]["DarkroomLayer"]
    assert layer["Metadata"]["BuildMethod"] == function["Runtime"]
    assert layer["Properties"]["CompatibleRuntimes"] == [function["Runtime"]]
    assert [layer["Metadata"]["BuildArchitecture"]] == function["Architectures"]
    assert layer["Properties"]["CompatibleArchitectures"] == function["Architectures"]


def test_a_python_on_path_is_used_when_it_is_the_runtime_version(machine):
    bin_dir, home = machine
    _fake_python(bin_dir / "python3.13", "3.13")
    assert deploy.runtime_python_dir(home=home, install=False) == str(bin_dir)


def test_a_misnamed_python_is_passed_over_for_pyenvs_real_one(machine):
    bin_dir, home = machine
    _fake_python(bin_dir / "python3.13", "3.11")
    _fake_python(home / ".pyenv" / "versions" / "3.13.2" / "bin" / "python3.13", "3.13")
    assert deploy.runtime_python_dir(home=home, install=False) == str(home / ".pyenv" / "versions" / "3.13.2" / "bin")


def test_uvs_managed_python_is_found(machine):
    _, home = machine
    uv_bin = home / ".local" / "share" / "uv" / "python" / "cpython-3.13.5-linux-aarch64-gnu" / "bin"
    _fake_python(uv_bin / "python3.13", "3.13")
    assert deploy.runtime_python_dir(home=home, install=False) == str(uv_bin)


def test_pyenv_installs_the_runtime_when_none_is_found(machine):
    _, home = machine
    pyenv = home / ".pyenv" / "bin" / "pyenv"
    made = home / ".pyenv" / "versions" / "3.13.9" / "bin"
    pyenv.parent.mkdir(parents=True)
    pyenv.write_text(
        f'#!/bin/sh\nPATH=/usr/bin:/bin\n[ "$1 $2 $3" = "install --skip-existing 3.13" ] || exit 9\n'
        f"mkdir -p {made}\nprintf '#!/bin/sh\\necho 3.13\\n' > {made}/python3.13\nchmod +x {made}/python3.13\n"
    )
    pyenv.chmod(0o755)
    assert deploy.runtime_python_dir(home=home) == str(made)


def test_no_python_and_no_installer_is_one_line_saying_what_to_do(machine, capsys, monkeypatch):
    _, home = machine
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    assert deploy.main(["runtime-dir"]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.count("\n") == 1
    assert "python3.13" in said.err and "pyenv install 3.13" in said.err and "uv python install 3.13" in said.err


@pytest.fixture
def no_aws(tmp_path, monkeypatch):
    for name in ("PROFILE", "DEFAULT_PROFILE", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "DEFAULT_REGION"):
        monkeypatch.delenv(f"AWS_{name}", raising=False)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_deploying_without_credentials_is_refused_before_sam_runs(no_aws, capsys):
    assert deploy.main(["credentials"]) == 1
    assert "make deploy needs AWS credentials" in capsys.readouterr().err


def test_deploying_without_a_region_is_refused(no_aws):
    no_aws.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    no_aws.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    with pytest.raises(deploy.Missing, match="region"):
        deploy.deploy_account()


def test_the_deploy_account_names_region_but_never_the_secret(no_aws):
    no_aws.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    no_aws.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    no_aws.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    said = deploy.deploy_account()
    assert "eu-west-1" in said and "not-a-real-secret" not in said and "AKIA" not in said


def test_unknown_arguments_are_a_usage_error(capsys):
    assert deploy.main(["deploy-now"]) == 2
    assert "usage" in capsys.readouterr().err


def test_the_build_is_compiled_to_bytecode_that_is_used_without_checking_its_source(tmp_path, monkeypatch):
    import subprocess
    import sys

    # Given a built function's source (the runtime stands in for the interpreter running the tests)
    monkeypatch.setattr(deploy, "runtime_version", lambda template=None: f"{sys.version_info[0]}.{sys.version_info[1]}")
    (tmp_path / "app.py").write_text("VALUE = 'compiled'\n")
    # When the build is compiled
    deploy.compile_bytecode(tmp_path, str(Path(sys.executable).parent))
    # Then its bytecode is hash-based and unchecked (flags 0b01 in the header): a deployed zip's file times differ
    # from the build's, and a check that fails would mean compiling again at every cold start
    (compiled,) = (tmp_path / "__pycache__").glob("app.*.pyc")
    assert int.from_bytes(compiled.read_bytes()[4:8], "little") == 0b01
    # and an interpreter that may not write bytecode (Lambda's read-only file system) runs it as compiled
    (tmp_path / "app.py").write_text("VALUE = 'source'\n")
    shown = subprocess.run(
        [sys.executable, "-c", "import app; print(app.VALUE)"],
        cwd=tmp_path,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "compiled"
