"""Parity with Hugging Face transformers' GPT2LMHeadModel (skipped without torch and transformers).

A random small GPT-2 in transformers; minigpt loads its state dict and its save_pretrained folder
(model.safetensors + config.json) and gives the same logits and loss in float32 (1e-5, relative to
the tensor's scale); a folder minigpt writes loads into transformers with the same logits. This is
also how real GPT-2 weights on disk are loaded (`minigpt.hf.load_hf(folder)`).
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")

from minigpt import gpt_forward, hf
from minigpt.errors import InputError
from minigpt.gradcheck import rel_error

TOL = 1e-5


def hf_model(activation="gelu_new", seed=0):
    """A random GPT2LMHeadModel in eval mode, weights moved off their init so biases are nonzero."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=23, n_positions=12, n_embd=16, n_layer=2, n_head=4,
                                  activation_function=activation, bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def batch():
    rng = np.random.default_rng(1)
    return rng.integers(0, 23, (3, 12))


def hf_logits_and_loss(model, idx):
    with torch.no_grad():
        out = model(torch.tensor(idx), labels=torch.tensor(idx))  # transformers shifts the labels itself
    return out.logits.numpy(), out.loss.item()


def minigpt_logits_and_loss(config, params, idx):
    targets = np.full_like(idx, -1)
    targets[:, :-1] = idx[:, 1:]  # minigpt's targets come shifted; the last position has no next token
    logits, loss, _ = gpt_forward(config, params, idx, targets)
    return logits, loss


@pytest.mark.parametrize("activation", ["gelu_new", "relu"])
def test_state_dict_gives_the_same_logits_and_loss(activation):
    model = hf_model(activation)
    config = hf.config_from_hf(model.config)
    assert config.activation == ("gelu" if activation == "gelu_new" else "relu") and config.bias
    params = hf.params_from_hf(model.state_dict(), config)
    idx = batch()
    logits, loss = minigpt_logits_and_loss(config, params, idx)
    t_logits, t_loss = hf_logits_and_loss(model, idx)
    assert rel_error(logits, t_logits) < TOL
    assert abs(loss - t_loss) < TOL * abs(t_loss)


def test_state_dict_variants_load_the_same():
    """Keys with or without `transformer.`, with the old attn.bias / masked_bias buffers, with or
    without the tied lm_head: all give the same parameters."""
    model = hf_model()
    config = hf.config_from_hf(model.config)
    sd = model.state_dict()
    base = hf.params_from_hf(sd, config)
    bare = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    for i in range(2):
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 12, 12))
        bare[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    for variant in (bare, {k: v.numpy() for k, v in sd.items()}):
        params = hf.params_from_hf(variant, config)
        assert all(np.array_equal(params[k], base[k]) for k in base)


def test_save_pretrained_folder_loads_directly(tmp_path):
    model = hf_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    config, params = hf.load_hf(tmp_path)
    idx = batch()
    logits, loss = minigpt_logits_and_loss(config, params, idx)
    t_logits, t_loss = hf_logits_and_loss(model, idx)
    assert rel_error(logits, t_logits) < TOL and abs(loss - t_loss) < TOL * abs(t_loss)
    config2, params2 = hf.load_hf(tmp_path / "model.safetensors")  # the file itself works too
    assert config2 == config and all(np.array_equal(params2[k], params[k]) for k in params)


@pytest.mark.parametrize("bias", [True, False])
def test_minigpt_checkpoint_loads_into_transformers(tmp_path, bias):
    """save_hf writes what GPT2LMHeadModel.from_pretrained reads; a bias=False model is written
    with zero biases, which computes the same function."""
    from minigpt import GPTConfig
    from minigpt import reference as ref

    config = GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=4, n_embd=16, bias=bias)
    params = ref.make_params(config, ref.ReferenceSettings(dtype="float32"))
    hf.save_hf(tmp_path, config, params)
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_new"
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = batch()
    logits, loss = minigpt_logits_and_loss(config, params, idx)
    t_logits, t_loss = hf_logits_and_loss(model, idx)
    assert rel_error(logits, t_logits) < TOL and abs(loss - t_loss) < TOL * abs(t_loss)
    config2, params2 = hf.load_hf(tmp_path)  # and back into minigpt, exactly
    assert config2 == config.replace(bias=True)
    assert all(np.array_equal(params2[k], params[k]) for k in params)


def test_configs_and_weights_minigpt_cannot_compute_are_refused(tmp_path):
    model = hf_model()
    base = model.config.to_dict()
    for change, message in [({"activation_function": "gelu"}, "activation_function"),
                            ({"n_inner": 17}, "n_inner"), ({"scale_attn_by_inverse_layer_idx": True}, "numerics"),
                            ({"model_type": "llama"}, "not a GPT-2 config")]:
        with pytest.raises(InputError, match=message):
            hf.config_from_hf({**base, **change})
    config = hf.config_from_hf(model.config)
    sd = dict(model.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    with pytest.raises(InputError, match="tied"):
        hf.params_from_hf(sd, config)
    sd = dict(model.state_dict())
    del sd["transformer.h.1.ln_2.bias"]
    with pytest.raises(InputError, match="missing"):
        hf.params_from_hf(sd, config)
    with pytest.raises(InputError, match="config.json"):
        hf.load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(base))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(InputError, match="pickle"):
        hf.load_hf(tmp_path)
