"""llm.c's GPT-2 checkpoint (magic 20240326, version 3) and debug state (magic 20240327, version 2).

The layouts are pinned byte by byte (header fields, tensor order, (out, in) weights, the padded
vocabulary), round trips are exact in float32, a golden file's llm.c files check against it, and
every malformed file is refused with one line.
"""

import numpy as np
import pytest

from minigpt import GPTConfig, gpt_backward, gpt_forward, llmc
from minigpt import reference as ref
from minigpt.cli import main
from minigpt.errors import InputError

CONFIG = GPTConfig(vocab_size=130, block_size=8, n_layer=2, n_head=2, n_embd=8)  # Vp = 256


def params32(config=CONFIG, seed=0):
    return ref.make_params(config, ref.ReferenceSettings(seed=seed, dtype="float32"))


def test_checkpoint_header_and_layout(tmp_path):
    path = tmp_path / "m.bin"
    params = params32()
    llmc.write_model(path, CONFIG, params)
    data = path.read_bytes()
    h = np.frombuffer(data[:1024], dtype="<i4")
    assert list(h[:8]) == [20240326, 3, 8, 130, 2, 2, 8, 256] and not h[8:].any()
    f = np.frombuffer(data[1024:], dtype="<f4")
    C, Vp = 8, 256
    np.testing.assert_array_equal(f[: 130 * C].reshape(130, C), params["wte.weight"])
    assert not f[130 * C : Vp * C].any()  # padded rows are zeros
    pos = Vp * C
    np.testing.assert_array_equal(f[pos : pos + 8 * C].reshape(8, C), params["wpe.weight"])
    pos += 8 * C
    # ln_1.weight of every layer, then ln_1.bias of every layer, then c_attn.weight (L, 3C, C)
    np.testing.assert_array_equal(f[pos : pos + C], params["h.0.ln_1.weight"])
    np.testing.assert_array_equal(f[pos + C : pos + 2 * C], params["h.1.ln_1.weight"])
    np.testing.assert_array_equal(f[pos + 2 * C : pos + 3 * C], params["h.0.ln_1.bias"])
    pos += 4 * C
    np.testing.assert_array_equal(f[pos : pos + 3 * C * C].reshape(3 * C, C), params["h.0.attn.c_attn.weight"].T)
    # the file ends with ln_f.weight, ln_f.bias
    np.testing.assert_array_equal(f[-2 * C : -C], params["ln_f.weight"])
    np.testing.assert_array_equal(f[-C:], params["ln_f.bias"])
    assert f.size == llmc.num_floats(CONFIG, Vp)


def test_checkpoint_round_trip_is_exact(tmp_path):
    path = tmp_path / "m.bin"
    params = params32()
    llmc.write_model(path, CONFIG, params)
    config, back = llmc.read_model(path)
    assert config == CONFIG and list(back) == list(params)
    for k in params:
        assert back[k].dtype == np.float32 and np.array_equal(back[k], params[k]), k


def test_bias_free_model_is_written_with_zero_biases(tmp_path):
    config = CONFIG.replace(bias=False)
    params = params32(config)
    llmc.write_model(tmp_path / "m.bin", config, params)
    back_config, back = llmc.read_model(tmp_path / "m.bin")
    assert back_config.bias and not back["h.0.ln_1.bias"].any()
    idx = np.arange(16).reshape(2, 8) % 130
    a, _, _ = gpt_forward(config, params, idx)
    b, _, _ = gpt_forward(back_config, back, idx)
    np.testing.assert_array_equal(a, b)


def test_state_round_trip_is_exact(tmp_path):
    params = params32()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 130, (3, 5)), rng.integers(0, 130, (3, 5))
    logits, loss, cache = gpt_forward(CONFIG, params, x, y)
    grads = gpt_backward(cache)
    path = tmp_path / "s.bin"
    llmc.write_state(path, CONFIG, x, y, logits, loss, grads)
    data = path.read_bytes()
    h = np.frombuffer(data[:1024], dtype="<i4")
    assert list(h[:4]) == [20240327, 2, 3, 5] and not h[4:].any()
    np.testing.assert_array_equal(np.frombuffer(data[1024 : 1024 + 60], dtype="<i4").reshape(3, 5), x)
    assert len(data) == 1024 + 4 * (2 * 15 + 15 * 130 + 1 + llmc.num_floats(CONFIG, 256))
    state = llmc.read_state(path, CONFIG)
    np.testing.assert_array_equal(state["inputs"], x)
    np.testing.assert_array_equal(state["targets"], y)
    np.testing.assert_array_equal(state["logits"], logits)
    assert state["loss"] == np.float32(loss)
    for k, g in grads.items():
        np.testing.assert_array_equal(state["grads"][k], g, err_msg=k)


