"""Cross-check against PyTorch (skipped when torch is not installed): the same parameters and
batches through minigpt and through a torch twin built from torch's own ops and autograd
(tests/torch_twin.py) give the same logits, loss and every gradient, in float64 to 1e-10 and in
float32 to 1e-5 (relative to each tensor's largest magnitude), with GELU and ReLU, with and without
biases; ten training steps (AdamW, clipping, the warmup + cosine schedule) end with the same
parameters as torch.optim.AdamW; and every per-op golden file (minigpt reference ops) is
reproduced by torch's own ops."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

import torch.nn.functional as F
import torch_twin

from minigpt import GPTConfig, gpt_backward, gpt_forward, init_params
from minigpt import reference as ref
from minigpt.gradcheck import rel_error
from minigpt.optim import AdamW, clip_grad_norm, get_lr

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


def random_params(config, seed, dtype=np.float64):
    """Order-1 weights (init scale would make every gradient tiny and the check weak)."""
    rng = np.random.default_rng(seed)
    params = init_params(config, seed, np.float64)
    return {k: (v + rng.normal(0, 0.3, v.shape)).astype(dtype) for k, v in params.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_forward_and_backward_match_torch(dtype, activation, bias):
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias, activation=activation)
    params = random_params(config, 0, dtype)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 13, (3, 8))
    targets = rng.integers(0, 13, (3, 8))
    targets[0, :3] = -1  # ignored positions
    logits, loss, cache = gpt_forward(config, params, idx, targets)
    grads = gpt_backward(cache)
    assert logits.dtype == dtype and all(g.dtype == dtype for g in grads.values())

    tp = torch_twin.to_torch(params)
    t_logits, t_loss = torch_twin.forward(config, tp, idx, targets)
    t_loss.backward()
    tol = TOLERANCE[dtype]
    assert rel_error(logits, t_logits.detach().numpy()) < tol
    assert abs(loss - t_loss.item()) < tol * abs(t_loss.item())
    assert set(grads) == set(tp)
    for name, g in grads.items():
        assert rel_error(g, tp[name].grad.numpy()) < tol, name


@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_training_steps_match_torch(activation, bias):
    """Ten steps (AdamW betas 0.9/0.99, weight decay 0.1 on 2-D tensors, global-norm clipping,
    warmup then cosine then the min_lr floor) on fresh batches end with the same parameters."""
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias, activation=activation)
    params = random_params(config, 3)
    tp = torch_twin.to_torch(params)
    opt = AdamW(params, 0.9, 0.99, 1e-8, 0.1)
    t_opt = torch_twin.make_optimizer(tp, 1e-3, 0.9, 0.99, 0.1)
    rng = np.random.default_rng(4)
    clip, clipped = 1.0, 0
    for step in range(10):
        x, y = rng.integers(0, 11, (4, 8)), rng.integers(0, 11, (4, 8))
        lr = get_lr(step, 1e-2, 3, 8, 1e-3)  # steps 0-2 warm up, 3-8 cosine, 9 holds min_lr
        _, loss, cache = gpt_forward(config, params, x, y)
        grads = gpt_backward(cache)
        clipped += clip_grad_norm(grads, clip) > clip
        opt.step(params, grads, lr)
        t_loss = torch_twin.train_step(config, tp, t_opt, x, y, lr, clip)
        assert abs(loss - t_loss) < 1e-10 * abs(t_loss), step
    assert clipped >= 5  # the clipping is exercised, not just configured
    for name, p in params.items():
        assert rel_error(p, tp[name].detach().numpy()) < 1e-10, name


# ----------------------------------------------------------------------------------------------
# the per-op golden files, recomputed by torch


@pytest.fixture(scope="module")
def ops():
    return {name: {k: torch.tensor(v) for k, v in t.items()} for name, (t, _) in ref.export_ops(ref.ReferenceSettings()).items()}


def assert_close(minigpt_value, torch_value, name):
    assert rel_error(minigpt_value.detach().numpy(), torch_value.detach().numpy()) < 1e-10, name


def check_op(t, fn, inputs, outputs):
    """fn(*inputs) -> the op's main output; checks it and the gradients d<input> for dout."""
    xs = [t[k].clone().requires_grad_(True) for k in inputs]
    out = fn(*xs)
    assert_close(t[outputs], out, outputs)
    for k, g in zip(inputs, torch.autograd.grad(out, xs, t["dout"])):
        assert_close(t["d" + k], g, "d" + k)


