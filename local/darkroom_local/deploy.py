"""What `make build` and `make deploy` need before they hand over to the SAM CLI.

`sam build` builds without a container only with the functions' runtime (python3.13) on PATH, and it fails with a
validation error that does not say where to get one when the machine's default Python is another. `sam deploy`
without credentials or a region fails deep in botocore. Both are checked here first, each failure one line.

    python -m darkroom_local.deploy runtime-dir     # prints the directory holding the runtime's python
    python -m darkroom_local.deploy compile DIR     # compiles DIR's Python to bytecode with the runtime's python
    python -m darkroom_local.deploy credentials     # says which account settings a deploy would use

Bytecode is compiled into the build because Lambda's file system is read-only: a `.pyc` written at run time never
persists, so without it every cold start compiles every module it imports again. It is compiled by the runtime's
own Python (a .pyc is only read by the version that wrote it) and checked by nothing (`unchecked-hash`): a deployed
zip's file times are not the build's, and a timestamp check that fails means compiling again, at every cold start.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3

from darkroom_local.template import TEMPLATE, load_template


class Missing(Exception):
    """Something a build or deploy needs and the machine lacks: the message says what to do about it."""


def runtime_version(template: Path = TEMPLATE) -> str:
    """The Python version the functions run on, from the template's Globals (so it is written once): '3.13'."""
    runtime = load_template(template)["Globals"]["Function"]["Runtime"]
    match = re.fullmatch(r"python(\d+\.\d+)", runtime)
    if not match:
        raise Missing(f"template runtime {runtime!r} is not a Python runtime")
    return match.group(1)


def _is_version(binary: str, version: str) -> bool:
    try:
        shown = subprocess.run(
            [binary, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shown.returncode == 0 and shown.stdout.strip() == version


def _pyenv_root(home: Path) -> Path:
    return Path(os.environ.get("PYENV_ROOT") or home / ".pyenv")


def _found(version: str, home: Path) -> str | None:
    """The directory of the first python<version> that says it is that version: PATH, then pyenv's and uv's own
    installations, newest first."""
    name = f"python{version}"
    found = [shutil.which(name)]
    found += sorted(glob.glob(str(_pyenv_root(home) / "versions" / f"{version}.*" / "bin" / name)), reverse=True)
    uv_root = Path(os.environ.get("UV_PYTHON_INSTALL_DIR") or home / ".local" / "share" / "uv" / "python")
    found += sorted(glob.glob(str(uv_root / f"cpython-{version}.*" / "bin" / name)), reverse=True)
    return next((str(Path(path).parent) for path in found if path and _is_version(path, version)), None)


def _install(version: str, home: Path) -> bool:
    """Installs the runtime's Python with pyenv or uv when either is here; False when neither is."""
    own_pyenv = _pyenv_root(home) / "bin" / "pyenv"
    pyenv = shutil.which("pyenv") or (str(own_pyenv) if own_pyenv.exists() else None)
    if pyenv:
        command = [pyenv, "install", "--skip-existing", version]
    elif shutil.which("uv"):
        command = ["uv", "python", "install", version]
    else:
        return False
    print(f"installing Python {version} for the Lambda runtime: {' '.join(command)}", file=sys.stderr)
    return subprocess.run(command, stdout=sys.stderr).returncode == 0


def runtime_python_dir(template: Path = TEMPLATE, home: Path | None = None, install: bool = True) -> str:
    """The directory of a python<runtime> binary that really is that version, installing one when allowed."""
    version = runtime_version(template)
    home = home or Path.home()
    found = _found(version, home)
    if found is None and install and _install(version, home):
        found = _found(version, home)
    if found is None:
        raise Missing(
            f"sam build needs python{version}, the functions' runtime, and found none on PATH, in pyenv or in uv: "
            f"install it (pyenv install {version}, uv python install {version}, or your system's python{version}) "
            "and run make build again"
        )
    return found


def compile_bytecode(tree: Path, python_dir: str) -> None:
    """Every .py under `tree` compiled by the runtime's python, into the __pycache__ beside it, always used."""
    python = str(Path(python_dir) / f"python{runtime_version()}")
    command = [python, "-m", "compileall", "-q", "-f", "-j", "0", "--invalidation-mode", "unchecked-hash", str(tree)]
    if subprocess.run(command, stdout=sys.stderr).returncode != 0:
        raise Missing(f"compiling {tree} to bytecode failed; see the lines above")


def deploy_account() -> str:
    """Which credentials and region `sam deploy` would use, without calling AWS; Missing when either is absent."""
    session = boto3.Session()
    if session.get_credentials() is None:
        raise Missing(
            "make deploy needs AWS credentials: set AWS_PROFILE (aws configure, aws sso login) "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if not session.region_name:
        raise Missing("make deploy needs an AWS region: set AWS_DEFAULT_REGION or the profile's region")
    return f"profile {session.profile_name or 'default'}, region {session.region_name}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["runtime-dir"]:
            print(runtime_python_dir())
        elif len(args) == 2 and args[0] == "compile":
            compile_bytecode(Path(args[1]), runtime_python_dir())
        elif args == ["credentials"]:
            print(f"deploying with {deploy_account()}", file=sys.stderr)
        else:
            print("usage: python -m darkroom_local.deploy runtime-dir | compile DIR | credentials", file=sys.stderr)
            return 2
    except Missing as missing:
        print(missing, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
