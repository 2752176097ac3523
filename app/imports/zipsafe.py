"""Safe extraction of an import ZIP: every entry is checked before a byte is written.

Refused: path traversal (`../`, absolute paths, drive letters, backslash tricks), symlinks, encrypted
entries, and zip bombs (too many entries, too many bytes in total, or an entry that inflates beyond
`max_ratio`). The sizes in the headers are checked first (a fast refusal), then the bytes really
written are counted, so a header that lies cannot get more than the limit onto the disk.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.imports.formats import ImportFileError, Limits

MANIFEST_NAMES = ("manifest.ndjson", "manifest.jsonl", "manifest.json", "manifest.csv")
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_RATIO_FLOOR = 1024 * 1024  # entries up to 1 MiB may compress as well as they like
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_JUNK = ("__MACOSX/",)  # resource forks the macOS archiver adds; never attachments
_JUNK_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class SafeZip:
    manifest: Path  # the extracted manifest file
    manifest_name: str  # its path inside the zip
    base: str  # "" or "folder/": the folder holding the manifest; attachment names are relative to it
    files: dict[str, Path]  # every extracted entry (manifest excluded) by its normalized name


def entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's real name: old Windows archivers write GBK names without the UTF-8 flag, which
    `zipfile` decodes as cp437; those bytes are decoded again (UTF-8 first, then GB18030)."""
    name = info.filename
    if info.flag_bits & _UTF8_FLAG or name.isascii():
        return name
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return name


def normalize_name(name: str) -> str | None:
    """A relative '/'-separated path, or None when the name tries to leave the extraction folder."""
    if "\x00" in name:
        return None
    name = name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts) + ("/" if name.endswith("/") else "")


def _is_junk(name: str) -> bool:
    return name.startswith(_JUNK) or PurePosixPath(name).name in _JUNK_FILES


def _checked_entries(zf: zipfile.ZipFile, limits: Limits) -> list[tuple[zipfile.ZipInfo, str]]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ImportFileError(
            f"the zip has {len(infos)} entries, at most {limits.max_entries} are allowed",
            "zip_bomb",
            entries=len(infos),
            max_entries=limits.max_entries,
        )
    entries: list[tuple[zipfile.ZipInfo, str]] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        shown = entry_name(info)
        name = normalize_name(shown)
        if name is None:
            raise ImportFileError(f"zip entry {shown!r} points outside the archive", "unsafe_zip_entry", entry=shown)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ImportFileError(
                f"zip entry {shown!r} is a symbolic link", "unsafe_zip_entry", entry=shown, reason="symlink"
            )
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise ImportFileError(
                f"zip entry {shown!r} is encrypted; send the archive without a password", "zip_encrypted", entry=shown
            )
        if name.endswith("/") or _is_junk(name):
            continue
        if name in seen:
            raise ImportFileError(
                f"zip entry {shown!r} appears twice", "unsafe_zip_entry", entry=shown, reason="duplicate"
            )
        seen.add(name)
        total += info.file_size
        if total > limits.max_unzipped_bytes:
            raise ImportFileError(
                f"the zip unpacks to more than {limits.max_unzipped_bytes} bytes",
                "zip_bomb",
                max_unzipped_bytes=limits.max_unzipped_bytes,
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ImportFileError(
                f"zip entry {shown!r} inflates more than {limits.max_ratio} times",
                "zip_bomb",
                entry=shown,
                max_ratio=limits.max_ratio,
            )
        entries.append((info, name))
    return entries


def _find_manifest(names: list[str]) -> tuple[str, str]:
    tops = {n.split("/", 1)[0] for n in names}
    bases = [""]
    if len(tops) == 1 and all("/" in n for n in names):
        bases.append(next(iter(tops)) + "/")
    for base in bases:
        level = {n[len(base) :].lower(): n for n in names if n.startswith(base) and "/" not in n[len(base) :]}
        found = [level[m] for m in MANIFEST_NAMES if m in level]
        if len(found) > 1:
            raise ImportFileError(
                f"the zip holds several manifests: {', '.join(found)}; keep one", "ambiguous_manifest", manifests=found
            )
        if found:
            return found[0], base
    raise ImportFileError(
        "the zip holds no manifest: put manifest.ndjson, manifest.jsonl, manifest.json or "
        "manifest.csv at its root (or in its single top folder)",
        "no_manifest",
    )


def extract(path: Path, work_dir: Path, limits: Limits) -> SafeZip:
    """Check and extract every entry into `work_dir`/zip; on any refusal nothing stays behind."""
    root = work_dir / "zip"
    try:
        with zipfile.ZipFile(path) as zf:
            entries = _checked_entries(zf, limits)
            manifest_name, base = _find_manifest([name for _, name in entries])
            root.mkdir(parents=True, exist_ok=True)
            resolved_root = root.resolve()
            written = 0
            files: dict[str, Path] = {}
            for info, name in entries:
                target = (root / name).resolve()
                if not target.is_relative_to(resolved_root):  # belt and braces after normalize_name
                    raise ImportFileError(
                        f"zip entry {name!r} points outside the archive", "unsafe_zip_entry", entry=name
                    )
                written += _copy_entry(zf, info, name, target, limits, budget=limits.max_unzipped_bytes - written)
                files[name] = target
    except ImportFileError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise ImportFileError(f"the zip cannot be read: {exc}", "bad_zip")
    manifest = files.pop(manifest_name)
    return SafeZip(manifest=manifest, manifest_name=manifest_name, base=base, files=files)


def _copy_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, target: Path, limits: Limits, budget: int
) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    ratio_cap = max(_RATIO_FLOOR, limits.max_ratio * max(info.compress_size, 1))
    count = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            count += len(chunk)
            if count > budget:
                raise ImportFileError(
                    f"the zip unpacks to more than {limits.max_unzipped_bytes} bytes",
                    "zip_bomb",
                    max_unzipped_bytes=limits.max_unzipped_bytes,
                )
            if count > ratio_cap:
                raise ImportFileError(
                    f"zip entry {name!r} inflates more than {limits.max_ratio} times",
                    "zip_bomb",
                    entry=name,
                    max_ratio=limits.max_ratio,
                )
            dst.write(chunk)
    return count


def lookup(safe: SafeZip, name: str) -> Path | None:
    """An attachment by the name the manifest uses: relative to the manifest's folder, or the full path."""
    normalized = normalize_name(name.strip())
    if normalized is None or normalized.endswith("/"):
        return None
    return safe.files.get(safe.base + normalized) or safe.files.get(normalized)
