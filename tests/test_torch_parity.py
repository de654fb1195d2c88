"""Cross-check against PyTorch (skipped when torch is not installed): the same parameters and
batches through minigpt and through a torch twin built from torch's own ops and autograd give the
same logits, loss and gradients, and the same parameters after several training steps (AdamW,
clipping, the LR schedule), in float64."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_twin

from minigpt import GPTConfig, gpt_backward, gpt_forward, init_params
from minigpt.optim import AdamW, clip_grad_norm, get_lr


def random_params(config, seed):
    """Order-1 weights (init scale would make every gradient tiny and the check weak)."""
    rng = np.random.default_rng(seed)
    params = init_params(config, seed, np.float64)
    return {k: v + rng.normal(0, 0.3, v.shape) for k, v in params.items()}


@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_backward_match_torch(activation, bias):
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias, activation=activation)
    params = random_params(config, 0)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 13, (3, 8))
    targets = rng.integers(0, 13, (3, 8))
    targets[0, :3] = -1  # ignored positions
    logits, loss, cache = gpt_forward(config, params, idx, targets)
    grads = gpt_backward(cache)

    tp = torch_twin.to_torch(params)
    t_logits, t_loss = torch_twin.forward(config, tp, idx, targets)
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=0, atol=1e-12)
    assert abs(loss - t_loss.item()) < 1e-12
    for name, g in grads.items():
        t_grad = tp[name].grad.numpy()
        scale = np.abs(t_grad).max()
        assert np.abs(g - t_grad).max() <= 1e-12 * max(scale, 1.0), name


def test_training_steps_match_torch():
    """Ten steps of the baby recipe's optimizer (AdamW betas 0.9/0.99, weight decay 0.1 on 2-D
    tensors, clip 1.0, warmup then cosine) on the same batches end with the same parameters."""
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=False)
    params = init_params(config, 3, np.float64)
    tp = torch_twin.to_torch(params)
    opt = AdamW(params, 0.9, 0.99, 1e-8, 0.1)
    t_opt = torch_twin.make_optimizer(tp, 1e-3, 0.9, 0.99, 0.1)
    rng = np.random.default_rng(4)
    for step in range(10):
        x, y = rng.integers(0, 11, (4, 8)), rng.integers(0, 11, (4, 8))
        lr = get_lr(step, 1e-2, 3, 10, 1e-3)
        _, loss, cache = gpt_forward(config, params, x, y)
        grads = gpt_backward(cache)
        clip_grad_norm(grads, 1.0)
        opt.step(params, grads, lr)
        t_loss = torch_twin.train_step(config, tp, t_opt, x, y, lr, 1.0)
        assert abs(loss - t_loss) < 1e-12, step
    for name, p in params.items():
        np.testing.assert_allclose(p, tp[name].detach().numpy(), rtol=0, atol=1e-12, err_msg=name)
