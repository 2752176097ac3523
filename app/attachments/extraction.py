"""Text and metadata extraction with Apache Tika, in process (iscc-tika) or over HTTP (tika-server).

Every file ends in one of three statuses, never in an exception for the caller:

- ``done``: text (possibly empty for a document without text) and metadata;
- ``failed`` with a reason: encrypted, corrupt, timeout, memory limit, crash of the parser;
- ``skipped`` with a reason: empty file, too large, media (metadata only), unsupported type.

The only exception is `ExtractorUnavailable`, raised when a Tika server cannot be reached or is
overloaded: the job system retries those later.

iscc-tika is native code (GraalVM) that can hang or allocate without bound on hostile input, and it
cannot be interrupted from Python. It therefore runs in child processes that the parent kills when a
file takes longer than its time limit or grows past its memory limit; a fresh child replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import struct
import sys
import zipfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx

from app.attachments.detect import EXECUTABLE_TYPES

log = logging.getLogger(__name__)

Status = Literal["done", "failed", "skipped"]

REASON_EMPTY = "empty file"
REASON_ENCRYPTED = "encrypted: password-protected document"

_MEDIA_PREFIXES = ("image/", "audio/", "video/")
# Executables and the like: stored and downloadable, never parsed.
UNSUPPORTED_TYPES = EXECUTABLE_TYPES | {"application/x-sqlite3", "application/wasm"}
# Types whose XHTML rendering is worth keeping as a preview (the browser shows PDFs, images and text itself).
_PREVIEW_PREFIXES = (
    "application/msword",
    "application/vnd.ms-word",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.ms-outlook",
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
    "application/rtf",
    "text/rtf",
    "message/rfc822",
)
_ENCRYPTED_TYPES = frozenset(
    {"application/x-tika-ooxml-protected", "application/encrypted", "application/x-tika-msoffice-encrypted"}
)
_ENCRYPTION_MARKERS = ("encrypt", "password")  # EncryptedDocumentException, "feature encryption"
# Keys every parse produces, even of garbage: a parse that yields nothing else found nothing.
_BOOKKEEPING_PREFIXES = ("X-TIKA:", "resourceName", "Content-Length", "Content-Type", "Content-Encoding")
_MAX_META_VALUE_CHARS = 2000
_ARCHIVE_TYPES = frozenset({"application/zip", "application/java-archive", "application/epub+zip"})


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    timeout_seconds: float = 60.0
    max_chars: int = 2_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    max_html_chars: int = 2_000_000
    max_embedded_resources: int = 1000  # tika-server only; iscc-tika has no such setting
    max_memory_bytes: int | None = 2 * 1024 * 1024 * 1024  # RSS of an in-process worker child
    want_html: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> ExtractionLimits:
        return cls(
            timeout_seconds=settings.extraction_timeout_seconds,
            max_chars=settings.extraction_max_chars,
            max_file_bytes=settings.extraction_max_file_bytes,
        )


@dataclass(slots=True)
class ExtractionResult:
    status: Status
    reason: str | None = None
    text: str = ""
    html: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    page_count: int | None = None
    language: str | None = None  # "zh-Hans", "zh-Hant", "ja", "ko" or None (not guessed)
    content_type: str | None = None  # what Tika detected; may refine the stored type
    truncated: bool = False

    def __post_init__(self) -> None:
        if self.truncated:
            self.metadata["truncated"] = True


class ExtractorUnavailable(Exception):
    """The extractor could not be reached or refused to work right now: retry later."""


class Extractor(ABC):
    @abstractmethod
    async def extract(self, path: Path, mime: str, limits: ExtractionLimits | None = None) -> ExtractionResult:
        """Extract text and metadata from a local file whose type was detected as `mime`."""

    async def aclose(self) -> None:  # optional hook: most extractors hold nothing
        return None


# ---------------------------------------------------------------------------------------------------
# decisions shared by both extractors


def _base_type(mime: str | None) -> str:
    return (mime or "").split(";", 1)[0].strip().lower()


def is_media(mime: str) -> bool:
    base = _base_type(mime)
    return base.startswith(_MEDIA_PREFIXES) and base != "image/svg+xml"


def _precheck(path: Path, mime: str, limits: ExtractionLimits) -> tuple[ExtractionResult | None, bool]:
    """(final result if no parse is needed, else None; whether to parse metadata only)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ExtractionResult("failed", "file missing"), False
    base = _base_type(mime)
    if size == 0:
        return ExtractionResult("skipped", REASON_EMPTY), False
    if base in UNSUPPORTED_TYPES:
        return ExtractionResult("skipped", f"unsupported type {base}", content_type=base), False
    if is_media(base):
        return None, True  # media: metadata only, whatever the size (Tika reads the headers, not the stream)
    if size > limits.max_file_bytes:
        return (
            ExtractionResult(
                "skipped",
                f"too large for extraction: {_mb(size)} > {_mb(limits.max_file_bytes)} limit",
                content_type=base,
            ),
            False,
        )
    return None, False


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def normalize_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """Tika gives a list for every key: keep scalars for single values, stack traces cut to one line."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("X-TIKA:content", "X-TIKA:content_handler"):
            continue
        values = value if isinstance(value, list) else [value]
        cleaned = [_clean_meta_value(key, v) for v in values]
        out[key] = cleaned[0] if len(cleaned) == 1 else cleaned
    return out


def _clean_meta_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if key.startswith("X-TIKA:EXCEPTION") or "Exception" in value[:200]:
        value = value.strip().splitlines()[0] if value.strip() else value
    return value[:_MAX_META_VALUE_CHARS]


def _values(metadata: dict[str, Any], key: str) -> list[str]:
    v = metadata.get(key)
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def _first(metadata: dict[str, Any], key: str) -> str | None:
    vals = _values(metadata, key)
    return vals[0] if vals else None


def _page_count(metadata: dict[str, Any]) -> int | None:
    for key in ("xmpTPg:NPages", "meta:page-count", "meta:slide-count"):
        raw = _first(metadata, key)
        if raw is not None:
            try:
                return int(float(raw))
            except ValueError:
                continue
    return None


def _problems(metadata: dict[str, Any], *, errors_only: bool = False) -> list[str]:
    """Exception and warning messages Tika left in the metadata (errors only: no parser warnings)."""
    prefixes = ("X-TIKA:EXCEPTION",) if errors_only else ("X-TIKA:EXCEPTION", "X-TIKA:warning", "X-TIKA:WARN")
    out: list[str] = []
    for key in metadata:
        if not key.startswith(prefixes) or key.endswith("limit_reached"):
            continue
        if errors_only and key == "X-TIKA:EXCEPTION:warn":
            continue
        out.extend(_values(metadata, key))
    return out


def _says_encrypted(messages: Iterable[str]) -> bool:
    return any(marker.lower() in m.lower() for m in messages for marker in _ENCRYPTION_MARKERS)


def _has_real_metadata(metadata: dict[str, Any]) -> bool:
    return any(not key.startswith(_BOOKKEEPING_PREFIXES) for key in metadata)


def classify(
    *,
    text: str,
    metadata: dict[str, Any],
    mime: str,
    limits: ExtractionLimits,
    html: str | None = None,
    error: str | None = None,
    archive_problem: str | None = None,
    truncated: bool = False,
) -> ExtractionResult:
    """Turn a raw Tika outcome into a status. iscc-tika does not raise for protected or corrupt files:
    it returns empty text, so emptiness is read together with the metadata it left."""
    ctype = _base_type(_first(metadata, "Content-Type")) or _base_type(mime)
    problems = _problems(metadata)
    if error is not None:
        if "zip bomb" in error.lower() or ("TIKA-237" in error and ctype in _ARCHIVE_TYPES):
            # Tika's SecureContentHandler aborts deeply nested or over-compressed archives; iscc-tika
            # only passes on the wrapper "TIKA-237: Illegal SAXException".
            return ExtractionResult(
                "failed",
                f"suspected zip bomb: Tika stopped parsing ({error})",
                metadata=metadata,
                content_type=ctype,
            )
        if _says_encrypted([error]):
            return ExtractionResult("failed", REASON_ENCRYPTED, metadata=metadata, content_type=ctype)
        return ExtractionResult("failed", f"corrupt or unreadable: {error}", metadata=metadata, content_type=ctype)

    if len(text) > limits.max_chars:
        text, truncated = text[: limits.max_chars], True
    has_text = bool(text.strip())
    if _first(metadata, "pdf:encrypted") == "true" or ctype in _ENCRYPTED_TYPES:
        metadata["encrypted"] = True
    if problems:
        metadata["warnings"] = problems[:20]
    common = {
        "metadata": metadata,
        "page_count": _page_count(metadata),
        "content_type": ctype,
    }

    if not has_text:
        if ctype in _ENCRYPTED_TYPES or _says_encrypted(problems) or archive_problem == "encrypted":
            return ExtractionResult("failed", REASON_ENCRYPTED, **common)
        if archive_problem:
            return ExtractionResult("failed", f"corrupt archive: {archive_problem}", **common)
        parsed_by = _values(metadata, "X-TIKA:Parsed-By")
        if (
            ctype in UNSUPPORTED_TYPES
            or ctype == "application/octet-stream"
            or (parsed_by and all(p.endswith("EmptyParser") for p in parsed_by))
        ):
            return ExtractionResult("skipped", f"unsupported type {ctype}", **common)
        errors = _problems(metadata, errors_only=True)
        if errors:
            return ExtractionResult("failed", f"corrupt or unreadable: {errors[0]}", **common)
        if not _has_real_metadata(metadata):
            return ExtractionResult("failed", f"corrupt or unreadable: no text and no metadata from {ctype}", **common)
        if ctype == "application/pdf":
            return ExtractionResult("done", "no text layer (scanned PDF? OCR is off)", **common)
        return ExtractionResult("done", "no text content", **common)

    if ctype in _ENCRYPTED_TYPES or archive_problem == "encrypted" or _says_encrypted(problems):
        metadata["partially_encrypted"] = True
    return ExtractionResult(
        "done",
        None,
        text=text,
        html=html,
        language=guess_language(text),
        truncated=truncated,
        **common,
    )


def _media_result(metadata: dict[str, Any], mime: str) -> ExtractionResult:
    ctype = _base_type(_first(metadata, "Content-Type")) or _base_type(mime)
    return ExtractionResult(
        "skipped",
        f"media type {_base_type(mime)}: stored and streamed, metadata only",
        metadata=metadata,
        page_count=None,
        content_type=ctype,
    )


def preview_html(xhtml: str) -> str | None:
    """The body of Tika's XHTML, sanitized (nh3) so it can be shown inside our pages."""
    import nh3

    lower = xhtml.lower()
    start = lower.find("<body")
    if start != -1:
        start = lower.find(">", start) + 1
        end = lower.rfind("</body>")
        xhtml = xhtml[start : end if end != -1 else len(xhtml)]
    cleaned = nh3.clean(xhtml).strip()
    return cleaned or None


