"""When the compiled kernels do not import, the error says what is really wrong and what to do (issue 9, item 19):
a source tree without kernels shadowing an installed package, a tree never built, a build for another Python.

Each case imports a copy of the package's sources (no kernels) from the current folder, as ``python`` does in
the repository folder, with the installed distribution's record faked beside it.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import bms

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def _tree(tmp_path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(Path(bms.__file__).parent, tree / "bms",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return tree


def _installed(tmp_path, with_kernels: bool) -> Path:
    """A site folder whose distribution record lists the kernels (an ordinary ``pip install .``) or not."""
    site = tmp_path / "site"
    info = site / "assb_bms_emulator-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: assb-bms-emulator\nVersion: 0.1.0\n")
    files = ["bms/__init__.py"] + ([f"bms/_ext/plant{SUFFIX}"] if with_kernels else [])
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return site


def _import_error(tree: Path, site: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("BMS_KERNELS", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", "import bms"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bms.errors.KernelBuildError: "), done.stderr
    return last


def test_a_source_tree_shadowing_an_installed_package_is_named(tmp_path):
    tree = _tree(tmp_path)
    message = _import_error(tree, _installed(tmp_path, with_kernels=True))
    assert f"imported the source tree {tree / 'bms'}" in message
    assert f"ahead of the installed package {tmp_path / 'site' / 'bms'}" in message
    assert f"pip install -e . in {tree}" in message and "python -P" in message
    assert "BMS_KERNELS=numpy" in message


def test_a_tree_never_built_says_how_to_build_it(tmp_path):
    tree = _tree(tmp_path)
    message = _import_error(tree, _installed(tmp_path, with_kernels=False))
    assert f"never built in {tree / 'bms' / '_ext'}" in message and f"in {tree}: pip install -e ." in message


def test_a_broken_build_is_named_with_its_files(tmp_path):
    tree = _tree(tmp_path)
    (tree / "bms" / "_ext" / f"plant{SUFFIX}").write_bytes(b"\x7fELF not a library")
    message = _import_error(tree, _installed(tmp_path, with_kernels=False))
    assert f"plant{SUFFIX}" in message and "rebuild them: pip install -e ." in message


@pytest.mark.skipif(not list((Path(bms.__file__).parent / "_ext").glob("*.so")),
                    reason="the package is not an in-place (editable) build")
def test_the_readme_install_imports_the_kernels_from_the_repository_folder():
    root = Path(bms.__file__).parent.parent
    code = "import bms, bms._ext.plant as p; print(bms.KERNEL_BACKEND, p.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "BMS_KERNELS"})
    assert done.returncode == 0, done.stderr
    backend, path = done.stdout.split()
    assert backend == "compiled" and Path(path).parent == root / "bms" / "_ext"
