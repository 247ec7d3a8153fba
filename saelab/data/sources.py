"""Text sources: where documents come from (local files, a Python generator, in-memory texts, the hub).

A source is a small frozen value with `documents(seed)` (a deterministic iterator of document strings for a
seed) and `describe()` (a JSON-able dict recorded in activation-store manifests, so a resumed run can check it
reads the same data).
"""

import codecs
import glob
import inspect
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlparse

from saelab.errors import SaelabError

log = logging.getLogger(__name__)

SplitBy = Literal["file", "paragraph", "line"]
_SAMPLE_BY = {"file": "document", "paragraph": "paragraph", "line": "line"}
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DataSourceError(SaelabError, ValueError):
    """A text source that cannot be read: missing or empty files, bad encoding, hub not reachable."""


@runtime_checkable
class TextSource(Protocol):
    def documents(self, seed: int) -> Iterator[str]:
        """Documents in a deterministic order for `seed`."""
        ...

    def describe(self) -> dict:
        """What the source is, as JSON-able values (recorded in manifests)."""
        ...


@dataclass(frozen=True)
class FileSource:
    """Local files read through Hugging Face `datasets` (streaming, so nothing is copied into its cache)."""

    paths: tuple[str, ...]
    """Files to read; text files by default, .jsonl/.json/.parquet/.csv through their column `text_column`."""
    split_by: SplitBy = "file"
    """What one document is in a text file: the whole file, a paragraph, or a line."""
    text_column: str = "text"
    """Column holding the text in structured files."""
    shuffle_buffer: int = 1000
    """Documents in the shuffle buffer (files are also shuffled); 0 keeps the given order."""

    def __post_init__(self) -> None:
        if not self.paths:
            raise DataSourceError("no input files given; pass at least one text file or directory")
        if self.split_by not in _SAMPLE_BY:
            raise DataSourceError(f"split_by {self.split_by!r} is not one of {', '.join(_SAMPLE_BY)}")
        if self.shuffle_buffer < 0:
            raise DataSourceError(f"shuffle_buffer {self.shuffle_buffer} must be >= 0")
        for path in self.paths:
            if not Path(path).is_file():
                raise DataSourceError(f"input file {path!r} does not exist or is not a file")
        suffixes = {_BUILDERS.get(Path(p).suffix, "text") for p in self.paths}
        if len(suffixes) > 1:
            raise DataSourceError(f"input files mix formats ({', '.join(sorted(suffixes))}); give one kind at a time")

    @classmethod
    def from_patterns(cls, patterns: Iterable[str], **options) -> "FileSource":
        """Files from paths, directories (all files below, sorted) and glob patterns."""
        found: list[str] = []
        for pattern in patterns:
            found.extend(_expand(pattern))
        return cls(tuple(found), **options)

    def documents(self, seed: int) -> Iterator[str]:
        import datasets

        builder = _BUILDERS.get(Path(self.paths[0]).suffix, "text")
        options = {"sample_by": _SAMPLE_BY[self.split_by]} if builder == "text" else {}
        dataset = datasets.load_dataset(builder, data_files=list(self.paths), split="train", streaming=True,
                                        **options)
        if self.shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=self.shuffle_buffer)
        try:
            yield from _texts(dataset, self.text_column, self.describe())
        except UnicodeDecodeError:
            raise _not_utf8(_first_non_utf8(self.paths)) from None

    def check_utf8(self) -> None:
        """Raise naming the first text file that is not UTF-8 (reads every text file once)."""
        if _BUILDERS.get(Path(self.paths[0]).suffix, "text") != "text":
            return
        bad = _first_non_utf8(self.paths)
        if bad != "<unknown>":
            raise _not_utf8(bad)

    def describe(self) -> dict:
        files = [{"path": str(Path(p).resolve()), "bytes": os.path.getsize(p)} for p in self.paths]
        return {"kind": "files", "files": files, "split_by": self.split_by, "text_column": self.text_column,
                "shuffle_buffer": self.shuffle_buffer}


@dataclass(frozen=True)
class GeneratorSource:
    """Documents from a Python callable, e.g. a task's prompt generator. It is called afresh for each pass."""

    make: Callable[..., Iterable[str]]
    """`make(seed)` or `make()` returning an iterable of documents; must be deterministic for a seed."""
    name: str
    """A name that identifies the generator and its settings in manifests (e.g. "ioi-narratives-v1")."""

    def documents(self, seed: int) -> Iterator[str]:
        takes_seed = bool(inspect.signature(self.make).parameters)
        for text in (self.make(seed) if takes_seed else self.make()):
            if not isinstance(text, str):
                raise DataSourceError(f"generator {self.name!r} yielded a {type(text).__name__}, not a str")
            yield text

    def describe(self) -> dict:
        return {"kind": "generator", "name": self.name}