def guess_language(text: str) -> str | None:
    """Script-level guess for CJK text: simplified or traditional Chinese, Japanese, Korean."""
    sample = text[:4000]
    han = kana = hangul = letters = 0
    for ch in sample:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
            han += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF:
            hangul += 1
        elif ch.isalpha():
            letters += 1
    total = han + kana + hangul + letters
    if total == 0:
        return None
    if kana > 0.1 * total:
        return "ja"
    if hangul > 0.2 * total:
        return "ko"
    if han < 0.2 * total:
        return None
    trad, simp = _han_variant_counts(sample)
    if trad > simp:
        return "zh-Hant"
    return "zh-Hans"


@functools.cache
def _opencc(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)  # loading the dictionaries takes ~0.1 s: once per process


def _han_variant_counts(sample: str) -> tuple[int, int]:
    han = "".join(ch for ch in sample if 0x4E00 <= ord(ch) <= 0x9FFF)
    to_simp = _opencc("t2s").convert(han)
    to_trad = _opencc("s2t").convert(han)
    trad = sum(1 for a, b in zip(han, to_simp, strict=False) if a != b)  # characters only traditional
    simp = sum(1 for a, b in zip(han, to_trad, strict=False) if a != b)  # characters only simplified
    return trad, simp


# ---------------------------------------------------------------------------------------------------
# in process: iscc-tika in killable child processes
#
# The child is a plain `python -c` subprocess rather than a multiprocessing one: spawn would re-import
# the parent's __main__ (breaking any script without a main guard), fork is unsafe in a threaded
# asyncio process. Frames are a 4-byte length and JSON, never pickle: a child that parsed a hostile
# file must not be able to make the parent execute anything.

