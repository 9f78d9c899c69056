"""What a save file must be before SB3 loads it: an intact zip of a model this version of sb3-brc can read, saved
by the algorithm that loads it."""

import io
import json
import pathlib
import zipfile

from sb3_brc.common.utils import SB3_BRC_VERSION

# Saves written before this version used another task-id encoding (a float last observation entry) and are refused
FIRST_LOADABLE_VERSION = (0, 2)


def check_save_file(path: str | pathlib.Path | io.BufferedIOBase, policy_package: str | None = None) -> None:
    """Raise a clear ``ValueError`` when ``path`` is not an intact SB3 save (truncated, corrupted, not a zip), or,
    with ``policy_package`` (e.g. ``"sb3_brc.sac"``), when it holds another sb3-brc algorithm's model."""
    if isinstance(path, io.BufferedIOBase):
        return
    path = pathlib.Path(path)
    if not path.exists() and path.with_name(path.name + ".zip").exists():
        path = path.with_name(path.name + ".zip")
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}")
    problem, data = None, {}
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {"data", "policy.pth"} - set(archive.namelist())
            bad_member = archive.testzip()
            if not missing and bad_member is None:
                data = json.loads(archive.read("data"))
        if missing:
            problem = f"it lacks {sorted(missing)}"
        elif bad_member is not None:
            problem = f"its member {bad_member!r} is corrupted"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        problem = f"it is not a readable zip file ({error})"
    if problem:
        raise ValueError(
            f"Cannot load {path}: {problem}. The file is truncated or corrupted, or not an SB3 save; "
            "load an intact save or an earlier checkpoint."
        )
    written_by = data.get("sb3_brc_version")
    policy_module = data.get("policy_class", {}).get("__module__", "") if isinstance(data.get("policy_class"), dict) else ""
    if not policy_module.startswith("sb3_brc"):
        return  # another library's save: the algorithm's constructor names the problem
    if written_by is None or tuple(int(part) for part in written_by.split(".")[:2]) < FIRST_LOADABLE_VERSION:
        raise ValueError(
            f"Cannot load {path}: it was written by sb3-brc {written_by or '0.1 or older (no version recorded)'}, "
            f"whose models read the task id from the last observation entry; sb3-brc {SB3_BRC_VERSION} reads it from "
            "Dict observations. Load it with that version (pip install 'sb3-brc==0.1.*') or retrain."
        )
    if policy_package is not None and not policy_module.startswith(policy_package + "."):
        raise ValueError(
            f"Cannot load {path} here: it holds a model of another sb3-brc algorithm (its policy comes from "
            f"{policy_module}, not {policy_package}). Load it with the algorithm that saved it (BRCSAC for sb3_brc.sac, "
            "BRCDQN for sb3_brc.dqn)."
        )