@dataclass(frozen=True)
class TextsSource:
    """A fixed list of documents held in memory, shuffled by the seed."""

    texts: tuple[str, ...]
    """The documents."""
    name: str = "texts"
    """A name for manifests."""
    shuffle: bool = True
    """Shuffle the documents with the seed."""

    def documents(self, seed: int) -> Iterator[str]:
        import random

        order = list(range(len(self.texts)))
        if self.shuffle:
            random.Random(seed).shuffle(order)
        return (self.texts[i] for i in order)

    def describe(self) -> dict:
        import hashlib

        digest = hashlib.sha256("\x00".join(self.texts).encode()).hexdigest()[:16]
        return {"kind": "texts", "name": self.name, "n_texts": len(self.texts), "sha256": digest,
                "shuffle": self.shuffle}


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub dataset, streamed (needs the hub to be reachable)."""

    name: str
    """Dataset name on the hub, e.g. "NeelNanda/pile-10k"."""
    split: str = "train"
    """Split to read."""
    config: str | None = None
    """Dataset configuration, if it has several."""
    text_column: str = "text"
    """Column holding the text."""
    shuffle_buffer: int = 1000
    """Documents in the shuffle buffer; 0 keeps the hub's order."""

    def documents(self, seed: int) -> Iterator[str]:
        import datasets

        if not hub_reachable():
            raise DataSourceError(f"hub dataset {self.name!r} needs the Hugging Face hub, which is not reachable "
                                  "here; use local files or the bundled corpus instead")
        dataset = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        if self.shuffle_buffer:
            dataset = dataset.shuffle(seed=seed, buffer_size=self.shuffle_buffer)
        yield from _texts(dataset, self.text_column, self.describe())

    def describe(self) -> dict:
        return {"kind": "hub", "name": self.name, "split": self.split, "config": self.config,
                "text_column": self.text_column, "shuffle_buffer": self.shuffle_buffer}


def _texts(dataset, column: str, description: dict) -> Iterator[str]:
    for row in dataset:
        if column not in row:
            raise DataSourceError(f"source {description.get('name') or description['kind']!r} has no column "
                                  f"{column!r} (columns: {', '.join(row)}); set text_column")
        text = row[column]
        if text:
            yield text


def _expand(pattern: str) -> list[str]:
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        if not files:
            raise DataSourceError(f"input directory {pattern!r} is empty (no text files); pass a corpus with text")
        return files
    if path.is_file():
        return [str(path)]
    matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise DataSourceError(f"input {pattern!r} matches no files")
    return matches


def _hidden(relative: Path) -> bool:
    """Files under hidden folders or __pycache__ are not corpus text."""
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


def _not_utf8(path: str) -> DataSourceError:
    return DataSourceError(f"input file {path!r} is not UTF-8 text; convert it (e.g. iconv -t utf-8) or leave it out")


def _first_non_utf8(paths: Iterable[str]) -> str:
    """The first file that does not decode as UTF-8 (read in chunks, only on the error path)."""
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return path
    return "<unknown>"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (fails fast offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


SourceParser = Callable[[str], TextSource]
SOURCE_PREFIXES: dict[str, SourceParser] = {}


def register_source_prefix(prefix: str, parse: SourceParser) -> None:
    """Make `--source PREFIX:REST` build a source with `parse(REST)`; a prefix registered twice is an error."""
    if prefix in SOURCE_PREFIXES:
        raise ValueError(f"source prefix {prefix!r} is already registered")
    SOURCE_PREFIXES[prefix] = parse


def _parse_hub(rest: str) -> HubSource:
    name, _, split = rest.partition(":")
    return HubSource(name, split=split or "train")


def _parse_bundled(rest: str) -> TextSource:
    if rest:
        raise DataSourceError(f"source 'bundled:{rest}' takes no argument; write 'bundled'")
    return bundled_source()


register_source_prefix("hub", _parse_hub)
register_source_prefix("files", lambda rest: FileSource.from_patterns(rest.split(",")))
register_source_prefix("bundled", _parse_bundled)


def source_from_spec(spec: str) -> TextSource:
    """A source from CLI text: "bundled", "hub:NAME[:SPLIT]", "files:A,B" or plain paths/globs/directories."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCE_PREFIXES:
        return SOURCE_PREFIXES[prefix](rest)
    if spec in SOURCE_PREFIXES:
        return SOURCE_PREFIXES[spec]("")
    return FileSource.from_patterns([p for p in spec.split(",") if p])


def checked_source(spec: str) -> TextSource:
    """`source_from_spec(spec)`, with its text files read once now to check they are UTF-8 (a bad file is a
    one-line DataSourceError before anything is written, not a failure deep inside a run)."""
    source = source_from_spec(spec)
    if isinstance(source, FileSource):
        source.check_utf8()
    return source


def bundled_source() -> TextSource:
    """The bundled training corpus (standard-library source mixed with task texts), from `saelab.corpus`."""
    from saelab.corpus import CORPUS_NAME, bundled_corpus

    return GeneratorSource(bundled_corpus, name=CORPUS_NAME)
