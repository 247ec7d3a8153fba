"""The bundled training corpus: the interpreter's standard-library source, circuit-task texts and narratives.

Everything here is offline and deterministic for a seed. `bundled_corpus(seed)` yields the documents of one
pass (the form `saelab.data` sources take); `training/train_lm.py` draws from the same parts with its own
token shares. Standard-library files are split into a training and a held-out part by a hash of their path,
so the split is stable when files are added or removed.
"""

import hashlib
import random
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

CORPUS_NAME = "saelab-bundled-v1"
"""Identifies the corpus recipe in manifests and model cards; bump it when the recipe changes."""

Split = Literal["train", "held_out"]
TASK_SOURCES: tuple[str, ...] = ("ioi", "greater_than", "docstring")
"""Task registry names whose `corpus_texts` feed the corpus."""
HELD_OUT_EVERY = 20
"""One standard-library file in about this many is held out (by a hash of its relative path)."""

# Folders (any path component) and files of the standard library that are not ordinary source: tests,
# the IDLE app, generated tables (encodings, pydoc topics), build data and installed packages.
_EXCLUDED_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "site-packages", "lib-dynload",
    "encodings", "pydoc_data", "ensurepip", "__pycache__",
})
_EXCLUDED_PREFIXES = ("config-", "_sysconfigdata")


class Document(NamedTuple):
    """One corpus document and the source it came from."""

    text: str
    source: str
    """"stdlib", a task name ("ioi", "greater_than", "docstring") or "narrative"."""