def test_golden_file_to_llmc_and_back_through_the_checker(tmp_path, capsys):
    """`minigpt reference llmc` writes the files an llm.c program reads; the checker reads an
    llm.c program's files and compares them with the golden file (float32 tolerances)."""
    golden = tmp_path / "g.safetensors"
    config = GPTConfig(vocab_size=9, block_size=6, n_layer=2, n_head=2, n_embd=8)
    tensors, meta = ref.export_model(config, ref.ReferenceSettings(steps=1))
    ref.write_reference(golden, tensors, meta)
    m, s = tmp_path / "m.bin", tmp_path / "s.bin"
    assert main(["reference", "llmc", str(golden), "--model", str(m), "--state", str(s)]) == 0
    assert main(["reference", "check", str(golden), str(s), "--allow-missing"]) == 0
    assert main(["reference", "check", str(golden), str(m), "--allow-missing"]) == 0
    assert main(["reference", "check", str(golden), str(s)]) == 1  # without the flag, missing tensors fail
    capsys.readouterr()
    # an "llm.c implementation" with a wrong gradient is caught and named
    state = llmc.read_state(s, config)
    state["grads"]["h.1.mlp.c_fc.bias"][3] += 1e-3
    llmc.write_state(s, config, state["inputs"], state["targets"], state["logits"], state["loss"], state["grads"])
    assert main(["reference", "check", str(golden), str(s), "--allow-missing"]) == 1
    assert "grads.h.1.mlp.c_fc.bias" in capsys.readouterr().out.splitlines()[-1]


def test_writing_refuses_what_llmc_cannot_compute(tmp_path):
    with pytest.raises(InputError, match="GELU"):
        llmc.write_model(tmp_path / "m.bin", CONFIG.replace(activation="relu"), params32())
    with pytest.raises(InputError, match="epsilon"):
        llmc.write_model(tmp_path / "m.bin", CONFIG.replace(layer_norm_epsilon=1e-6), params32())
    x = np.zeros((1, 2), dtype=int)
    logits = np.zeros((1, 2, 130))
    grads = params32()
    with pytest.raises(InputError, match="ignore index"):
        llmc.write_state(tmp_path / "s.bin", CONFIG, x, x - 1, logits, 0.0, grads)
    with pytest.raises(InputError, match="biases"):
        c = CONFIG.replace(bias=False)
        llmc.write_state(tmp_path / "s.bin", c, x, x, logits, 0.0, params32(c))
    with pytest.raises(InputError, match="do not fit"):
        llmc.write_state(tmp_path / "s.bin", CONFIG, x, x, logits[..., :5], 0.0, grads)


def test_malformed_files_are_refused(tmp_path):
    path = tmp_path / "m.bin"
    llmc.write_model(path, CONFIG, params32())
    data = path.read_bytes()
    cases = {
        "short.bin": (data[:100], "too short"),
        "magic.bin": (llmc.header(1234, 3) + data[1024:], "not an llm.c GPT-2 checkpoint"),
        "v2.bin": (llmc.header(20240326, 2, 8, 130, 2, 2, 8, 256) + data[1024:], "version 2"),
        "cut.bin": (data[:-4], "truncated"),
        "hdr.bin": (llmc.header(20240326, 3, 8, 130, 2, 3, 8, 256) + data[1024:], "bad header"),
        "vp.bin": (llmc.header(20240326, 3, 8, 130, 2, 2, 8, 128) + data[1024:], "padded vocabulary"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=message):
            llmc.read_model(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        llmc.read_model(tmp_path / "nothere.bin")
    s = tmp_path / "s.bin"
    s.write_bytes(llmc.header(20240327, 2, 1, 2) + b"\0" * 40)
    with pytest.raises(InputError, match="do not fit"):
        llmc.read_state(s, CONFIG)
    s.write_bytes(llmc.header(20240327, 2, 1, 9) + b"\0" * 40)
    with pytest.raises(InputError, match="block_size"):
        llmc.read_state(s, CONFIG)
