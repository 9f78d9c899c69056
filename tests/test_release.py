"""The release: sdist and wheel built from a clean copy of the repository, their contents and metadata (twine), the
wheel and the sdist installed into fresh virtual environments (slow), the type check (mypy) and the changelog."""

import email.parser
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

from sb3_brc import SB3_BRC_VERSION

ROOT = pathlib.Path(__file__).parents[1]


def _tracked_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the release is built from the tracked files")
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> pathlib.Path:
    """``python -m build`` (sdist, then the wheel from the sdist) of the tracked files, without build isolation (the
    test environment's setuptools; no network)."""
    pytest.importorskip("build", reason="needs the dev extra (build)")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in _tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return out


def _package_files() -> set[str]:
    """The tracked files of the package (modules and data), as paths inside the wheel."""
    return {name for name in _tracked_files() if name.startswith("sb3_brc/")}


def test_wheel_and_sdist_hold_the_package_its_data_and_metadata(dist):
    (wheel,) = dist.glob("sb3_brc-*.whl")
    (sdist,) = dist.glob("sb3_brc-*.tar.gz")
    assert wheel.name == f"sb3_brc-{SB3_BRC_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"sb3_brc-{SB3_BRC_VERSION}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    package = {name for name in names if name.startswith("sb3_brc/")}
    assert package == _package_files()  # every module and data file, nothing else
    assert {"sb3_brc/py.typed", "sb3_brc/version.txt", "sb3_brc/envs/paper_final_scores.csv"} <= package
    assert f"{info}/licenses/LICENSE" in names
    assert "sb3-brc = sb3_brc.cli:main" in entry_points
    assert metadata["Name"] == "sb3-brc" and metadata["Version"] == SB3_BRC_VERSION
    assert metadata["Requires-Python"] == ">=3.10" and metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown" and "# sb3-brc" in metadata.get_payload()
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert any(url.startswith("Paper, https://arxiv.org/") for url in metadata.get_all("Project-URL"))
    assert {"wandb", "bench", "all", "dev"} <= set(metadata.get_all("Provides-Extra"))
    with tarfile.open(sdist) as archive:
        top = f"sb3_brc-{SB3_BRC_VERSION}/"
        in_sdist = {name.removeprefix(top) for name in archive.getnames()}
    assert {"README.md", "LICENSE", "CHANGELOG.md", "setup.cfg", "pyproject.toml"} <= in_sdist
    assert _package_files() <= in_sdist


def test_twine_check_passes(dist):
    pytest.importorskip("twine", reason="needs the dev extra (twine)")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


SMOKE_TEST = """
import importlib.resources, os, pathlib, sys
import torch as th
import sb3_brc
from sb3_brc import BRCSAC, MultiTaskVecEnv
assert pathlib.Path(sb3_brc.__file__).is_relative_to(sys.prefix), sb3_brc.__file__  # the installed copy
data = importlib.resources.files("sb3_brc")
assert data.joinpath("py.typed").is_file() and data.joinpath("envs", "paper_final_scores.csv").is_file()
th.set_num_threads(1)
env = MultiTaskVecEnv(["Pendulum-v1", "InvertedPendulum-v5"], seed=0)
model = BRCSAC("MlpPolicy", env, learning_starts=20, batch_size=8, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[8, 8])))
model.learn(60)
model.save("smoke")
assert BRCSAC.load("smoke", env=env).sb3_brc_version == sb3_brc.__version__
print("smoke ok", sb3_brc.__version__)
"""


def _fresh_venv(path: pathlib.Path) -> pathlib.Path:
    """A new virtual environment that sees this interpreter's installed packages (torch, SB3, pip, setuptools...) after
    its own, through a ``.pth`` file, like ``--system-site-packages`` for a venv; ``.pth`` files of those directories
    (this checkout's editable install) are not run there. Without pip of its own (Python 3.11's bundled setuptools
    would shadow the one that builds the sdist)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    query = [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    site = subprocess.run(query, check=True, capture_output=True, text=True)
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (pathlib.Path(site.stdout.strip()) / "outer_site_packages.pth").write_text("\n".join(sorted(paths)) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_into_a_fresh_venv_and_passes_a_smoke_test(dist, tmp_path, kind):
    python = _fresh_venv(tmp_path / "venv")
    (artifact,) = dist.glob("sb3_brc-*.whl" if kind == "wheel" else "sb3_brc-*.tar.gz")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["MUJOCO_GL"] = "disable"
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation", str(artifact)]
    result = subprocess.run(install, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "venv" / "bin" / "sb3-brc").exists()
    work = tmp_path / "work"  # away from the checkout, whose sb3_brc must not be imported
    work.mkdir()
    result = subprocess.run([python, "-c", SMOKE_TEST], capture_output=True, text=True, env=env, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"smoke ok {SB3_BRC_VERSION}" in result.stdout
    for command in (["--help"], ["train", "--help"], ["bench", "--help"]):
        cli = [tmp_path / "venv" / "bin" / "sb3-brc", *command]  # the installed console script
        result = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=work)
        assert result.returncode == 0 and "usage: sb3-brc" in result.stdout, result.stderr[-3000:]
    assert "--wandb" in result.stdout


def test_mypy_passes_on_the_package():
    """mypy at the strictness of ``[tool.mypy]`` in pyproject.toml (SB3's settings plus check_untyped_defs,
    strict_equality, no unused ignores or redundant casts). About 41 s of CPU from a cold cache on 2 shared cores,
    2 s warm (the cache is ``.mypy_cache`` in the checkout)."""
    pytest.importorskip("mypy", reason="needs the dev extra (mypy)")
    env = {key: value for key, value in os.environ.items() if key != "MYPYPATH"}
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


def test_changelog_names_every_version_up_to_this_one():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[?(\d+\.\d+\.\d+)", text, flags=re.MULTILINE)
    assert SB3_BRC_VERSION in versions and "0.1.0" in versions
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split("."))), reverse=True)  # newest first
