"""The registry of circuit tasks, by name."""

from saelab.tasks.task import Task


class TaskRegistry(dict[str, Task]):
    """A name → Task mapping that refuses to register a name twice."""

    def __setitem__(self, name: str, task: Task) -> None:
        if name in self:
            raise ValueError(f"task {name!r} is already registered")
        super().__setitem__(name, task)

    def update(self, *args, **kwargs) -> None:
        for name, task in dict(*args, **kwargs).items():
            self[name] = task

    def setdefault(self, name: str, task: Task) -> Task:
        if name not in self:
            self[name] = task
        return self[name]


TASKS = TaskRegistry()


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task registered as `name`; ValueError listing the known names otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def list_tasks() -> list[str]:
    return sorted(TASKS)


def required_single_tokens(kind: str = "tiny") -> tuple[str, ...]:
    """Every string (leading space included) that some task with training texts needs as one token under a
    `kind` tokenizer (tasks without a corpus, such as the tracr programs, bring their own tokenizers).

    A tokenizer for the bundled model must keep these whole; for greater-than it must also split a year
    " XXYY" into " XX" + "YY" (digits merged no further than pairs), or the task has no valid years.
    """
    tasks = [TASKS[name] for name in list_tasks() if TASKS[name].corpus is not None]
    strings = (s for task in tasks for s in task.vocabulary(kind).single_tokens)
    return tuple(dict.fromkeys(strings))
