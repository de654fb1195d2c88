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
- `quantize`: fewer bits per weight. Uniform integer quantization (symmetric or affine, 2 to 8
  bits, per tensor, channel or group; min-max, percentile or MSE clipping; round to nearest or
  stochastic), stored packed in the checkpoint; fake quantization with a straight-through
  backward for `minigpt train --qat`; the per-tensor error report; `minigpt quantize`. Beside it:
  `gptq` (rounding with error compensation from the calibration Hessian), `ggml` (llama.cpp's
  Q8_0 / Q4_0 blocks, byte for byte), `int8` (integer-only inference of the linear layers, int32
  sums in the numba kernel minigpt/kernels/int8.py, fixed-point requantization, SmoothQuant;
  `minigpt eval --int8`), `kmeans` (Deep Compression's weight sharing, centroid fine-tuning,
  Huffman-coded indices).
- `storage`: the codecs that store a compressed tensor in a checkpoint and decode it exactly.
"""
