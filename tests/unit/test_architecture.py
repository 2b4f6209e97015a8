"""House rules a reader checks first: the UI talks to backend/ only."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"boto3", "botocore", "torch", "sqlite3", "sagemaker"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def ui_files() -> list[Path]:
    return [REPO / "app.py", *sorted((REPO / "views").glob("*.py")), *sorted((REPO / "ui").glob("*.py"))]


def test_ui_never_imports_sdks_or_sqlite():
    offenders = {str(p.relative_to(REPO)): sorted(imported_roots(p) & FORBIDDEN) for p in ui_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "page.py"
    sample.write_text("import os\nfrom boto3.session import Session\nimport torch.nn as nn\n")
    assert imported_roots(sample) & FORBIDDEN == {"boto3", "torch"}


def test_only_get_backend_chooses_the_backend():
    users = [p for p in REPO.joinpath("backend").rglob("*.py") if "LocalBackend(" in p.read_text()]
    assert [p.relative_to(REPO).as_posix() for p in users if p.name != "backend.py"] == ["backend/__init__.py"]


def test_no_pages_folder_beside_app():
    """A pages/ folder would switch Streamlit into its folder-based navigation on deep links."""
    assert not (REPO / "pages").exists()