_FRAME = struct.Struct(">I")
_CHILD_CODE = "from app.attachments.extraction import _worker_stdio_main; _worker_stdio_main()"
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def _worker_stdio_main() -> None:
    """Child process loop: one JSON request in, one JSON response out, until EOF."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever the native code prints must not corrupt the protocol
    with contextlib.suppress(OSError):
        os.nice(5)  # bulk imports should not starve the API process
    while True:
        header = _read_exactly(proto_in, _FRAME.size)
        if header is None:
            return
        body = _read_exactly(proto_in, _FRAME.unpack(header)[0])
        if body is None:
            return
        try:
            response = _tika_parse(json.loads(body))
        except BaseException as exc:  # pyo3 panics are BaseException; the parent must get an answer
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            response = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        data = _encode(response)
        proto_out.write(_FRAME.pack(len(data)) + data)


def _read_exactly(f: Any, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def _tika_parse(request: dict[str, Any]) -> dict[str, Any]:
    from iscc_tika import Extractor as TikaExtractor

    path: str = request["path"]
    if request["metadata_only"]:
        return {"text": "", "metadata": TikaExtractor().extract_file_metadata(path)}
    max_chars: int = request["max_chars"]
    # Office files: one XHTML pass gives the preview, and its text nodes are exactly Tika's plain text
    # (checked on the whole sample corpus), so a second parse for the text is not needed.
    xml_mode = request["want_html"] and _base_type(request["mime"]).startswith(_PREVIEW_PREFIXES)
    try:
        tika = TikaExtractor().set_xml_output(xml_mode)
        # in XHTML mode the limit also counts the newlines between the <meta> elements of the head
        limit = max_chars + 1 + (_XHTML_HEAD_SLACK if xml_mode else 0)
        output, metadata = tika.set_extract_string_max_length(limit).extract_file_to_string(path)
    except Exception as exc:  # iscc-tika raises TypeError(ParseError(...)) for unparseable input
        return {"error": _short_error(exc)}
    if xml_mode:
        text = xhtml_text(output)
        max_html: int = request["max_html_chars"]
        xhtml = output if text.strip() and len(output) <= max_html else None
    else:
        text, xhtml = output, None
    response: dict[str, Any] = {"text": text, "metadata": metadata, "xhtml": xhtml}
    ctype = _base_type((metadata.get("Content-Type") or [""])[0])
    if not text.strip() and ctype in _ARCHIVE_TYPES:
        response["archive_problem"] = _zip_problem(path)
    return response


_XHTML_HEAD_SLACK = 4096


class _XhtmlText(HTMLParser):
    _SKIP = frozenset({"head", "title", "script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._in_body = True
        elif tag in self._SKIP:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._in_body and not self._skip:
            self.parts.append(data)


def xhtml_text(xhtml: str) -> str:
    """The character content of the body of Tika's XHTML: what Tika's own text output would be."""
    parser = _XhtmlText()
    parser.feed(xhtml)
    parser.close()
    return "".join(parser.parts)


def _short_error(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg.splitlines()[0][:300]


def _zip_problem(path: str) -> str | None:
    """Why an archive gave no text: Tika says nothing for a broken or fully encrypted ZIP."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        return str(exc) or "not a readable zip"
    files = [i for i in infos if not i.is_dir()]
    if files and all(i.flag_bits & 0x1 for i in files):
        return "encrypted"
    return None


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class _WorkerGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.tasks = 0

    @classmethod
    async def start(cls) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD_CODE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def call(
        self, request: dict[str, Any], time_limit: float, max_memory: int | None, max_frame: int
    ) -> dict[str, Any]:
        self.tasks += 1
        assert self.process.stdin is not None
        data = _encode(request)
        try:
            self.process.stdin.write(_FRAME.pack(len(data)) + data)
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerGone(await self._death_reason()) from None
        reader = asyncio.ensure_future(self._read_frame(max_frame))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _WorkerGone(f"timeout after {_fmt_seconds(time_limit)} s")
                done, _ = await asyncio.wait({reader}, timeout=min(remaining, 0.2))
                if done:
                    return reader.result()
                if max_memory is not None:
                    rss = _rss_bytes(self.pid)
                    if rss is not None and rss > max_memory:
                        raise _WorkerGone(f"memory limit exceeded: {_mb(rss)} > {_mb(max_memory)}")
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader

    async def _read_frame(self, max_frame: int) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            header = await self.process.stdout.readexactly(_FRAME.size)
            (length,) = _FRAME.unpack(header)
            if length > max_frame:
                raise _WorkerGone(f"extractor sent an oversized answer ({_mb(length)})")
            body = await self.process.stdout.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            raise _WorkerGone(await self._death_reason()) from None
        try:
            response = await anyio.to_thread.run_sync(_decode, body)
        except ValueError:
            raise _WorkerGone("extractor sent an unreadable answer") from None
        if not isinstance(response, dict):
            raise _WorkerGone("extractor sent an unreadable answer")
        return response

    async def _death_reason(self) -> str:
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout=2)
        except TimeoutError:
            code = None
        return f"extractor process died (exit code {code})"

    async def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), timeout=5)

    async def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()  # EOF: the child leaves its loop
        try:
            await asyncio.wait_for(self.process.wait(), timeout=2)
        except TimeoutError:
            await self.kill()


