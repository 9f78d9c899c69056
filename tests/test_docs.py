"""The documentation site (``docs/``): a strict Sphinx build, a docstring on everything the API reference shows, and
the guides' examples run so that they cannot rot.

Conventions for the Markdown pages (``docs/**/*.md`` and ``README.md``):

- Every ```` ```python ```` block runs, in page order, in one namespace per page, in a temporary directory. Budgets
  are tiny and written in the example itself (with the real value in a comment where it matters).
- A block that cannot run in the test suite (a GPU, a paper-scale budget, a package that is not on the package
  index) is preceded by ``<!-- skip-test: reason -->``. A failing block without that marker fails the test, and so
  does a marker without a reason or without a Python block after it.
- ``sb3-brc ...`` command lines in ```` ```bash ```` blocks must parse (their subcommands and flags exist); they are
  not run.
"""

import dataclasses
import importlib
import inspect
import os
import pathlib
import pkgutil
import re
import shlex
import subprocess
import sys
import time

import pytest

import sb3_brc
from sb3_brc.cli import parse_args

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts), ROOT / "README.md"]
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^\s`]*).*$")  # the language: the first word of the info string
SKIP = re.compile(r"^<!--\s*skip-test:(.*)-->\s*$")


@dataclasses.dataclass
class Block:
    language: str
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None  # the reason of a preceding skip-test marker


def code_blocks(path: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their skip-test markers."""
    blocks, lines, index = [], path.read_text().splitlines(), 0
    previous = ""  # the last non-blank line outside a block
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        fence, language = opening.groups()
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == fence), None)
        assert end is not None, f"{path}:{index + 1}: unclosed code block"
        marker = SKIP.match(previous)
        blocks.append(Block(language, index + 2, "\n".join(lines[index + 1 : end]) + "\n", marker and marker.group(1).strip()))
        previous, index = "", end + 1
    return blocks


def _page_id(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


EXAMPLE_PAGES = [path for path in PAGES if any(block.language == "python" for block in code_blocks(path))]


def test_site_builds_strictly(tmp_path):
    # -W: warnings are errors; -n: every cross-reference must resolve; a fresh output directory: no stale pages
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        env={**os.environ, "MUJOCO_GL": "disable"},
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "html" / "index.html").exists()
    print(f"sphinx-build: {time.perf_counter() - start:.1f} s")


def _api_modules() -> list[str]:
    """The modules the API reference documents (its ``automodule`` directives)."""
    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        found += re.findall(r"^\.\. automodule:: (\S+)", page.read_text(), flags=re.MULTILINE)
    return found


def test_every_module_is_in_the_api_reference():
    modules = {
        info.name
        for info in pkgutil.walk_packages(sb3_brc.__path__, "sb3_brc.")
        if not info.ispkg and not info.name.endswith("__main__")
    }
    missing = sorted(modules - set(_api_modules()))
    assert not missing, f"modules missing from docs/api/*.md (add an automodule directive): {missing}"


def _own_doc(obj: object) -> str:
    doc = (obj.fget.__doc__ if isinstance(obj, property) else obj.__doc__) or ""
    if inspect.isclass(obj) and (dataclasses.is_dataclass(obj) or hasattr(obj, "_fields")):
        # dataclasses and named tuples without a docstring get their signature as __doc__
        if doc.startswith(f"{obj.__name__}("):
            return ""
    return doc.strip()


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    problems = [] if (module.__doc__ or "").strip() else [f"{module_name} (module docstring)"]
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", None) != module_name or obj.__name__ != name:
            continue  # imported, or an alias (documented as "alias of")
        if not _own_doc(obj):
            problems.append(f"{module_name}.{name}")
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (
                inspect.isfunction(member) or isinstance(member, property | classmethod | staticmethod)
            ):
                continue
            if any(hasattr(base, attr) for base in obj.__mro__[1:]):
                continue  # an override: documented where it is declared (here or in SB3, Gymnasium, PyTorch)
            if not _own_doc(member.__func__ if isinstance(member, classmethod | staticmethod) else member):
                problems.append(f"{module_name}.{name}.{attr}")
    return problems


def test_everything_in_the_api_reference_has_a_docstring():
    # autodoc silently leaves out members without a docstring: this is the check that they have one
    missing = [item for module in _api_modules() for item in _undocumented(module)]
    assert not missing, f"public objects without a docstring: {missing}"


def test_skip_markers_are_well_formed():
    for page in PAGES:
        markers = sum(1 for line in page.read_text().splitlines() if SKIP.match(line.strip()))
        blocks = [block for block in code_blocks(page) if block.skip is not None]
        assert markers == len(blocks), f"{page}: a skip-test marker must stand right before a code block"
        for block in blocks:
            assert block.language == "python", f"{page}:{block.line}: skip-test marks Python blocks only"
            assert block.skip, f"{page}:{block.line}: skip-test needs a reason"


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=_page_id)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples save models, checkpoints and plots into the working directory
    namespace = {"__name__": "__main__"}
    for block in code_blocks(page):
        if block.language != "python" or block.skip is not None:
            continue
        # Line numbers of tracebacks point into the page
        code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
        exec(code, namespace)


def _command_lines(block: Block) -> list[list[str]]:
    """The ``sb3-brc`` / ``python -m sb3_brc`` commands of a shell block, as argument lists after the program."""
    commands = []
    for line in block.code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words, command = list(lexer), []
        for word in [*words, ";"]:
            if word not in ("&&", "||", "|", ";", "&"):
                command.append(word)
                continue
            while command and re.match(r"^[A-Z_]+=", command[0]):
                command = command[1:]  # VAR=value prefixes
            if command[:1] == ["sb3-brc"]:
                commands.append(command[1:])
            elif command[:3] == ["python", "-m", "sb3_brc"]:
                commands.append(command[3:])
            command = []
    return commands


def test_documented_command_lines_parse():
    checked = 0
    for page in PAGES:
        for block in code_blocks(page):
            if block.language not in ("bash", "sh", "console", "shell"):
                continue
            for argv in _command_lines(block):
                try:
                    parse_args(argv)
                except SystemExit as error:
                    assert error.code == 0, f"{page}:{block.line}: `sb3-brc {shlex.join(argv)}` does not parse"
                checked += 1
    assert checked > 0


def test_api_index_names_every_package_export():
    index = (DOCS / "api" / "index.md").read_text()
    missing = [name for name in sb3_brc.__all__ if f"`{name}`" not in index]
    assert not missing, f"docs/api/index.md does not list these exports of sb3_brc: {missing}"


def test_suites_guide_names_every_suite():
    from sb3_brc.envs.suites import SUITES

    page = (DOCS / "guide" / "suites.md").read_text()
    missing = [name for name in SUITES if f"`{name}`" not in page]
    assert not missing, f"docs/guide/suites.md does not name these suites: {missing}"


def _images(page: pathlib.Path) -> set[pathlib.Path]:
    """Images a page shows, its included files' images too (MyST ``{include}`` with ``:relative-images:``)."""
    text = page.read_text()
    found = {(page.parent / path).resolve() for path in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)}
    for included in re.findall(r"^```\{include\} (\S+)", text, flags=re.MULTILINE):
        found |= _images((page.parent / included).resolve())
    return found


def test_every_benchmark_plot_is_on_the_site():
    plots = set((ROOT / "benchmarks" / "results").rglob("*.png"))
    missing = sorted(str(path.relative_to(ROOT)) for path in plots - _images(DOCS / "benchmarks.md"))
    assert not missing, f"plots missing from docs/benchmarks.md (or the results it includes): {missing}"


def test_readme_links_resolve():
    readme = ROOT / "README.md"
    links = [link for link in re.findall(r"\]\(([^)\s]+)\)", readme.read_text()) if "://" not in link]
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert links and not missing, f"README.md links to missing files: {missing}"
