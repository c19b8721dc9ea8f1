"""``vhp_lightning.analysis.eval_mode``: eval mode and no gradients inside, the mode and the random
stream as before afterwards."""

from __future__ import annotations

import torch
from torch import nn

from vhp_lightning.analysis.eval_mode import evaluating, model_device


def test_evaluating_restores_the_mode_and_the_random_stream() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    for training in (True, False):
        model.train(training)
        torch.manual_seed(0)
        with evaluating(model):
            assert not model.training and not model[1].training
            assert not torch.is_grad_enabled()
            torch.rand(5)  # a draw inside does not move the stream outside
        assert model.training is training and model[1].training is training
        assert torch.is_grad_enabled()
        after = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(torch.rand(3), after)


def test_a_model_that_is_no_module_is_run_as_it_is() -> None:
    class Duck:
        def sample_prior(self, n: int) -> torch.Tensor:
            return torch.randn(n, 2)

    with evaluating(Duck()):
        assert Duck().sample_prior(3).shape == (3, 2)
    assert model_device(Duck()) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
