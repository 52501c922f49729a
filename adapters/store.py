"""The adapter store: tuned adapters by name, in numbered versions, published atomically.

    <root>/<name>/v<N>/adapter.json            the version's manifest (below)
    <root>/<name>/v<N>/<files>                 safetensors weights, JSON configs, a README.md
    <root>/<name>/current.json                 {"version": N}: what ``name`` serves

``name`` serves the current version and ``name@N`` a given one. A version is written into a
hidden temporary folder, every file and the folder are fsynced, and one ``rename`` makes it
appear: a version is complete or absent. ``current.json`` is replaced the same way, so a
rollback is one atomic step. Weights are safetensors only: a pickle-based file (``.bin``,
``.pt``, ``.pkl``, ...) is refused by name and never opened, and every file's sha256 is recorded
and checked again before a version is served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "adapter.json"
CURRENT = "current.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch; same rule as model ids
_VERSION_DIR = re.compile(r"v([1-9][0-9]{0,8})")
ALLOWED_SUFFIXES = (".safetensors", ".json", ".md")  # PEFT writes a README.md model card
MAX_FILES = 64


class AdapterStoreError(ValueError):
    """A request the store refuses; the message says what is wrong and is safe to show."""


class AdapterNotFound(AdapterStoreError):
    """No adapter (or no such version of it)."""


def is_adapter_name(name: str) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def check_adapter_name(name: str) -> str:
    if not is_adapter_name(name):
        shown = name if isinstance(name, str) and len(name) <= 140 else repr(name)[:140]
        raise AdapterStoreError(
            f"invalid adapter name {shown!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def split_reference(reference: str) -> tuple[str, int | None]:
    """``name`` -> (name, None); ``name@N`` -> (name, N). Raises AdapterStoreError if malformed."""
    name, at, version = reference.partition("@")
    check_adapter_name(name)
    if not at:
        return name, None
    if not version.isdigit() or len(version) > 9 or int(version) < 1:
        raise AdapterStoreError(f"invalid adapter version in {reference!r}: use name@N with N >= 1")
    return name, int(version)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with temporary.open("w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class AdapterVersion:
    """One published version; ``folder`` holds its files."""

    name: str
    version: int
    base_model: str
    method: str
    folder: Path
    files: dict[str, str]  # file name -> sha256
    metrics: dict[str, float] = field(default_factory=dict)
    job_id: str | None = None
    created: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "base_model": self.base_model,
            "method": self.method,
            "job_id": self.job_id,
            "metrics": self.metrics,
            "files": self.files,
            "created": self.created,
            "extra": self.extra,
        }

    @classmethod
    def read(cls, folder: Path) -> AdapterVersion:
        try:
            data = json.loads((folder / MANIFEST).read_text())
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                base_model=str(data["base_model"]),
                method=str(data["method"]),
                folder=folder,
                files={str(k): str(v) for k, v in data["files"].items()},
                metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
                job_id=data.get("job_id"),
                created=float(data.get("created") or 0.0),
                extra=dict(data.get("extra") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AdapterStoreError(f"{folder}: unreadable adapter manifest: {exc}") from None

    def verify(self) -> None:
        """Check every recorded file is present with its recorded sha256 (and nothing else)."""
        present = {p.name for p in self.folder.iterdir() if p.is_file() and p.name != MANIFEST}
        if present != set(self.files):
            raise AdapterStoreError(
                f"adapter {self.reference}: files {sorted(present)} do not match its manifest "
                f"{sorted(self.files)}"
            )
        for name, digest in self.files.items():
            if _sha256(self.folder / name) != digest:
                raise AdapterStoreError(f"adapter {self.reference}: {name} does not match its sha256")


Listener = Callable[[AdapterVersion], None]


class AdapterStore:
    """Versions of adapters under one root. Thread-safe within a process; one process publishes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(version)`` after every publish and rollback (the new current version)."""
        self._listeners.append(listener)

    def _folder(self, name: str) -> Path:
        return self.root / check_adapter_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_adapter_name(p.name))

    def versions(self, name: str) -> list[AdapterVersion]:
        folder = self._folder(name)
        if not folder.is_dir():
            raise AdapterNotFound(f"no adapter {name!r}")
        found = []
        for child in folder.iterdir():
            match = _VERSION_DIR.fullmatch(child.name)
            if match and child.is_dir():
                found.append(AdapterVersion.read(child))
        return sorted(found, key=lambda v: v.version)

    def current_version(self, name: str) -> int:
        path = self._folder(name) / CURRENT
        try:
            return int(json.loads(path.read_text())["version"])
        except FileNotFoundError:
            raise AdapterNotFound(f"no adapter {name!r}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdapterStoreError(f"adapter {name!r}: unreadable {CURRENT}: {exc}") from None

    def get(self, reference: str) -> AdapterVersion:
        """``name`` (the current version) or ``name@N``."""
        name, version = split_reference(reference)
        if version is None:
            version = self.current_version(name)
        folder = self._folder(name) / f"v{version}"
        if not (folder / MANIFEST).is_file():
            raise AdapterNotFound(f"no version {version} of adapter {name!r}")
        return AdapterVersion.read(folder)

    def exists(self, name: str) -> bool:
        return is_adapter_name(name) and (self._folder(name) / CURRENT).is_file()

    @staticmethod
    def check_files(files: Iterable[Path]) -> list[Path]:
        """Refuse anything but plain safetensors / JSON files, by name, without opening them."""
        checked = []
        for path in files:
            if not path.name.endswith(ALLOWED_SUFFIXES) or path.name.startswith("."):
                raise AdapterStoreError(
                    f"{path.name}: refused; an adapter holds safetensors weights, JSON configs and a README "
                    "(pickle-based .bin / .pt / .pkl files are never opened)"
                )
            if path.name == MANIFEST:
                raise AdapterStoreError(f"{MANIFEST} is written by the store, not supplied")
            if path.is_symlink() or not path.is_file():
                raise AdapterStoreError(f"{path.name}: adapters hold plain files only")
            checked.append(path)
        if not any(p.name.endswith(".safetensors") for p in checked):
            raise AdapterStoreError("an adapter needs at least one .safetensors file")
        if len(checked) > MAX_FILES:
            raise AdapterStoreError(f"an adapter holds at most {MAX_FILES} files")
        return checked

    def publish(
        self,
        name: str,
        source: Path,
        *,
        base_model: str,
        method: str,
        job_id: str | None = None,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> AdapterVersion:
        """Copy the files of ``source`` (a folder) in as the next version and make it current."""
        files = self.check_files(sorted(Path(source).iterdir()))
        with self._lock:
            folder = self._folder(name)
            folder.mkdir(parents=True, exist_ok=True)
            existing = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION_DIR.fullmatch(p.name))]
            number = max(existing, default=0) + 1
            staging = folder / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                digests = {}
                for path in files:
                    target = staging / path.name
                    shutil.copyfile(path, target)
                    with target.open("rb+") as handle:
                        os.fsync(handle.fileno())
                    digests[path.name] = _sha256(target)
                version = AdapterVersion(
                    name=name,
                    version=number,
                    base_model=base_model,
                    method=method,
                    folder=folder / f"v{number}",
                    files=digests,
                    metrics=dict(metrics or {}),
                    job_id=job_id,
                    created=time.time(),
                    extra=dict(extra or {}),
                )
                _write_json_atomically(staging / MANIFEST, version.manifest())
                _fsync_dir(staging)
                os.rename(staging, version.folder)
                _fsync_dir(folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _write_json_atomically(folder / CURRENT, {"version": number})
        self._notify(version)
        return version

    def rollback(self, name: str, version: int) -> AdapterVersion:
        """Make an existing version current again, at once."""
        target = self.get(f"{name}@{version}")
        with self._lock:
            _write_json_atomically(self._folder(name) / CURRENT, {"version": version})
        self._notify(target)
        return target

    def _notify(self, version: AdapterVersion) -> None:
        for listener in list(self._listeners):
            listener(version)

    def clean_staging(self) -> None:
        """Remove staging folders a crash left behind (at start-up)."""
        for name in self.names():
            for child in self._folder(name).iterdir():
                if child.name.startswith(".staging-"):
                    shutil.rmtree(child, ignore_errors=True)
                elif child.name.startswith(f".{CURRENT}."):
                    with contextlib.suppress(OSError):
                        child.unlink()
