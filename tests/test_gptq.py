"""GPTQ 4-bit checkpoints, the format the paper trained on, load as they are (gptqmodel, no second quantization):
LoRA gets the gradients of the dequantized model, also after an eval pass; the quantized weights stay frozen; a run
resumes to the same bits; the tiny model learns the synthetic rule through train.py and predict.py."""

import json
import shutil
import sys

import pytest
import torch

import data
import model
import prompt
import train
from plumbing.errors import InputError
from frames import Batches, FrameCache, to_model
from conftest import TEST_RECIPE
from test_train import LEARNED, MSE, read_csv, resumes_bit_for_bit, run


def dense_copy(model):
    """The same model with each GPTQ layer replaced by an fp32 nn.Linear holding its dequantized weight."""
    for name, layer in [(n, m) for n, m in model.named_modules() if hasattr(m, "dequantize_weight")]:
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        dense = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            dense.weight.copy_(layer.dequantize_weight().T.float())  # dequantize_weight: (in, out), x @ w
            if layer.bias is not None:
                dense.bias.copy_(layer.bias.float())
        setattr(parent, name.rsplit(".", 1)[1], dense.requires_grad_(False))
    return model


def lora_gradients(net, batch, labels, processor, eval_first, modules=None):
    torch.manual_seed(0)
    lora = model.add_lora(net, 8, 16, dropout=0.0, modules=modules)
    with torch.no_grad():  # B starts at zero, which would leave A without a gradient: give it values
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    inputs = to_model(batch, processor, "cpu")
    if eval_first:  # the trap of gptqmodel's default CPU kernels: after a no-grad forward they pass no gradient
        lora.eval()
        with torch.no_grad():
            lora(**inputs)
        lora.train()
    k = int((labels != prompt.IGNORE).sum(1).max())
    train.score_loss(lora, inputs, labels[:, -k:]).backward()
    return {n: p.grad.clone() for n, p in lora.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("eval_first", [False, True])
def test_lora_gradients_are_those_of_the_dequantized_model(eval_first, tiny_gptq, synthetic, cache):
    processor = model.load_processor(tiny_gptq)
    videos = data.load_split(synthetic, "train")[:4]
    frames = FrameCache(cache)
    frames.fill(videos)
    batch, labels = Batches(videos, frames, processor)[[0, 1, 2, 3]]
    gptq = lora_gradients(model.load_model(tiny_gptq), batch, labels, processor, eval_first)
    dense = lora_gradients(dense_copy(model.load_model(tiny_gptq)), batch, labels, processor, eval_first)
    assert gptq.keys() == dense.keys() and len(gptq) == 2 * 3 * 2  # A and B of q/k/v in both layers
    # The same arithmetic up to float rounding of the dequantized weights (fp16 in the kernel, fp32 here): the
    # largest difference is measured at ~1e-6 of gradients of ~1e-2; the trap above gives errors as large as them.
    for name in gptq:
        scale = dense[name].abs().max()
        assert scale > 0, name
        torch.testing.assert_close(gptq[name], dense[name], rtol=0, atol=1e-3 * float(scale))


def test_quantized_weights_get_no_gradient_and_do_not_change(tiny_gptq, synthetic, cache, tmp_path):
    """train.py's model and loop: only LoRA trains; the packed 4-bit weights, scales and zeros are as loaded."""
    videos = data.load_split(synthetic, "train")[:8]
    frames = FrameCache(cache)
    frames.fill(videos)
    cfg = train.Config(data=synthetic, model=tiny_gptq, out=str(tmp_path), r=8, alpha=16, epochs=1, lr=1e-2, warmup=0,
                       grad_ckpt=False, workers=0)
    net = train.build_model(cfg)
    assert all("lora_" in n for n, p in net.named_parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # every linear layer of the language model is a GPTQ layer (peft's wrapper holds q/k/v's under two names)
    assert len({id(m) for m in net.modules() if hasattr(m, "dequantize_weight")}) == 2 * 7
    train.fit(cfg, net, model.load_processor(tiny_gptq), train.optimizer(net, cfg), videos, [], frames)  # 2 steps
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if "lora_" not in k)
    assert any(not torch.equal(after[k], v) for k, v in before.items() if "lora_B" in k)


def learns_and_resumes(model_dir, synthetic, cache, tmp_path, recipe=TEST_RECIPE):
    """train.py and predict.py on `model_dir` with the tiny recipe: the held-out SRCC passes LEARNED, predict.py
    reads the adapter back to the same predictions; then the run cut back to a checkpoint of its last epoch and resumed
    gives the same adapter and losses bit for bit. Returns the run's metrics."""
    out = tmp_path / "run"
    flags = ["--data", synthetic, "--model", model_dir, "--cache", cache, *recipe, "--ckpt-every", 50, "--keep", 10,
             "--log-every", 100]
    code, log = run("train.py", "--out", out, *flags)
    assert code == 0, log
    metrics = json.loads((out / "metrics.json").read_text())
    # LEARNED (0.6) is test_train's bar: 4 standard deviations of chance on 45 held-out videos. A model that could
    # not train through its quantized layers would stay at chance.
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE and metrics["invalid"] == 0, metrics
    code, log = run("predict.py", "--data", synthetic, "--adapter", out, "--split", "val", "--cache", cache,
                    "--out", tmp_path / "val.csv")
    assert code == 0, log
    assert read_csv(tmp_path / "val.csv") == read_csv(out / "predictions-val.csv")

    # Cut the run back to its checkpoint at step 300 (in its last epoch, 18 steps before the end) and resume it.
    assert "at step 300" in resumes_bit_for_bit(out, 300, flags)
    return metrics


def test_trains_learns_and_resumes_on_gptq(tiny_gptq, synthetic, cache, tmp_path):
    """The tiny Qwen2.5-VL's GPTQ checkpoint (measured: held-out SRCC 0.84, the full-precision model's 0.78)."""
    learns_and_resumes(tiny_gptq, synthetic, cache, tmp_path)


def test_what_cannot_load_says_so_in_one_line(tiny, tiny_gptq, tmp_path, monkeypatch):
    awq = tmp_path / "awq"
    shutil.copytree(tiny, awq)
    config = json.loads((awq / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (awq / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="awq checkpoints are not supported"):
        model.load_model(str(awq))
    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # as if it were not installed
    with pytest.raises(InputError, match="needs gptqmodel and optimum: pip install"):
        model.load_model(tiny_gptq)
