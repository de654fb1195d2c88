"""Model compression: making a trained minigpt smaller or cheaper while keeping what it learned.

One module per technique, each standalone and each producing an ordinary minigpt checkpoint
(eval and sample load it):

- `distill`: knowledge distillation. A small student learns from a trained teacher's output
  distributions (soft targets, reverse KL, Jensen-Shannon), hidden states (MSE through a learned
  projection, cosine) and attention maps, every loss with a hand-written backward; the student
  can start from the teacher's own blocks. `minigpt distill` trains one.

Planned here: `prune` (removing weights, heads and neurons) and `quantize` (fewer bits per weight).
"""
