"""A tiny task factory for the CLI tests (`--task tests/attribution/cli_task.py:make`)."""

from attribution.testable_tasks import ClassificationTask, classification_data, mlp
from tamis.attribution.examples import TaskBundle


def make(cache_dir=None, data_dir=None):
    import numpy as np
    import torch
    import torch.nn.functional as F

    train, queries = classification_data(13), classification_data(3, seed=7)

    def retrain(mask, seed):
        model = mlp(seed=seed)
        x, y = train.tensors
        idx = torch.from_numpy(np.flatnonzero(mask))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        xq, yq = queries.tensors
        with torch.no_grad():
            return F.cross_entropy(model(xq), yq, reduction="none").numpy()

    return TaskBundle(ClassificationTask(), mlp(), train, queries, retrain=retrain)
