"""Golden reference files and the checker (minigpt/reference.py, `minigpt reference`).

- the committed golden file is reproduced bit for bit in float64 (any change to the numerics shows);
- the file's tensors are consistent with each other and with gpt_forward / gpt_backward / AdamW;
- the checker passes identical files and fails a perturbed one naming the right tensor, index and
  values; missing, extra, reshaped and non-finite tensors are caught;
- the command's files, exit statuses (0 match, 1 mismatch, 2 bad input) and JSON.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from minigpt import GPTConfig, backend, gpt_backward, gpt_forward
from minigpt import reference as ref
from minigpt.cli import main
from minigpt.errors import InputError

GOLDEN = Path(__file__).parent / "golden" / "tiny_float64.safetensors"
TINY = GPTConfig(vocab_size=7, block_size=6, n_layer=2, n_head=2, n_embd=4)


@pytest.fixture(scope="module")
def tiny():
    return ref.export_model(TINY, ref.ReferenceSettings(seq_len=5, steps=3))[0]


def test_committed_golden_file_is_reproduced_exactly():
    golden, meta = ref.read_safetensors(GOLDEN)
    config = ref.file_config(meta)
    settings = ref.ReferenceSettings(**json.loads(meta["settings"]))
    assert meta["format"] == ref.FORMAT and meta["kind"] == "model" and settings.dtype == "float64"
    now, _ = ref.export_model(config, settings)
    assert sorted(now) == sorted(golden)
    changed = [name for name in golden if not (golden[name].dtype == now[name].dtype
                                               and np.array_equal(golden[name], now[name]))]
    assert not changed, (f"minigpt's float64 numerics changed in {changed[:5]}: see tests/golden/README.md "
                         f"(run `minigpt reference check` on the old and a regenerated file to see by how much)")


def test_every_intermediate_is_named_by_layer_and_op(tiny):
    B, T, C, NH, V = 2, 5, 4, 2, 7
    expected = {"acts.emb": (B, T, C), "acts.ln_f": (B, T, C), "acts.logits": (B, T, V), "acts.probs": (B, T, V),
                "acts.losses": (B, T), "loss": (), "inputs": (B, T), "targets": (B, T), "train.loss": (3,)}
    for i in range(2):
        a = f"acts.h.{i}."
        expected.update({a + "ln_1": (B, T, C), a + "ln_1.mean": (B, T), a + "ln_1.rstd": (B, T),
                         a + "qkv": (B, T, 3 * C), a + "preatt": (B, NH, T, T), a + "att": (B, NH, T, T),
                         a + "atty": (B, T, C), a + "attproj": (B, T, C), a + "res_1": (B, T, C),
                         a + "ln_2": (B, T, C), a + "fc": (B, T, 4 * C), a + "fc_act": (B, T, 4 * C),
                         a + "fcproj": (B, T, C), a + "res_2": (B, T, C)})
    for name, shape in expected.items():
        assert tiny[name].shape == shape, name
    for kind in ("params.", "grads.", "final."):
        assert {k for k in tiny if k.startswith(kind)} == {kind + k for k in ref.make_params(TINY, ref.ReferenceSettings())}
    assert tiny["inputs"].dtype == np.int32 and tiny["acts.logits"].dtype == np.float64


def test_the_file_is_consistent_with_itself_and_the_model(tiny):
    """The named intermediates are the model's: each follows from the previous ones, and the
    logits, loss, gradients and steps are gpt_forward's, gpt_backward's and AdamW's."""
    t = tiny
    params = {k.removeprefix("params."): v for k, v in t.items() if k.startswith("params.")}
    np.testing.assert_array_equal(t["targets"][:, :-1], t["inputs"][:, 1:])  # shifted by one
    with backend.use_backend("numpy"):  # files come from the specification (the numba twin: below)
        logits, loss, cache = gpt_forward(TINY, params, t["inputs"], t["targets"])
    np.testing.assert_array_equal(t["acts.logits"], logits)
    assert t["loss"] == loss == t["train.loss"][0]
    for name, g in gpt_backward(cache).items():
        np.testing.assert_array_equal(t["grads." + name], g)
    C = TINY.n_embd
    for i in range(TINY.n_layer):
        a = f"acts.h.{i}."
        x_in = t["acts.emb"] if i == 0 else t[f"acts.h.{i - 1}.res_2"]
        xhat = (x_in - t[a + "ln_1.mean"][..., None]) * t[a + "ln_1.rstd"][..., None]
        np.testing.assert_allclose(xhat * params[f"h.{i}.ln_1.weight"] + params[f"h.{i}.ln_1.bias"], t[a + "ln_1"],
                                   rtol=0, atol=1e-13)
        att = t[a + "att"]
        np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=1e-14)
        assert np.all(np.triu(att, 1) == 0)  # causal
        v = t[a + "qkv"][..., 2 * C :].reshape(2, 5, 2, 2).transpose(0, 2, 1, 3)
        atty = (att @ v).transpose(0, 2, 1, 3).reshape(2, 5, C)
        np.testing.assert_allclose(atty, t[a + "atty"], rtol=0, atol=1e-14)
        np.testing.assert_allclose(t[a + "res_1"], x_in + t[a + "attproj"], rtol=0, atol=1e-15)
        np.testing.assert_allclose(t[a + "res_2"], t[a + "res_1"] + t[a + "fcproj"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(t["acts.losses"].mean(), loss, rtol=1e-14)
    np.testing.assert_allclose(t["acts.probs"].sum(-1), 1.0, rtol=0, atol=1e-14)


def test_numba_backend_reproduces_the_golden_file_to_1e12():
    """The committed file is made by the NumPy layers; the numba kernels give the same logits,
    loss and gradients to 1e-12 of each tensor's scale (float64)."""
    golden, meta = ref.read_safetensors(GOLDEN)
    config = ref.file_config(meta)
    params = {k.removeprefix("params."): v for k, v in golden.items() if k.startswith("params.")}
    with backend.use_backend("numba"):
        logits, loss, cache = gpt_forward(config, params, golden["inputs"], golden["targets"])
        grads = gpt_backward(cache)
    candidate = {"acts.logits": logits, "loss": np.array(loss)} | {"grads." + k: g for k, g in grads.items()}
    for name, got in candidate.items():
        want = golden[name]
        assert np.max(np.abs(got - want)) <= 1e-12 * max(np.max(np.abs(want)), 1e-300), name


def test_training_steps_and_schedule_are_recorded(tiny):
    s = ref.ReferenceSettings(seq_len=5, steps=3)
    lrs = [ref.get_lr(k, s.learning_rate, s.warmup_iters, s.lr_decay_iters, s.min_lr) for k in range(3)]
    np.testing.assert_array_equal(tiny["train.lr"], lrs)
    assert not np.array_equal(tiny["final.wte.weight"], tiny["params.wte.weight"])
    assert tiny["train.loss"][2] < tiny["train.loss"][0]  # the same batch: the loss goes down


def test_export_is_deterministic_and_seeded():
    a, _ = ref.export_model(TINY, ref.ReferenceSettings(seed=3, steps=1))
    b, _ = ref.export_model(TINY, ref.ReferenceSettings(seed=3, steps=1))
    c, _ = ref.export_model(TINY, ref.ReferenceSettings(seed=4, steps=1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["acts.logits"], c["acts.logits"])


# ----------------------------------------------------------------------------------------------
# the checker


def perturbed(tensors, name, index, factor=1.0 + 1e-6):
    out = dict(tensors)
    out[name] = tensors[name].copy()
    out[name][index] *= factor
    return out


def test_identical_files_pass(tiny):
    report = ref.check(tiny, tiny)
    assert report.ok and report.dtype == "float64" and len(report.results) == len(tiny)
    assert all(r.max_abs_diff == 0 for r in report.results)


@pytest.mark.parametrize("name", ["acts.h.1.att", "grads.h.0.ln_1.bias", "final.wte.weight", "loss"])
def test_a_perturbed_candidate_fails_with_the_right_tensor_named(tiny, name):
    index = (0,) * tiny[name].ndim if name != "acts.h.1.att" else (1, 0, 3, 2)
    candidate = perturbed(tiny, name, index)
    report = ref.check(tiny, candidate)
    assert not report.ok
    failed = [r for r in report.results if not r.ok]
    assert [r.name for r in failed] == [name]
    r = failed[0]
    assert r.index == index and r.golden == tiny[name][index] and r.candidate == candidate[name][index]
    assert r.tolerance_used > 1 and r.status == "NOT OK"
    text = ref.format_report(report)
    assert f"{name} " in text and "NOT OK" in text.splitlines()[-1] and name in text.splitlines()[-1]


def test_float32_tolerances_accept_rounding_and_reject_bugs(tiny):
    """A float32 run of the same model passes against the float64 file; a 0.1% error does not."""
    t32, _ = ref.export_model(TINY, ref.ReferenceSettings(seq_len=5, steps=3, dtype="float32"))
    report = ref.check(tiny, t32)
    assert report.dtype == "float32" and report.ok, ref.format_report(report, only_failures=True)
    assert not ref.check(tiny, perturbed(t32, "grads.h.1.mlp.c_fc.weight", (0, 0), 1.001)).ok


def test_tolerance_is_relative_to_the_tensors_scale():
    g = {"x": np.array([1000.0, 1e-9])}
    assert ref.check(g, {"x": np.array([1000.0, 2e-9])}).ok  # noise at an element that is ~0 by chance
    assert not ref.check(g, {"x": np.array([1000.0 + 1e-6, 1e-9])}).ok  # 1e-9 relative > 1e-10
    assert ref.check(g, {"x": np.array([1000.0 + 1e-6, 1e-9])}, rtol=1e-8).ok  # --rtol overrides


def test_missing_extra_shape_dtype_and_nan_are_caught(tiny):
    candidate = {k: v for k, v in tiny.items() if k != "acts.probs"}
    candidate["acts.mystery"] = np.zeros(3)
    report = ref.check(tiny, candidate)
    assert not report.ok and report.missing == ["acts.probs"] and report.extra == ["acts.mystery"]
    assert all(r.ok for r in report.results)
    assert ref.check(tiny, candidate, allow_missing=True).ok
    text = ref.format_report(report)
    assert "MISSING acts.probs" in text and "EXTRA acts.mystery" in text
    bad = dict(tiny, **{"acts.emb": tiny["acts.emb"][:, :-1]})
    assert ref.check(tiny, bad).results[[r.name for r in ref.check(tiny, bad).results].index("acts.emb")].status == "SHAPE"
    assert not ref.check(tiny, dict(tiny, inputs=tiny["inputs"].astype(np.float64))).ok
    assert not ref.check(tiny, dict(tiny, targets=(tiny["targets"] + 1) % 7)).ok  # ids must be equal
    nan = perturbed(tiny, "acts.logits", (0, 0, 0), np.nan)
    r = next(r for r in ref.check(tiny, nan).results if r.name == "acts.logits")
    assert not r.ok and r.index == (0, 0, 0) and r.max_abs_diff == np.inf


# ----------------------------------------------------------------------------------------------
# per-op files


def test_op_files_hold_inputs_outputs_and_gradients():
    files = ref.export_ops(ref.ReferenceSettings())
    assert set(files) == set(ref.OPS)
    for name, (tensors, meta) in files.items():
        assert meta["kind"] == f"op:{name}"
        assert any(k.startswith("d") for k in tensors) or name == "adamw", name
    t = files["layernorm"][0]
    assert {"x", "weight", "bias", "out", "mean", "rstd", "dout", "dx", "dweight", "dbias"} <= set(t)
    t = files["cross_entropy"][0]
    assert (t["targets"] == -1).any() and np.all(t["dlogits"][t["targets"] == -1] == 0)
    t = files["adamw"][0]
    assert not np.array_equal(t["w.param"], t["w.param_out"]) and t["w.param"].ndim == 2 and t["b.param"].ndim == 1


# ----------------------------------------------------------------------------------------------
# the command


def test_cli_export_check_and_exit_status(tmp_path, capsys):
    g, c = tmp_path / "g.safetensors", tmp_path / "c.safetensors"
    flags = ["--vocab-size", "7", "--block-size", "6", "--n-layer", "2", "--n-head", "2", "--n-embd", "4", "--steps", "2"]
    assert main(["reference", "export", str(g), *flags]) == 0
    tensors, meta = ref.read_safetensors(g)
    assert json.loads(meta["settings"])["steps"] == 2 and tensors["inputs"].shape == (2, 6)
    assert tensors["loss"].shape == ()
    capsys.readouterr()
    assert main(["reference", "check", str(g), str(g)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK")
    ref.write_reference(c, perturbed(tensors, "acts.h.0.fc_act", (1, 2, 3), 1.01), meta)
    assert main(["reference", "check", str(g), str(c)]) == 1
    out = capsys.readouterr().out
    assert "acts.h.0.fc_act" in out.splitlines()[-1]
    row = next(line for line in out.splitlines() if line.startswith("acts.h.0.fc_act "))
    assert "(1, 2, 3)" in row and row.endswith("NOT OK")
    assert main(["reference", "check", str(g), str(c), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and result["failed"] == ["acts.h.0.fc_act"]
    assert main(["reference", "check", str(g), str(c), "--rtol", "0.1"]) == 0


def test_cli_export_with_a_preset_and_ops(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["reference", "export", str(out), "--preset", "tiny", "--block-size", "8", "--steps", "1",
                 "--dtype", "float32"]) == 0
    tensors, meta = ref.read_safetensors(out)
    assert json.loads(meta["config"])["n_embd"] == 32 and tensors["acts.logits"].dtype == np.float32
    assert main(["reference", "ops", str(tmp_path / "ops")]) == 0
    assert sorted(p.stem for p in (tmp_path / "ops").iterdir()) == sorted(ref.OPS)
    op = tmp_path / "ops" / "layernorm.safetensors"
    assert main(["reference", "check", str(op), str(op)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["reference", "check", "nothere.safetensors", "x"], "file not found"),
    (["reference", "export", "OUT", "--dropout", "0.1"], "without dropout"),
    (["reference", "export", "OUT", "--dtype", "float16"], "dtype"),
    (["reference", "export", "OUT", "--block-size", "4", "--seq-len", "5"], "seq_len"),
    (["reference", "export", "OUT", "--steps", "-1"], "steps"),
    (["reference", "export", "OUT", "--beta1", "1.0"], "beta1"),
    (["reference", "export", "OUT", "--batch-size", "0"], "batch_size"),
])
def test_cli_bad_input_exits_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_check_bad_files_and_tolerances(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    assert main(["reference", "check", str(GOLDEN), str(junk)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert main(["reference", "check", str(GOLDEN), str(GOLDEN), "--atol", "-1"]) == 2
    assert "--atol must be >= 0" in capsys.readouterr().err
    op = tmp_path / "op.safetensors"
    ref.write_reference(op, {"x": np.zeros(2)}, {"kind": "op:x"})
    assert main(["reference", "llmc", str(op), "--model", str(tmp_path / "m.bin")]) == 2
    assert "not a whole-model reference file" in capsys.readouterr().err
    with pytest.raises(InputError, match="compare it with a golden file"):
        from minigpt import llmc

        state = tmp_path / "s.bin"
        state.write_bytes(llmc.header(llmc.STATE_MAGIC, 2, 1, 1))
        ref.load_reference(state)
