"""`make package STAGE=prod`: build the CloudFormation package for one stage and prove it is deployable.

Chalice zips everything under chalicelib/ (caches included) and pip-installs requirements.txt, so the build
runs in a clean staging copy holding only what Lambda needs: app.py, chalicelib's sources, .chalice config and
policies, requirements.txt. The result is then checked, because a package that merely builds is not enough:

* `deployment.zip` holds app.py, chalicelib, chalice's runtime shim and runtime dependencies only
  (no tests, dev tools, moto, pytest, click, plivo ...);
* `sam.json` is clean under AWS's own linter, cfn-lint.

Usage: python -m devtools.package --stage prod [--out DIR]   (default out: dist/<stage>)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MERGE_TEMPLATE = ROOT / "infra" / "resources.json"
BIN = Path(sys.executable).parent

# Top-level zip entries that must never ship: our dev tools and tests, and the dev-only dependencies
# (requirements-dev.txt) with the packages they pull in.
FORBIDDEN_TOP_LEVEL = frozenset(
    {
        "tests",
        "devtools",
        "bench",
        "templates",
        "infra",
        "dist",
        "moto",
        "pytest",
        "_pytest",
        "pluggy",
        "click",
        "callflow_cli",
        "plivo",
        "hypothesis",
        "cfnlint",
        "samtranslator",
        "ruff",
        "werkzeug",
        "flask",
        "responses",
        "xmltodict",
        "jsonschema",
        "pydantic",
        "networkx",
    }
)
OUTPUTS = frozenset({"sam.json", "deployment.zip"})
CHALICE_RUNTIME = frozenset({"chalice/app.py", "chalice/__init__.py"})


class PackageError(Exception):
    """The package could not be built, or what was built must not be deployed."""


def _ignore_junk(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo")) or n.startswith(".")}


def stage_project(staging: Path) -> None:
    """Copy exactly what Chalice needs to build the Lambda package into `staging`."""
    shutil.copy2(ROOT / "app.py", staging / "app.py")
    shutil.copy2(ROOT / "requirements.txt", staging / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", staging / "chalicelib", ignore=_ignore_junk)
    (staging / ".chalice").mkdir()
    for path in (ROOT / ".chalice").glob("*.json"):
        shutil.copy2(path, staging / ".chalice" / path.name)
    if (ROOT / "vendor").is_dir():
        shutil.copytree(ROOT / "vendor", staging / "vendor", ignore=_ignore_junk)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def chalice_package(staging: Path, stage: str, out: Path) -> None:
    env = dict(os.environ)
    # The template uses AWS::Region; chalice only insists that some region is configured.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [
        str(BIN / "chalice"),
        "package",
        "--pkg-format",
        "cloudformation",
        "--stage",
        stage,
        "--merge-template",
        str(MERGE_TEMPLATE),
        str(out),
    ]
    result = _run(cmd, staging, env)
    if result.returncode != 0:
        raise PackageError(f"chalice package failed:\n{result.stdout}{result.stderr}".rstrip())


def zip_problems(zip_path: Path) -> list[str]:
    """Entries of the deployment zip that must not be deployed (empty list: the zip is clean)."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    if "app.py" not in names:
        problems.append("app.py is missing")
    if not any(n.startswith("chalicelib/") for n in names):
        problems.append("chalicelib/ is missing")
    for name in names:
        top = name.split("/", 1)[0]
        base = top.split("-", 1)[0].lower() if top.endswith((".dist-info", ".egg-info")) else top.lower()
        if base in FORBIDDEN_TOP_LEVEL:
            problems.append(f"dev-only entry {name}")
        elif top == "chalice" and name not in CHALICE_RUNTIME:
            problems.append(f"chalice tooling entry {name}")
        elif top == "chalicelib" and ("__pycache__/" in name or name.endswith((".pyc", ".pyo"))):
            problems.append(f"bytecode cache {name}")
    return problems


def lint(template: Path) -> str:
    """cfn-lint's report on the template ('' when clean)."""
    result = _run([str(BIN / "cfn-lint"), str(template)], ROOT, dict(os.environ))
    return (result.stdout + result.stderr).strip()


def build(stage: str, out: Path, check: bool = True) -> Path:
    """Write `sam.json` and `deployment.zip` for `stage` into `out`; with `check`, refuse a bad package."""
    if not (ROOT / ".chalice" / "config.json").is_file():
        raise PackageError(".chalice/config.json not found")
    out = out.resolve()
    if out.exists():
        strangers = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS)
        if strangers:
            raise PackageError(f"refusing to overwrite {out}: it holds {strangers[0]}, not only a package")
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="callflow-package-") as tmp:
        staging = Path(tmp)
        stage_project(staging)
        chalice_package(staging, stage, out)
    if check:
        problems = zip_problems(out / "deployment.zip")
        if problems:
            raise PackageError("deployment.zip must not ship:\n  " + "\n  ".join(problems))
        report = lint(out / "sam.json")
        if report:
            raise PackageError(f"cfn-lint reports problems in {out / 'sam.json'}:\n{report}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.package", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default="prod", help="Chalice stage (dev, prod)")
    parser.add_argument("--out", type=Path, help="output directory (default: dist/<stage>)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "dist" / args.stage
    try:
        built = build(args.stage, out)
    except PackageError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    size = (built / "deployment.zip").stat().st_size / 1e6
    print(f"{built / 'sam.json'}\n{built / 'deployment.zip'} ({size:.1f} MB)\ncfn-lint: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