def _fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def _finish(response: dict[str, Any], mime: str, limits: ExtractionLimits, metadata_only: bool) -> ExtractionResult:
    if "error" in response:
        return classify(text="", metadata={}, mime=mime, limits=limits, error=str(response["error"]))
    metadata = normalize_metadata(response.get("metadata") or {})
    if metadata_only:
        return _media_result(metadata, mime)
    xhtml = response.get("xhtml")
    return classify(
        text=str(response.get("text") or ""),
        metadata=metadata,
        mime=mime,
        limits=limits,
        html=preview_html(xhtml) if isinstance(xhtml, str) and xhtml else None,
        archive_problem=response.get("archive_problem"),
    )


class InProcessTikaExtractor(Extractor):
    """iscc-tika in a small pool of child processes, each killed on timeout or memory overrun.

    `max_workers` children run at once (each holds a Tika native image, ~200-300 MB RSS); a child is
    replaced after `max_tasks_per_worker` files so that slow leaks in native code cannot accumulate.
    """

    def __init__(self, *, max_workers: int = 1, max_tasks_per_worker: int = 500) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.max_workers = max_workers
        self.max_tasks_per_worker = max_tasks_per_worker
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._slots = asyncio.Semaphore(max_workers)
        self._closed = False

    async def extract(self, path: Path, mime: str, limits: ExtractionLimits | None = None) -> ExtractionResult:
        limits = limits or ExtractionLimits()
        path = Path(path)  # relative paths work: the child inherits our working directory
        final, metadata_only = await anyio.to_thread.run_sync(_precheck, path, mime, limits)
        if final is not None:
            return final
        request = {
            "path": str(path),
            "mime": mime,
            "metadata_only": metadata_only,
            "max_chars": limits.max_chars,
            "want_html": limits.want_html,
            "max_html_chars": limits.max_html_chars,
        }
        try:
            response = await self._run(request, limits)
        except _WorkerGone as gone:
            return ExtractionResult("failed", gone.reason, content_type=_base_type(mime))
        # sanitizing megabytes of HTML and the language guess would stall the event loop
        return await anyio.to_thread.run_sync(_finish, response, mime, limits, metadata_only)

    async def _run(self, request: dict[str, Any], limits: ExtractionLimits) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("extractor is closed")
        # text and XHTML are each at most max+1 characters of up to 4 UTF-8 bytes; metadata is small
        max_frame = 4 * (limits.max_chars + limits.max_html_chars) + 32 * 1024 * 1024
        async with self._slots:
            worker = await self._acquire()
            keep = False
            try:
                response = await worker.call(request, limits.timeout_seconds, limits.max_memory_bytes, max_frame)
                keep = True
                return response
            finally:
                self._busy.discard(worker)
                with anyio.CancelScope(shield=True):
                    if keep and worker.tasks < self.max_tasks_per_worker and not self._closed:
                        self._idle.append(worker)
                    elif keep:
                        await worker.stop()
                    else:
                        # timeout, memory, crash or our own cancellation: the child's state is unknown
                        await worker.kill()

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                self._busy.add(worker)
                return worker
            await worker.kill()
        worker = await _Worker.start()
        self._busy.add(worker)
        return worker

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in [*self._idle, *self._busy]]

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.stop()
        for worker in list(self._busy):
            await worker.kill()


