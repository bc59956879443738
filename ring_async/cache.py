"""A content-addressed cache of built artifacts: the embedded policy, synthetic task files, SFT runs, selections.

An artifact lives in ``<root>/<kind>/<key>/``, where the key hashes everything that determines it (the config
sections it is built from, the seed, the keys of the artifacts it is built on, and a format number bumped whenever
the code that builds it changes its output). It is built in a temporary sibling folder and renamed into place when
complete, under a file lock, so concurrent processes (tests running in parallel, a demo and a test) build it once
and never see a half-built artifact. The root is ``cache.dir``, else ``$RING_ASYNC_CACHE``, else
``.cache/ring-async`` in the working directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ring_async.config import CacheConfig

log = logging.getLogger(__name__)

ENV_VAR = "RING_ASYNC_CACHE"
DEFAULT_DIR = ".cache/ring-async"
KEY_FILE = "cache-key.json"


def cache_root(config: CacheConfig | None = None) -> Path:
    if config is not None and config.dir:
        return Path(config.dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def cache_key(material: Any) -> str:
    """A short stable hash of JSON-able material (dict order does not matter)."""
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a user's input file cheaply: its resolved path, size and modification time."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ArtifactCache:
    def __init__(self, config: CacheConfig | None = None):
        self.root = cache_root(config).absolute()
        self.reuse = True if config is None else config.reuse

    def path(self, kind: str, material: Any) -> Path:
        return self.root / kind / cache_key(material)

    def lookup(self, kind: str, material: Any) -> Path | None:
        """The artifact's folder when it is complete in the cache, else None (never builds)."""
        path = self.path(kind, material)
        return path if (path / KEY_FILE).is_file() else None

    def get_or_build(self, kind: str, material: Any, build: Callable[[Path], object]) -> Path:
        """The cached artifact, built by ``build(folder)`` first when missing (or always, with ``reuse: false``)."""
        final = self.path(kind, material)
        with _locked(final.parent / f".{final.name}.lock"):
            if self.reuse and (final / KEY_FILE).is_file():
                log.info("cache hit: %s", final)
                return final
            partial = final.parent / f".{final.name}.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            try:
                build(partial)
                (partial / KEY_FILE).write_text(json.dumps(material, indent=2, sort_keys=True, default=str))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(partial, final)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            log.info("cached: %s", final)
            return final
