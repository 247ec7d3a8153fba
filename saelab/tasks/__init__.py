"""Circuit tasks (IOI, greater-than, docstring; tracr's reverse and frac_prevs): prompts, corruptions,
positive/negative sets, metrics.

Example::

    task = get_task("ioi")
    data = task.generate(model.tokenizer, n=64, seed=0)  # canonical (GPT-2) word lists
    task.metric(model(data.clean_tokens), data)  # logit(IO) − logit(S) per prompt
    texts = task.corpus_texts(1000, seed=0, vocabulary="tiny")  # training text
    held = task.generate(model.tokenizer, n=64, seed=0, vocabulary="tiny", split="heldout")

Splits (data in each task module and words.py): "train" is what the bundled models were trained and stopped
on, "broad" and "wide" wider training generators (docstring only; the same as "train" elsewhere), "dev"
(docstring) unseen words and layouts to choose when to stop on, "heldout" layouts and words no training
generator draws, never used while training; `corpus_texts` refuses "dev" and "heldout".
"""

from saelab.tasks.base import PosNeg, Prompt, PromptPair, TaskDataset, TaskVocabulary
from saelab.tasks.docstring import DOCSTRING, DocstringSetting
from saelab.tasks.gpt2 import gpt2_tokenizer
from saelab.tasks.greater_than import GREATER_THAN
from saelab.tasks.ioi import IOI
from saelab.tasks.published import published_circuit, published_heads
from saelab.tasks.registry import TASKS, get_task, list_tasks, register_task, required_single_tokens
from saelab.tasks.serialize import dataset_from_jsonl, dataset_from_rows, dataset_rows, dataset_to_jsonl
from saelab.tasks.task import Task
from saelab.tasks.tracr_programs import FRAC_PREVS, REVERSE, TRACR_PROGRAMS, TracrProgram

for _task in (IOI, GREATER_THAN, DOCSTRING, REVERSE, FRAC_PREVS):
    register_task(_task)

__all__ = [
    "TASKS",
    "TRACR_PROGRAMS",
    "DocstringSetting",
    "PosNeg",
    "Prompt",
    "PromptPair",
    "Task",
    "TaskDataset",
    "TaskVocabulary",
    "TracrProgram",
    "dataset_from_jsonl",
    "dataset_from_rows",
    "dataset_rows",
    "dataset_to_jsonl",
    "get_task",
    "gpt2_tokenizer",
    "list_tasks",
    "published_circuit",
    "published_heads",
    "register_task",
    "required_single_tokens",
]