# ---------------------------------------------------------------------------------------------------
# tika-server over HTTP


class TikaServerExtractor(Extractor):
    """``PUT /rmeta/text`` on a Tika 3.x server (run it with its forked child so timeouts restart it).

    The server enforces the time limit (X-Tika-Timeout-Millis) and the text limit (writeLimit); the
    response is one metadata dict per document, the container first, with text in ``X-TIKA:content``.
    """

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        timeout_margin_seconds: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._owns_client = client is None
        self.timeout_margin_seconds = timeout_margin_seconds

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    def build_headers(self, mime: str, limits: ExtractionLimits, metadata_only: bool = False) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "X-Tika-Timeout-Millis": str(int(limits.timeout_seconds * 1000)),
            "maxEmbeddedResources": str(limits.max_embedded_resources),
        }
        if not metadata_only:
            # One more than we keep: getting more than max_chars back means the text was cut. Tika stops
            # parsing at the limit and flags X-TIKA:EXCEPTION:write_limit_reached on the document.
            headers["writeLimit"] = str(limits.max_chars + 1)
        base = _base_type(mime)
        if base and base != "application/octet-stream":
            headers["Content-Type"] = base  # a hint only: Tika still detects from the bytes
        return headers

    async def extract(self, path: Path, mime: str, limits: ExtractionLimits | None = None) -> ExtractionResult:
        limits = limits or ExtractionLimits()
        path = Path(path)
        final, metadata_only = await anyio.to_thread.run_sync(_precheck, path, mime, limits)
        if final is not None:
            return final
        handler = "ignore" if metadata_only else "text"
        url = f"{self.base_url}/rmeta/{handler}"
        headers = self.build_headers(mime, limits, metadata_only)
        timeout = httpx.Timeout(limits.timeout_seconds + self.timeout_margin_seconds, connect=10.0)
        try:
            response = await self._get_client().put(url, content=_file_chunks(path), headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise ExtractorUnavailable(f"tika-server timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ExtractorUnavailable(f"tika-server unreachable: {type(exc).__name__}: {exc}") from exc
        return await anyio.to_thread.run_sync(self.interpret, response, mime, limits, metadata_only)

    def interpret(
        self, response: httpx.Response, mime: str, limits: ExtractionLimits, metadata_only: bool = False
    ) -> ExtractionResult:
        status = response.status_code
        base = _base_type(mime)
        if status == 422:
            body = response.text[:2000]
            if not body or _says_encrypted([body]):
                # Tika answers 422 for encrypted files, and with an empty body unless run with -includeStack
                reason = REASON_ENCRYPTED if body else "encrypted or unprocessable (tika-server 422)"
                return ExtractionResult("failed", reason, content_type=base)
            return ExtractionResult("failed", f"corrupt or unreadable: {_short_text(body)}", content_type=base)
        if status == 415:
            return ExtractionResult("skipped", f"unsupported type {base}", content_type=base)
        if status in (408, 429) or status >= 500:
            raise ExtractorUnavailable(f"tika-server answered {status}")
        if status != 200:
            return ExtractionResult("failed", f"tika-server answered {status}", content_type=base)
        try:
            docs = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ExtractorUnavailable("tika-server sent a response that is not JSON") from None
        if not isinstance(docs, list) or not docs or not all(isinstance(d, dict) for d in docs):
            raise ExtractorUnavailable("tika-server sent an unexpected JSON shape")
        container = normalize_metadata(docs[0])
        if metadata_only:
            return _media_result(container, mime)
        parts = [str(d.get("X-TIKA:content") or "") for d in docs]
        text = "\n".join(p for p in parts if p.strip())
        truncated = any(str(d.get("X-TIKA:EXCEPTION:write_limit_reached", "")).lower() == "true" for d in docs)
        embedded_problems = [
            msg
            for d in docs[1:]
            for key, value in normalize_metadata(d).items()
            if key.startswith(("X-TIKA:EXCEPTION", "X-TIKA:warning")) and not key.endswith("limit_reached")
            for msg in (value if isinstance(value, list) else [value])
        ]
        if embedded_problems:
            container["X-TIKA:EXCEPTION:embedded_exception"] = [
                *_values(container, "X-TIKA:EXCEPTION:embedded_exception"),
                *map(str, embedded_problems),
            ]
        if str(container.get("X-TIKA:EXCEPTION:embedded_resource_limit_reached", "")).lower() == "true":
            container["embedded_limit_reached"] = True
        container.pop("X-TIKA:EXCEPTION:write_limit_reached", None)
        error = None
        container_exc = _first(container, "X-TIKA:EXCEPTION:container_exception")
        if container_exc and not text.strip():
            error = container_exc
        return classify(
            text=text,
            metadata=container,
            mime=mime,
            limits=limits,
            error=error,
            truncated=truncated,
        )

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


def _short_text(body: str) -> str:
    return body.strip().splitlines()[0][:300] if body.strip() else "no detail"


async def _file_chunks(path: Path, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(chunk_size):
            yield chunk


def build_extractor(tika_url: str | None, **kwargs: Any) -> Extractor:
    """Tika server when a URL is configured (scaled deployment), iscc-tika in process otherwise."""
    if tika_url:
        return TikaServerExtractor(tika_url, **kwargs)
    return InProcessTikaExtractor(**kwargs)
