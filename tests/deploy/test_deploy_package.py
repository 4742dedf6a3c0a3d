"""`make package STAGE=prod` for real: chalice package + merge template, then AWS's linter on the result.

Slow-ish (chalice pip-downloads the Lambda wheels; PyPI must be reachable, as in CI), so the package is built
once per module into a temporary directory (never the repo's dist/) and shared by the tests below.
"""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devtools import package

from .support import CONFIG, ROOT, load, policy

DEV_ONLY = ("moto", "pytest", "click", "plivo", "hypothesis", "cfn-lint", "ruff", "chalice")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "prod"
    assert package.main(["--stage", "prod", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sam(built) -> dict:
    return json.loads((built / "sam.json").read_text())


@pytest.fixture(scope="module")
def zip_names(built) -> list[str]:
    with zipfile.ZipFile(built / "deployment.zip") as zf:
        return zf.namelist()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> set[str]:
    """Distributions requirements.txt pulls in (transitively), as installed in this venv."""
    todo = [
        Requirement(line.split("#")[0].strip())
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in metadata.requires(req.name) or [])
    return seen


# --- the build ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_package_writes_template_and_zip_and_lints_clean(built):
    assert (built / "sam.json").is_file() and (built / "deployment.zip").is_file()
    assert package.lint(built / "sam.json") == ""
    assert package.zip_problems(built / "deployment.zip") == []


@pytest.mark.slow
def test_cfn_lint_is_not_blind(built, tmp_path):
    """The clean report above means something: the same linter flags a broken copy of the template."""
    broken = json.loads((built / "sam.json").read_text())
    broken["Resources"]["CallsTable"]["Properties"]["BillingMode"] = "FREE"
    (tmp_path / "sam.json").write_text(json.dumps(broken))
    assert "'FREE' is not one of" in package.lint(tmp_path / "sam.json")


def test_make_package_runs_this_script_for_the_stage():
    dry = subprocess.run(
        ["make", "-n", "package", "STAGE=prod"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "-m devtools.package --stage prod" in dry


# --- what the template holds ---------------------------------------------------------------------------


@pytest.mark.slow
def test_template_holds_bucket_table_and_both_functions(sam):
    res = sam["Resources"]
    assert res["TemplateBucket"]["Type"] == "AWS::S3::Bucket"
    assert res["TemplateBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    table = res["CallsTable"]["Properties"]
    assert [g["IndexName"] for g in table["GlobalSecondaryIndexes"]] == [
        "status-due_at-index",
        "campaign-due_at-index",
        "outbox-index",
    ]
    assert res["CampaignsTable"]["Properties"]["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True

    api, launcher = res["APIHandler"], res["LaunchCalls"]
    assert api["Type"] == launcher["Type"] == "AWS::Serverless::Function"
    assert api["Properties"]["Handler"] == "app.app"
    assert launcher["Properties"]["Handler"] == "app.launch_calls"
    (event,) = launcher["Properties"]["Events"].values()
    assert event == {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    assert res["RestAPI"]["Type"] == "AWS::Serverless::Api"

    sizes = load(CONFIG)["lambda_functions"]
    for function, name in ((api, "api_handler"), (launcher, "launch_calls")):
        assert function["Properties"]["MemorySize"] == sizes[name]["lambda_memory_size"]
        assert function["Properties"]["Timeout"] == sizes[name]["lambda_timeout"]


@pytest.mark.slow
def test_template_wires_environment_into_both_functions(sam):
    stage_env = load(CONFIG)["stages"]["prod"]["environment_variables"]
    for name in ("APIHandler", "LaunchCalls"):
        env = sam["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert env["TEMPLATE_BUCKET"] == {"Ref": "TemplateBucket"}
        assert env["CALLS_TABLE"] == {"Ref": "CallsTable"}
        assert env["PLIVO_AUTH_TOKEN_PARAM"] == {"Ref": "PlivoAuthTokenParam"}
        assert env["PLIVO_AUTH_ID"] == {"Ref": "PlivoAuthId"}
        for key, value in stage_env.items():  # chalice's stage settings survive the merge
            assert env[key] == value
    launcher = sam["Resources"]["LaunchCalls"]["Properties"]["Environment"]["Variables"]
    assert "${RestAPI}.execute-api." in json.dumps(launcher["PUBLIC_BASE_URL"])
    assert "PlivoAuthTokenParam" in sam["Parameters"]


@pytest.mark.slow
def test_both_roles_carry_exactly_the_policy_file(sam):
    """One source of truth: the policy the IAM test exercises is the one in the package."""
    expected = policy("prod")
    for name in ("APIHandler", "LaunchCalls"):
        role_ref = sam["Resources"][name]["Properties"]["Role"]["Fn::GetAtt"][0]
        role = sam["Resources"][role_ref]
        assert role["Type"] == "AWS::IAM::Role"
        (inline,) = role["Properties"]["Policies"]
        assert inline["PolicyDocument"] == expected
        assert "ManagedPolicyArns" not in role["Properties"]


# --- what the zip holds --------------------------------------------------------------------------------


@pytest.mark.slow
def test_zip_holds_app_chalicelib_and_runtime_dependencies_only(zip_names):
    ours = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "chalicelib").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert "app.py" in zip_names
    assert sorted(n for n in zip_names if n.startswith("chalicelib/")) == ours
    chalice_shim = sorted(n for n in zip_names if n.startswith("chalice/"))
    assert chalice_shim == ["chalice/__init__.py", "chalice/app.py"]

    closure = runtime_closure()
    shipped = {_norm(n.split("/")[0].split("-", 1)[0]) for n in zip_names if ".dist-info/" in n}
    assert shipped <= closure, shipped - closure
    runtime = {"boto3", "requests", "jinja2", "defusedxml", "tzdata", "aws-lambda-powertools", "phonenumbers"}
    assert runtime <= shipped
    assert not shipped & {_norm(d) for d in DEV_ONLY}

    providers = metadata.packages_distributions()
    for top in {n.split("/")[0] for n in zip_names} - {"app.py", "chalicelib", "chalice"}:
        if top.endswith((".dist-info", ".data")):  # wheel metadata and data, named for their distribution
            assert _norm(top.split("-", 1)[0]) in closure, top
            continue
        module = top.removesuffix(".py")
        assert {_norm(d) for d in providers.get(module, [])} & closure, f"{top} is not a runtime dependency"
    # The CLI is its own package (callflow_cli/), never deployed; no module of it hides in chalicelib/.
    assert not any(n.startswith("chalicelib/") and "cli" in n.rsplit("/", 1)[-1] for n in zip_names)
    tops = ("tests/", "devtools/", "bench/", "callflow_cli/", "moto/", "pytest/", "_pytest/", "click/")
    for forbidden in (*tops, "plivo/"):
        assert not any(n.startswith(forbidden) for n in zip_names), forbidden


def test_package_never_wipes_a_directory_that_is_not_a_package(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(package.PackageError, match="refusing to overwrite"):
        package.build("prod", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_zip_check_flags_dev_entries(tmp_path):
    path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in (
            "app.py",
            "chalicelib/__init__.py",
            "chalicelib/__pycache__/x.cpython-311.pyc",
            "moto/__init__.py",
            "click-8.5.1.dist-info/METADATA",
            "tests/test_x.py",
            "chalice/cli/__init__.py",
            "jinja2/__init__.py",
        ):
            zf.writestr(name, "")
    problems = package.zip_problems(path)
    flagged = " ".join(problems)
    for name in ("moto/", "click-8.5.1", "tests/", "chalice/cli", "__pycache__"):
        assert name in flagged
    assert "jinja2" not in flagged and len(problems) == 5