def test_op_files_match_torch(ops):
    check_op(ops["linear"], lambda x, w, b: x @ w + b, ["x", "weight", "bias"], "out")
    t = ops["layernorm"]
    check_op(t, lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5), ["x", "weight", "bias"], "out")
    assert_close(t["mean"], t["x"].mean(-1), "mean")
    assert_close(t["rstd"], 1 / torch.sqrt(t["x"].var(-1, unbiased=False) + 1e-5), "rstd")
    check_op(ops["gelu"], lambda x: F.gelu(x, approximate="tanh"), ["x"], "out")
    check_op(ops["relu"], F.relu, ["x"], "out")

    def attention(qkv, n_head=2):
        B, T, C3 = qkv.shape
        q, k, v = (a.view(B, T, n_head, C3 // 3 // n_head).transpose(1, 2) for a in qkv.split(C3 // 3, dim=2))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C3 // 3)

    check_op(ops["attention"], attention, ["qkv"], "out")
    t = ops["embedding"]
    check_op(t, lambda wte, wpe: wte[t["inputs"].long()] + wpe[: t["inputs"].shape[1]], ["wte", "wpe"], "out")

    t = ops["cross_entropy"]
    logits = t["logits"].clone().requires_grad_(True)
    V = logits.shape[-1]
    loss = F.cross_entropy(logits.view(-1, V), t["targets"].long().view(-1), ignore_index=-1)
    assert_close(t["loss"], loss, "loss")
    assert_close(t["probs"], torch.softmax(t["logits"], -1), "probs")
    losses = F.cross_entropy(t["logits"].view(-1, V), t["targets"].long().view(-1), ignore_index=-1, reduction="none")
    assert_close(t["losses"], losses.view(t["targets"].shape), "losses")
    (dlogits,) = torch.autograd.grad(loss, logits, t["dloss"])
    assert_close(t["dlogits"], dlogits, "dlogits")


def test_adamw_op_file_matches_torch(ops):
    """torch.optim.AdamW from the file's state (step t - 1, m, v) takes the file's step."""
    _, meta = ref.export_ops(ref.ReferenceSettings())["adamw"]
    s = json.loads(meta["settings"])
    t = ops["adamw"]
    for name, decay in (("w", s["weight_decay"]), ("b", 0.0)):  # the 1-D tensor is not decayed (nanoGPT)
        p = torch.nn.Parameter(t[f"{name}.param"].clone())
        opt = torch.optim.AdamW([p], lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"], weight_decay=decay,
                                foreach=False)
        opt.state[p] = {"step": torch.tensor(float(s["t"] - 1)), "exp_avg": t[f"{name}.m"].clone(),
                        "exp_avg_sq": t[f"{name}.v"].clone()}
        p.grad = t[f"{name}.grad"].clone()
        opt.step()
        assert_close(t[f"{name}.param_out"], p, f"{name}.param_out")
        assert_close(t[f"{name}.m_out"], opt.state[p]["exp_avg"], f"{name}.m_out")
        assert_close(t[f"{name}.v_out"], opt.state[p]["exp_avg_sq"], f"{name}.v_out")


def test_golden_file_float64_matches_torch():
    """The committed golden file's logits, loss, gradients and steps, recomputed by the twin."""
    g, meta = ref.read_safetensors(Path(__file__).parent / "golden" / "tiny_float64.safetensors")
    config = ref.file_config(meta)
    s = ref.ReferenceSettings(**json.loads(meta["settings"]))
    params = {k.removeprefix("params."): v for k, v in g.items() if k.startswith("params.")}
    tp = torch_twin.to_torch(params)
    logits, loss = torch_twin.forward(config, tp, g["inputs"], g["targets"])
    loss.backward()
    assert rel_error(g["acts.logits"], logits.detach().numpy()) < 1e-10
    assert abs(g["loss"] - loss.item()) < 1e-10
    for name in params:
        assert rel_error(g["grads." + name], tp[name].grad.numpy()) < 1e-10, name
    tp = torch_twin.to_torch(params)
    t_opt = torch_twin.make_optimizer(tp, s.learning_rate, s.beta1, s.beta2, s.weight_decay)
    for step in range(s.steps):
        lr = get_lr(step, s.learning_rate, s.warmup_iters, s.lr_decay_iters, s.min_lr)
        t_loss = torch_twin.train_step(config, tp, t_opt, g["inputs"], g["targets"], lr, s.grad_clip)
        assert abs(g["train.loss"][step] - t_loss) < 1e-10
    for name in params:
        assert rel_error(g["final." + name], tp[name].detach().numpy()) < 1e-10, name
