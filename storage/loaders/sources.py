"""Finding and reading the input files: folders, zip archives, compressed files, encodings.

Every CSV is read as strings in chunks (bounded memory); the loaders parse and
validate the values themselves. Text is decoded as UTF-8 (a BOM is dropped) and a
byte sequence that is not UTF-8 is read as cp1252 (Latin-1 for the five bytes cp1252
leaves undefined), so Latin-1/cp1252 exports load without an encoding option.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import queue
import re
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from storage.loaders.report import LoadError

COMPRESSION_SUFFIXES = (".gz", ".xz", ".bz2", ".zip")
TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
DEFAULT_CHUNKSIZE = 100_000

_FALLBACK_ERRORS = "pulse-cp1252-fallback"
_fallback_counter: ContextVar[list[int] | None] = ContextVar("pulse_fallback_counter", default=None)


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start:err.end]
    counter = _fallback_counter.get()
    if counter is not None:
        counter[0] += len(bad)
    return "".join(_cp1252_char(b) for b in bad), err.end


def _cp1252_char(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return bytes([byte]).decode("latin-1")


codecs.register_error(_FALLBACK_ERRORS, _cp1252_fallback)


@dataclass(frozen=True)
class SourceFile:
    """One input file, wherever it lives (plain, compressed, or inside a zip archive)."""

    name: str  # base name, e.g. "olist_orders_dataset.csv.xz"
    label: str  # shown in messages and in quarantine.source
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)

    @property
    def stem(self) -> str:
        """Lower-case name without compression and text suffixes ("olist_orders_dataset")."""
        name = self.name.lower()
        changed = True
        while changed:
            changed = False
            for suffix in COMPRESSION_SUFFIXES + TEXT_SUFFIXES:
                if name.endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
                    changed = True
        return name

    def open(self) -> BinaryIO:
        """The decompressed bytes."""
        try:
            return self.opener()
        except (OSError, zipfile.BadZipFile, lzma.LZMAError, EOFError) as exc:
            raise LoadError(f"{self.label}: cannot open ({exc}).") from None


def _decompressing(name: str, raw: BinaryIO, label: str) -> BinaryIO:
    lower = name.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if lower.endswith(".xz"):
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if lower.endswith(".bz2"):
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if lower.endswith(".zip"):
        archive = zipfile.ZipFile(raw)
        members = _zip_members(archive)
        if len(members) != 1:
            raise LoadError(
                f"{label}: the zip archive holds {len(members)} data files "
                f"({', '.join(m.filename for m in members[:5])}); expected exactly one."
            )
        member = members[0]
        return _decompressing(member.filename, archive.open(member), label)
    return raw


def _zip_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [
        m for m in archive.infolist()
        if not m.is_dir() and not m.filename.startswith("__MACOSX/")
        and not Path(m.filename).name.startswith(".")
    ]


def _file_source(path: Path) -> SourceFile:
    def opener() -> BinaryIO:
        return _decompressing(path.name, open(path, "rb"), str(path))  # noqa: SIM115 - returned

    return SourceFile(path.name, str(path), opener)


def _member_source(archive_path: Path, member: str) -> SourceFile:
    label = f"{archive_path}!{member}"

    def opener() -> BinaryIO:
        archive = zipfile.ZipFile(archive_path)
        return _decompressing(member, archive.open(member), label)

    return SourceFile(Path(member).name, label, opener)


def list_sources(path: Path) -> list[SourceFile]:
    """The files behind `path`: a folder's files, a zip archive's members, or the file itself.

    A zip archive holding several files is treated as a folder; one holding a single
    file is that file.
    """
    if not path.exists():
        raise LoadError(f"{path} does not exist.")
    if path.is_dir():
        return [_file_source(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = _zip_members(archive)
        except zipfile.BadZipFile:
            raise LoadError(f"{path} is not a readable zip archive.") from None
        if len(members) > 1:
            return [_member_source(path, m.filename) for m in members]
    return [_file_source(path)]


def single_source(path: Path) -> SourceFile:
    """The one data file behind `path` (a file, a single-file zip, or a folder with one data file)."""
    sources = list_sources(path)
    data = [s for s in sources if any(suf in s.name.lower() for suf in TEXT_SUFFIXES)] or sources
    if len(data) != 1:
        names = ", ".join(s.name for s in data[:6])
        raise LoadError(f"{path} holds {len(data)} files ({names}); give the path of one CSV file.")
    return data[0]


# --- CSV reading -------------------------------------------------------------------------

_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")


@dataclass(frozen=True)
class CsvOptions:
    """How to read a CSV: separator, header, names, encoding, chunk size."""

    sep: str = ","
    header: bool | None = None  # None: a header unless `names` are given
    names: tuple[str, ...] | None = None
    encoding: str | None = None  # None: UTF-8 with cp1252 fallback
    chunksize: int = DEFAULT_CHUNKSIZE

    @property
    def has_header(self) -> bool:
        return self.header if self.header is not None else not self.names

    def pandas_kwargs(self) -> dict:
        sep = {"whitespace": r"\s+", "space": r"\s+", "tab": "\t", "\\t": "\t",
               "comma": ",", "semicolon": ";", "pipe": "|"}.get(self.sep, self.sep)
        kw: dict = {
            "sep": sep,
            "dtype": str,
            "keep_default_na": False,
            "na_values": [""],
            "on_bad_lines": "warn",
        }
        if self.encoding:
            kw["encoding"] = self.encoding
        else:
            kw["encoding"] = "utf-8-sig"
            kw["encoding_errors"] = _FALLBACK_ERRORS
        if self.names:
            kw["header"] = 0 if self.header else None  # given names replace a header line
            kw["names"] = list(self.names)
        elif not self.has_header:
            kw["header"] = None
        return kw


@dataclass
class Chunk:
    """Raw string columns of consecutive data rows; index = 0-based data row number."""

    frame: pd.DataFrame
    cut: pd.DataFrame | None = None  # the last row, when the file ends without a line end
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (file line, problem)
    header_lines: int = 1  # lines before the first data row


class _TailReader(io.RawIOBase):
    """Passes bytes through and remembers the last one (to tell a cut-off last line)."""

    KEEP = 1 << 16

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.tail = b""
        self.size = 0

    @property
    def last(self) -> bytes:
        return self.tail[-1:]

    def last_line(self) -> bytes:
        return self.tail.rsplit(b"\n", 1)[-1]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - memoryview
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self.tail = (self.tail + data)[-self.KEEP:] if n < self.KEEP else data[-self.KEEP:]
            self.size += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


class _ReadErrors:
    """Turns the errors of a broken file into a LoadError that says what is wrong."""

    def __init__(self, label: str):
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        if exc is None or isinstance(exc, LoadError):
            return False
        if isinstance(exc, EOFError | zlib.error | lzma.LZMAError | gzip.BadGzipFile | zipfile.BadZipFile):
            raise LoadError(
                f"{self.label} is truncated or corrupt: the compressed data ends early or is damaged ({exc})."
            ) from None
        if isinstance(exc, pd.errors.EmptyDataError):
            raise LoadError(f"{self.label} is empty.") from None
        if isinstance(exc, pd.errors.ParserError):
            detail = str(exc).replace("Error tokenizing data. C error: ", "")
            raise LoadError(
                f"{self.label} is not a well-formed CSV ({detail}); a quoted field that never "
                "ends usually means the file was cut off."
            ) from None
        if isinstance(exc, UnicodeDecodeError | LookupError):
            raise LoadError(f"{self.label}: cannot decode the text ({exc}).") from None
        return False


def read_header(src: SourceFile, opts: CsvOptions) -> list[str]:
    """The column names of a CSV (positional "0", "1", ... without a header)."""
    kw = opts.pandas_kwargs()
    kw.pop("on_bad_lines")
    with _ReadErrors(src.label), src.open() as raw:
        frame = pd.read_csv(raw, nrows=0 if opts.has_header or opts.names else 1, **kw)
    return _column_names(frame, opts)


def _column_names(frame: pd.DataFrame, opts: CsvOptions) -> list[str]:
    if opts.names:
        return list(opts.names)
    if not opts.has_header:
        return [str(i) for i in range(frame.shape[1])]
    return [str(c).lstrip("\ufeff").strip() for c in frame.columns]


def read_chunks(src: SourceFile, opts: CsvOptions, stats: dict | None = None) -> Iterator[Chunk]:
    """Chunks of the CSV as raw strings, with rows the parser skipped and a cut-off last row.

    `stats` (if given) receives "cp1252_bytes": bytes decoded by the cp1252 fallback.
    """
    counter = [0]
    token = _fallback_counter.set(counter)
    try:
        with _ReadErrors(src.label):
            tail = _TailReader(src.open())
            buffered = io.BufferedReader(tail, buffer_size=1 << 20)
            try:
                reader = pd.read_csv(buffered, chunksize=opts.chunksize, **opts.pandas_kwargs())
                pending = _next_chunk(reader, opts)
                while pending.frame is not None:
                    following = _next_chunk(reader, opts)
                    if following.frame is None:
                        # the last chunk: rows skipped after it belong to it
                        pending.bad_lines.extend(following.bad_lines)
                        if tail.size and tail.last not in (b"\n", b"\r") and len(pending.frame):
                            # No line end after the last row: many exporters do that, so the row
                            # is kept when it has all its fields; fewer fields = the file was cut.
                            if stats is not None:
                                stats["unterminated_last_line"] = True
                            if _count_fields(tail.last_line(), opts) < pending.frame.shape[1]:
                                pending.cut = pending.frame.iloc[-1:]
                                pending.frame = pending.frame.iloc[:-1]
                    if stats is not None:
                        stats["cp1252_bytes"] = counter[0]
                    yield pending
                    pending = following
            finally:
                buffered.close()
    finally:
        _fallback_counter.reset(token)


_T = TypeVar("_T")


def prefetch(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Run the iterator `items` in a background thread, `depth` items ahead of the consumer.

    Decompressing and parsing the next chunk (which release the GIL for much of
    their work) then overlaps with validating and writing this one. Errors are
    re-raised in the consumer; closing the consumer stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                q.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put("item", item):
                    break
            else:
                put("done", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put("error", exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="pulse-load-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value  # type: ignore[misc]
            elif kind == "error":
                raise value  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
        thread.join()


def read_whole(src: SourceFile, opts: CsvOptions) -> tuple[pd.DataFrame, list[Chunk], dict]:
    """A whole CSV as one raw frame, the chunks (for their skipped and cut rows) and read stats.

    Touches nothing but the file, so several can be read in parallel threads.
    """
    stats: dict = {}
    chunks = list(read_chunks(src, opts, stats))
    frames = [c.frame for c in chunks]
    if not frames:  # a header and no rows
        return pd.DataFrame(columns=read_header(src, opts), dtype="str"), chunks, stats
    frame = pd.concat(frames) if len(frames) > 1 else frames[0]
    for c in chunks:
        c.frame = c.frame.iloc[:0]  # keep only the extras
    return frame, chunks, stats


# pandas' default "str" dtype, which Arrow string columns become without a copy
_STR = pd.StringDtype("pyarrow", na_value=float("nan"))


def read_chunks_fast(src: SourceFile, opts: CsvOptions, stats: dict | None = None) -> Iterator[Chunk]:
    """`read_chunks` with Arrow's multi-threaded CSV parser: the same chunks, several times faster.

    Arrow handles the common case (UTF-8, regular lines). At the first thing only the
    pandas reader treats as documented (bytes that are not UTF-8, a line with a wrong
    number of fields, a cut-off file), the chunk at hand is dropped and `read_chunks`
    reads the rest of the file, skipping the rows already given out.
    """
    if opts.sep != "," or opts.names or not opts.has_header or opts.encoding not in (None, "utf-8", "utf8"):
        yield from read_chunks(src, opts, stats)
        return
    names = read_header(src, opts)
    if len(set(names)) != len(names):
        yield from read_chunks(src, opts, stats)
        return
    done = 0
    for chunk in _arrow_chunks(src, opts, names, stats):
        if chunk is None:  # Arrow gave up: pandas reads the rest
            for rest in read_chunks(src, opts, stats):
                if done:
                    rest.frame = rest.frame[rest.frame.index >= done]
                if len(rest.frame) or rest.bad_lines or rest.cut is not None:
                    yield rest
            return
        done += len(chunk.frame)
        yield chunk


def _arrow_chunks(src: SourceFile, opts: CsvOptions, names: list[str],
                  stats: dict | None) -> Iterator[Chunk | None]:
    """Chunks parsed by Arrow; None (and stop) at the first row Arrow cannot give as pandas would."""
    invalid: list[int] = []

    def on_invalid(_row: object) -> str:
        invalid.append(1)
        return "skip"

    block = min(max(opts.chunksize * 128, 1 << 20), 16 << 20)
    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=block, use_threads=True)
    parse = pacsv.ParseOptions(delimiter=",", newlines_in_values=True, invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), null_values=[""],
                                   strings_can_be_null=True, quoted_strings_can_be_null=True)
    start = 0
    with _ReadErrors(src.label):
        tail = _TailReader(src.open())
        buffered = io.BufferedReader(tail, buffer_size=1 << 20)
        try:
            try:
                reader = pacsv.open_csv(buffered, read_options=read, parse_options=parse, convert_options=convert)
            except (pa.ArrowInvalid, UnicodeDecodeError):
                yield None
                return
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    yield None
                    return
                if invalid:
                    yield None
                    return
                for lo in range(0, batch.num_rows, opts.chunksize):
                    part = batch.slice(lo, opts.chunksize)
                    frame = part.to_pandas(types_mapper=lambda t: _STR if t == pa.string() else None)
                    frame.index = pd.RangeIndex(start, start + len(frame))
                    start += len(frame)
                    yield Chunk(frame)
        finally:
            buffered.close()
    if stats is not None:
        stats["cp1252_bytes"] = 0
        if tail.size and tail.last not in (b"\n", b"\r") and start:
            stats["unterminated_last_line"] = True


def _count_fields(line: bytes, opts: CsvOptions) -> int:
    text = line.decode(opts.encoding or "utf-8", errors=_FALLBACK_ERRORS).lstrip("\ufeff")
    sep = opts.pandas_kwargs()["sep"]
    if sep == r"\s+":
        return len(text.split())
    if len(sep) != 1:
        return len(re.split(sep, text))
    return len(next(csv.reader([text], delimiter=sep), []))


def _next_chunk(reader, opts: CsvOptions) -> Chunk:  # noqa: ANN001 - TextFileReader
    """The next chunk; its frame is None past the end."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = next(reader)
        except StopIteration:
            frame = None
    bad: list[tuple[int, str]] = []
    for w in caught:
        for line in str(w.message).splitlines():
            m = _BAD_LINE.match(line.strip())
            if m:
                bad.append((int(m.group(1)), m.group(2)))
    if frame is not None:
        frame.columns = _column_names(frame, opts)
    header_lines = 1 if opts.has_header else 0
    return Chunk(frame, bad_lines=bad, header_lines=header_lines)  # type: ignore[arg-type]