@dataclass(frozen=True)
class CorpusMix:
    """How many generated documents accompany the standard-library files in one pass of `bundled_corpus`."""

    task_texts: int = 40_000
    """Texts per task (each task's `corpus_texts`)."""
    narratives: int = 20_000
    """Short narratives (`narrative_texts`)."""

    def __post_init__(self) -> None:
        for name in ("task_texts", "narratives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"CorpusMix.{name} must be an int >= 0, got {value!r}")


def stdlib_root() -> Path:
    """The standard library of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_source(relative: Path) -> bool:
    if relative.suffix != ".py" or relative.name.startswith(_EXCLUDED_PREFIXES):
        return False
    return not any(
        part in _EXCLUDED_DIRS or part.startswith(_EXCLUDED_PREFIXES) for part in relative.parts[:-1]
    )


def is_held_out(relative_path: str) -> bool:
    """Whether a standard-library file (POSIX path relative to the stdlib root) is in the held-out split."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_EVERY == 0


def stdlib_files(split: Split = "train", root: Path | None = None) -> list[Path]:
    """Standard-library source files of `split`, sorted by relative path."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split {split!r} is not 'train' or 'held_out'")
    root = stdlib_root() if root is None else Path(root)
    relative = sorted(p.relative_to(root) for p in root.rglob("*.py") if _is_source(p.relative_to(root)))
    return [root / r for r in relative if is_held_out(r.as_posix()) == (split == "held_out")]


def read_source(path: Path) -> str | None:
    """A file's text, or None for files that are not UTF-8 (a few legacy modules)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def stdlib_documents(split: Split = "train", root: Path | None = None) -> Iterator[Document]:
    """One document per non-empty standard-library file of `split`, in path order."""
    for path in stdlib_files(split, root):
        text = read_source(path)
        if text and text.strip():
            yield Document(text, "stdlib")


def task_documents(n: int, seed: int, tasks: Sequence[str] = TASK_SOURCES) -> list[Document]:
    """`n` complete texts of each task (their "tiny" vocabulary), task by task."""
    from saelab.tasks import get_task

    documents = []
    for offset, name in enumerate(tasks):
        texts = get_task(name).corpus_texts(n, seed=seed * 1009 + offset, vocabulary="tiny")
        documents.extend(Document(text, name) for text in texts)
    return documents


def bundled_documents(seed: int = 0, split: Split = "train", mix: CorpusMix = CorpusMix()) -> list[Document]:
    """One pass of the corpus, shuffled by `seed`: stdlib files of `split` plus generated texts.

    The held-out split is the held-out standard-library files only (generated texts are always fresh).
    """
    documents = list(stdlib_documents(split))
    if split == "train":
        if mix.task_texts:
            documents += task_documents(mix.task_texts, seed)
        if mix.narratives:
            documents += [Document(t, "narrative") for t in narrative_texts(mix.narratives, seed)]
    random.Random(seed).shuffle(documents)
    return documents


def bundled_corpus(seed: int = 0, split: Split = "train", mix: CorpusMix = CorpusMix()) -> Iterator[str]:
    """The texts of `bundled_documents` (a `saelab.data` generator source: `make(seed)`)."""
    return (doc.text for doc in bundled_documents(seed, split, mix))


def token_shares(
    documents: Iterable[Document], encode: Callable[[list[str]], list[list[int]]]
) -> dict[str, float]:
    """The fraction of tokens each source contributes (`encode` maps texts to token-id lists)."""
    counts: dict[str, int] = {}
    by_source: dict[str, list[str]] = {}
    for doc in documents:
        by_source.setdefault(doc.source, []).append(doc.text)
    for source, texts in by_source.items():
        counts[source] = sum(len(ids) for ids in encode(texts))
    total = sum(counts.values()) or 1
    return {source: count / total for source, count in sorted(counts.items())}


# --- narratives ------------------------------------------------------------------------------------------

# Short stories and chronicles for variety beyond the task templates. {A} {B} {C} are distinct names, {P} {Q}
# places, {O} an object, {N} an event noun, {Y1} < {Y2} years of one century. None ends "... gave X to".
_NARRATIVES: tuple[str, ...] = (
    "{A} lived near the {P}. Every morning {A} walked to the {Q} and bought a {O}.",
    "{A} and {B} are old friends. {A} likes the {P}, but {B} prefers the {Q}.",
    "{A} lost a {O} at the {P}. Later, {B} found it near the {Q} and called {A}.",
    "When {A} came home from the {P}, {B} was already cooking dinner.",
    "{A} asked {B} about the {O}. {B} said that {C} had taken it to the {P}.",
    "The {P} was quiet. {A} sat by the window and read a book about the {Q}.",
    "{A} wrote a long letter. {B} read it at the {P} and smiled.",
    "On Monday {A} visited the {P}. On Tuesday {A} visited the {Q}.",
    "{A}, {B} and {C} played cards at the {P} until midnight.",
    "{A} forgot the {O} at the {P}, so {A} went back to get it.",
    "In {Y1}, the {N} began. It was over by {Y2}.",
    "The {N} started in {Y1}. By {Y2} it had ended, and the town was calm again.",
    "Records from {Y1} mention the {N}; a second account dates its end to {Y2}.",
    "Born in {Y1}, {A} lived through the {N} and died in {Y2}.",
    "{A} kept a diary from {Y1} to {Y2}, writing mostly about the {P}.",
    "The old {P} was built in {Y1} and rebuilt in {Y2}.",
)


def _fill_narrative(template: str, rng: random.Random, words: dict[str, Sequence[str]]) -> str:
    a, b, c = rng.sample(words["names"], 3)
    p, q = rng.sample(words["places"], 2)
    century, y1 = rng.randint(11, 19), rng.randint(0, 97)
    y2 = rng.randint(y1 + 1, 99)
    return template.format(
        A=a, B=b, C=c, P=p, Q=q, O=rng.choice(words["objects"]), N=rng.choice(words["nouns"]),
        Y1=f"{century}{y1:02d}", Y2=f"{century}{y2:02d}",
    )


def narrative_words() -> dict[str, tuple[str, ...]]:
    """Word lists the narratives draw from (the tasks' names, places, objects and event nouns)."""
    from saelab.tasks import words

    return {
        "names": words.IOI_NAMES,
        "places": words.IOI_PLACES + words.IOI_EXTRA_PLACES,
        "objects": words.IOI_OBJECTS + words.IOI_EXTRA_OBJECTS,
        "nouns": words.GREATER_THAN_NOUNS + words.GREATER_THAN_EXTRA_NOUNS,
    }


def narrative_texts(n: int, seed: int) -> list[str]:
    """`n` narratives of one to three sentences-groups each, deterministic for `seed`."""
    rng, words = random.Random(seed), narrative_words()
    texts = []
    for _ in range(n):
        parts = [_fill_narrative(rng.choice(_NARRATIVES), rng, words) for _ in range(rng.randint(1, 3))]
        texts.append(" ".join(parts))
    return texts
