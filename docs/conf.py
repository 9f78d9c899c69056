"""Sphinx configuration of the sb3-brc documentation site.

Why Sphinx with autodoc and sphinx_rtd_theme: it is the generator and theme of the Stable-Baselines3 and sb3-contrib
sites, so SB3 users find the same layout and navigation here, and autodoc reads the Sphinx-style ``:param x:``
docstrings the package already has. myst-parser lets the guides be Markdown files that also read well on GitHub.

Build: ``sphinx-build docs docs/_build/html``. ``tests/test_docs.py`` builds strictly (``-W --keep-going -n``) and
runs the guides' Python examples.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, also without an install
os.environ.setdefault("MUJOCO_GL", "disable")

from sb3_brc import __version__  # noqa: E402

project = "sb3-brc"
author = "sb3-brc contributors"
copyright = "sb3-brc contributors"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

# The API reference: each object documented once, where it is defined; own members only (SB3's inherited methods are
# documented on SB3's site); signatures keep their type hints. A method without its own docstring is an override
# documented by its base class (ours or SB3's), so it is left out rather than shown with SB3's or PyTorch's text
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_inherit_docstrings = False
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# Strict builds (-n): every reference must resolve. The site is built offline (no intersphinx inventories), so types
# from these third-party packages in signatures and base classes have no target here; they are the only exceptions.
# ``VecEnv`` is the forward reference inside SB3's ``GymEnv`` alias.
THIRD_PARTY = "torch|numpy|gymnasium|stable_baselines3|matplotlib|rich"
STANDARD_LIBRARY = "abc|argparse|collections|io|pathlib|types|_typeshed"
nitpick_ignore_regex = [
    (r"py:.*", rf"({THIRD_PARTY}|{STANDARD_LIBRARY})\..*"),
    ("py:class", "VecEnv"),
    ("py:class", "DataclassInstance"),  # typeshed's protocol of dataclasses, only under TYPE_CHECKING
]


def _canonical_names(domain, module_name: str, dotted: str) -> list[str]:
    """Documented names of the object that ``dotted`` denotes inside module ``module_name`` (by import)."""
    obj = sys.modules.get(module_name)
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return []
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and f"{module}.{qualname}" in domain.objects:
        return [f"{module}.{qualname}"]
    last = dotted.rsplit(".", 1)[-1]  # data (dicts, lists) have no name of their own: find them by identity
    return [
        name
        for name in domain.objects
        if name.endswith("." + last) and getattr(sys.modules.get(name[: -len(last) - 1]), last, None) is obj
    ]


def resolve_short_names(app, env, node, contnode):
    """Docstrings name package objects as their module imports them (``:class:`MultiTaskVecEnv``` in ``suites.py``,
    ``:data:`sb3_brc.bench.ALGOS``` for a re-export): resolve such a name to the one documented object it denotes,
    found by import from the docstring's module (or the named module), else by a unique name suffix. No match or
    several: the reference stays broken and the strict build fails."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip("~.")
    candidates: list[str] = []
    if target.startswith("sb3_brc."):
        parts = target.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
            if ".".join(parts[:cut]) in sys.modules:
                candidates = _canonical_names(domain, ".".join(parts[:cut]), ".".join(parts[cut:]))
                break
    elif node.get("py:module"):
        candidates = _canonical_names(domain, node["py:module"], target)
    if not candidates:
        candidates = [name for name in domain.objects if name.startswith("sb3_brc.") and name.endswith("." + target)]
    if len(candidates) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], candidates[0], node, contnode)


def readable_dataclass_defaults(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field with a ``default_factory`` shows as ``<factory>``, which is not Python and breaks the
    signature parser: show ``...`` instead."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def setup(app):
    app.connect("missing-reference", resolve_short_names)
    app.connect("autodoc-process-signature", readable_dataclass_defaults)


html_theme = "sphinx_rtd_theme"
html_title = f"sb3-brc {release}"
html_static_path: list[str] = []
