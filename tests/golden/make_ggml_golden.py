"""Write tests/golden/ggml_blocks.safetensors: float32 rows and their Q8_0 / Q4_0 bytes as produced
by gguf-py (llama.cpp's own Python package, whose quantizers are a NumPy port of ggml-quants.c's
quantize_row_q8_0_ref / quantize_row_q4_0_ref, tested bit-exact against them upstream).

gguf is not a dependency of minigpt: this script ran once, in a scratch venv
(`pip install gguf numpy safetensors`), and its output is committed:

    python tests/golden/make_ggml_golden.py tests/golden/ggml_blocks.safetensors

The rows cover random normal values at several scales, an all-zero block, exact .5 ties of x/d,
ties for the largest magnitude (the first one must win in Q4_0), and a block whose extreme is
positive (Q4_0's d is then negative).
"""

import sys

import numpy as np
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize
from safetensors.numpy import save_file

rng = np.random.default_rng(20240601)
rows = [rng.normal(0, s, size=(4, 64)).astype(np.float32) for s in (1e-3, 0.02, 1.0, 300.0)]
special = np.zeros((4, 64), np.float32)
special[1, :32] = np.arange(32, dtype=np.float32) - 16  # x/d hits .5 ties for Q8_0 and Q4_0
special[1, 32:] = np.linspace(-127, 127, 32, dtype=np.float32) / 2
special[2, :32] = rng.normal(0, 1, 32).astype(np.float32)
special[2, 3], special[2, 20] = 4.0, -4.0  # equal largest magnitudes: the first (+4) defines Q4_0's d
special[3, :] = np.abs(rng.normal(0, 1, 64)).astype(np.float32)  # all positive: d < 0 in Q4_0
x = np.concatenate(rows + [special])  # (20, 64): block 0 of special row 0 is all zeros
out = {"x": x}
for name, qt in (("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0)):
    out[name] = np.ascontiguousarray(quantize(x, qt)).reshape(-1)
save_file(out, sys.argv[1], metadata={"source": "gguf-py quants.quantize (llama.cpp), see make_ggml_golden.py"})
