"""Grids kept in an object store or on a remote filesystem: ``--out s3://bucket/grid`` (any URI fsspec opens, e.g.
``gs://``, ``az://``, ``file://``, with the package of its protocol installed: s3fs for S3, ``pip install sb3-brc[s3]``).

The store holds a local grid's layout (``<algo>/<tasks>/seed<k>/`` with the result files and checkpoints). No run
writes to it directly: each attempt trains in a fresh local staging directory that starts as the store's copy of the
run (its files and its newest committed checkpoint, :meth:`StoredRun.pull`) and is pushed back as it goes: the
result files after each evaluation, each checkpoint once written, everything at the run's end. A run retried on any
node therefore resumes from its last pushed checkpoint: a lost node costs at most one checkpoint interval.

Object stores have no atomic rename, but an object appears whole or not at all. A checkpoint is committed by its
``checkpoint.json`` (the file that marks a local checkpoint complete), uploaded after all its other files; only
committed checkpoints are loaded, and the next push removes the others (older ones, or an upload cut short). A run's
``config.json`` goes last, so the run counts as complete only once its other results are in place.

The driver reads a stored grid through a local mirror of its result files (:func:`local_mirror`): pulled when the
grid starts (:meth:`GridStore.pull_results`), and written from each run's result when the run ends; it aggregates there and
uploads the aggregate (:meth:`GridStore.upload`).

Credentials and endpoints come from the protocol's own configuration (for S3: ``AWS_*`` environment variables,
``~/.aws``; fsspec's ``FSSPEC_S3_*`` variables), on the driver and on every worker.
"""

import json
import os
import re
import shutil

import fsspec

from sb3_brc.bench.grid import CHECKPOINTS, RESULT_FILES, WANDB_ID, RunSpec, write_run_files
from sb3_brc.tools.checkpoint import CHECKPOINT_META, by_step, set_latest

#: What a run's attempt needs from the store besides its checkpoint: the result files and its W&B run id
RUN_STATE_FILES = (*RESULT_FILES, WANDB_ID)


def is_storage_uri(out: str) -> bool:
    """Whether ``--out`` names a store by URI (``s3://bucket/grid``, ``file:///...``) rather than a local path (which
    may be a mounted shared filesystem)."""
    return "://" in out


