"""Task kinds: what a model's output and a joint answer are per task (:mod:`ebjr.tasks.base`).

>>> from ebjr.tasks import get_task
>>> get_task("regression", columns=["prediction", "std"])
Regression(columns=['prediction', 'std'], loss='absolute')
"""

from ebjr.tasks.base import TASKS, Answer, TaskKind, get_task, task_from_spec
from ebjr.tasks.classification import Classification
from ebjr.tasks.regression import Regression

__all__ = ["TASKS", "Answer", "Classification", "Regression", "TaskKind", "get_task",
           "task_from_spec"]
