"""Tiny zoo models for the zoo's tests (test_zoo_kit.py, test_zoo_sources.py; the ``zoo_cache`` fixture in conftest.py
registers them)."""

import torch
from torch import nn


TRAINED = []


def build(meta):
    return nn.Linear(meta["n_in"], 1)


def train(value=0.5):
    TRAINED.append(value)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(0.0)
    return model, {"n_in": 3}