def local_mirror(uri: str) -> str:
    """The driver's local copy of a stored grid's result files: ``~/.cache/sb3-brc/grids/<the URI as a name>``
    (under ``$XDG_CACHE_HOME`` where set)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "sb3-brc", "grids", re.sub(r"[^A-Za-z0-9._-]+", "_", uri))


class GridStore:
    """A grid's store: its files by path relative to the grid's URI, through the fsspec filesystem of the URI.

    :param uri: The grid's URI
    """

    def __init__(self, uri: str):
        try:
            self.fs, root = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as error:  # fsspec names the package a protocol needs, or an unknown protocol
            raise ImportError(f"Cannot open the grid's store {uri!r}: {error}") from error
        self.uri, self.root = uri, root.rstrip("/")

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def read(self, relative: str) -> bytes | None:
        """A file's content, or ``None`` when it does not exist."""
        try:
            return self.fs.cat_file(self._path(relative))
        except FileNotFoundError:
            return None

    def upload(self, local_path: str, relative: str) -> None:
        """Copy a local file into the store (one object: readers see all of it or none)."""
        path = self._path(relative)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)  # a filesystem's directories; nothing on object stores
        self.fs.put_file(local_path, path)

    def download(self, relative: str, local_path: str) -> None:
        """Copy a file of the store to ``local_path``."""
        self.fs.get_file(self._path(relative), local_path)

    def listdir(self, relative: str) -> list[str]:
        """The names in a directory of the store (none when it does not exist)."""
        try:
            entries = self.fs.ls(self._path(relative), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def pull_results(self, runs: list[RunSpec]) -> None:
        """Make the local copy of each run (``spec.run_dir``: the driver's mirror) the store's result files of it (none
        where the store has none)."""
        for spec in runs:
            remote = "/".join(spec.run_path)
            stored = {name: self.read(f"{remote}/{name}") for name in RESULT_FILES}
            files = {name: data for name, data in stored.items() if data is not None}
            shutil.rmtree(spec.run_dir, ignore_errors=True)
            if files:
                write_run_files(spec, files)

    def remove(self, relative: str) -> None:
        """Delete a file or a directory and everything under it (nothing when it does not exist)."""
        try:
            self.fs.rm(self._path(relative), recursive=True)
        except FileNotFoundError:
            pass


class StoredRun:
    """An attempt of a run whose grid is stored: the store's copy of the run, and the local staging directory the
    attempt trains in (``spec.run_dir``: ``spec.out`` is the staging root, ``spec.storage`` the grid's URI).

    :param spec: The run, with ``out`` the local staging root
    """

    def __init__(self, spec: RunSpec):
        if spec.storage is None:
            raise ValueError(f"{spec.key} is not stored: its grid's --out is a local path")
        self.spec, self.store, self.remote = spec, GridStore(spec.storage), "/".join(spec.run_path)
        self.checkpoints = f"{self.remote}/{CHECKPOINTS}"

    def pull(self) -> None:
        """Make the local run directory the store's copy of the run: its files and its newest committed checkpoint."""
        run_dir = self.spec.run_dir
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        for name in RUN_STATE_FILES:
            data = self.store.read(f"{self.remote}/{name}")
            if data is not None:
                with open(os.path.join(run_dir, name), "wb") as file:
                    file.write(data)
        checkpoint = self._newest_committed()
        if checkpoint is not None:
            local_root = os.path.join(run_dir, CHECKPOINTS)
            os.makedirs(os.path.join(local_root, checkpoint))
            # Its metadata last: a local checkpoint is complete once that is in place
            for name in sorted(self.store.listdir(f"{self.checkpoints}/{checkpoint}"), key=lambda n: n == CHECKPOINT_META):
                self.store.download(f"{self.checkpoints}/{checkpoint}/{name}", os.path.join(local_root, checkpoint, name))
            set_latest(local_root, checkpoint)

    def _newest_committed(self) -> str | None:
        """The newest checkpoint of the run in the store whose metadata is in place and readable."""
        for name in reversed(by_step(self.store.listdir(self.checkpoints))):
            meta = self.store.read(f"{self.checkpoints}/{name}/{CHECKPOINT_META}")
            try:
                if meta is not None and "num_timesteps" in json.loads(meta):
                    return name
            except ValueError:  # cut short (a filesystem without atomic writes): not committed
                pass
        return None

    def push_results(self) -> None:
        """Upload the run's result files (``config.json`` last: its status counts once the rest is there)."""
        names = [name for name in RUN_STATE_FILES if os.path.exists(os.path.join(self.spec.run_dir, name))]
        for name in sorted(names, key=lambda name: name == "config.json"):
            self.store.upload(os.path.join(self.spec.run_dir, name), f"{self.remote}/{name}")

    def push_checkpoint(self, checkpoint_dir: str) -> None:
        """Upload a complete local checkpoint, committing it with its metadata uploaded last, then remove the run's
        other checkpoints from the store."""
        name = os.path.basename(checkpoint_dir)
        for file in sorted(os.listdir(checkpoint_dir), key=lambda file: file == CHECKPOINT_META):
            self.store.upload(os.path.join(checkpoint_dir, file), f"{self.checkpoints}/{name}/{file}")
        for other in self.store.listdir(self.checkpoints):
            if other != name:
                self.store.remove(f"{self.checkpoints}/{other}")

    def remove_checkpoints(self) -> None:
        """Delete the run's checkpoints from the store (a complete run is never resumed)."""
        self.store.remove(self.checkpoints)
