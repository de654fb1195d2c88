"""Model compression: making a trained minigpt smaller or cheaper while keeping what it learned.

One module per technique, each standalone and each producing an ordinary minigpt checkpoint
(eval and sample load it):

- `distill`: knowledge distillation. A small student learns from a trained teacher's output
  distributions (soft targets, reverse KL, Jensen-Shannon), hidden states (MSE through a learned
  projection, cosine) and attention maps, every loss with a hand-written backward; the student
  can start from the teacher's own blocks. `minigpt distill` trains one.
- `prune`: zeroing weights (magnitude per tensor or global, random, N:M, Wanda), keeping them at
  zero through training (gradual pruning, masked fine-tuning) and storing them compressed (the
  `bitmask` and `nm` codecs), so the checkpoint is really smaller. `structured` removes whole MLP
  neurons and attention heads: a smaller dense model (per-layer widths in GPTConfig) that is
  also faster. `minigpt prune` and `minigpt prune sensitivity` (`prune_command`) run them.
- `storage`: the codec registry through which checkpoints store tensors compressed.

Planned here: `quantize` (fewer bits per weight).
"""
