"""A PyTorch twin of minigpt's GPT-2, written with torch's own ops and autograd, to cross-check
minigpt's hand-written forward, backward and AdamW step. It reads the same parameter dict
(Hugging Face GPT-2 names and (in, out) layouts), so no conversion is involved.

Only used where torch is installed (`pip install torch==2.13.0` here); the tests skip otherwise.
"""

import math

import torch
import torch.nn.functional as F


def to_torch(params, requires_grad=True):
    return {k: torch.tensor(v, requires_grad=requires_grad) for k, v in params.items()}


def forward(config, tp, idx, targets=None):
    """GPT-2 forward in torch. tp: dict of torch tensors; idx, targets: numpy int arrays (B, T)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    B, T = idx.shape
    C, NH = config.n_embd, config.n_head
    eps = config.layer_norm_epsilon
    act = (lambda u: F.gelu(u, approximate="tanh")) if config.activation == "gelu" else F.relu
    b = tp.get  # None where bias=False

    x = tp["wte.weight"][idx] + tp["wpe.weight"][:T]
    for i in range(config.n_layer):
        p = f"h.{i}."
        h = F.layer_norm(x, (C,), tp[p + "ln_1.weight"], b(p + "ln_1.bias"), eps)
        qkv = h @ tp[p + "attn.c_attn.weight"]
        if b(p + "attn.c_attn.bias") is not None:
            qkv = qkv + tp[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # torch's own attention
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = y @ tp[p + "attn.c_proj.weight"]
        if b(p + "attn.c_proj.bias") is not None:
            y = y + tp[p + "attn.c_proj.bias"]
        x = x + y
        h = F.layer_norm(x, (C,), tp[p + "ln_2.weight"], b(p + "ln_2.bias"), eps)
        h = h @ tp[p + "mlp.c_fc.weight"]
        if b(p + "mlp.c_fc.bias") is not None:
            h = h + tp[p + "mlp.c_fc.bias"]
        h = act(h) @ tp[p + "mlp.c_proj.weight"]
        if b(p + "mlp.c_proj.bias") is not None:
            h = h + tp[p + "mlp.c_proj.bias"]
        x = x + h
    x = F.layer_norm(x, (C,), tp["ln_f.weight"], b("ln_f.bias"), eps)
    logits = x @ tp["wte.weight"].T
    loss = None
    if targets is not None:
        t = torch.as_tensor(targets, dtype=torch.long)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), t.view(-1), ignore_index=-1)
    return logits, loss


def make_optimizer(tp, learning_rate, beta1, beta2, weight_decay):
    """torch.optim.AdamW with weight decay on tensors of 2 or more dimensions only (nanoGPT)."""
    decay = [t for t in tp.values() if t.dim() >= 2]
    no_decay = [t for t in tp.values() if t.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(beta1, beta2), eps=1e-8, foreach=False)


def train_step(config, tp, optimizer, x, y, lr, grad_clip):
    """One nanoGPT step: forward, backward, clip, AdamW at learning rate lr. Returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = forward(config, tp, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(list(tp.values()), grad_clip)
    optimizer.step()
    return loss.item()


def n_params(tp):
    return sum(math.prod(t.shape) for t in tp.values())
