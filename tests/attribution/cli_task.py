"""A tiny task factory for the CLI tests (`--task tests/attribution/cli_task.py:make`)."""

from attribution.testable_tasks import ClassificationTask, classification_data, mlp
from tamis.attribution.examples import TaskBundle


def make(cache_dir=None, data_dir=None):
    return TaskBundle(
        ClassificationTask(), mlp(), classification_data(13), classification_data(3, seed=7)
    )
