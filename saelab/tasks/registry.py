"""The registry of circuit tasks, by name."""

from saelab.tasks.task import Task


class TaskRegistry(dict[str, Task]):
    """A name → Task mapping that refuses to register a name twice."""

    def __setitem__(self, name: str, task: Task) -> None:
        if name in self:
            raise ValueError(f"task {name!r} is already registered")
        super().__setitem__(name, task)


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
