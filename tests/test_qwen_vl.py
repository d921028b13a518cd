"""Qwen-VL-Chat, the paper's model, written here (qwen_vl.py): equal to the official code on its reference outputs
(model.py --verify), and a broken copy is caught; LoRA where the paper put it (c_attn: 67,108,864 parameters at r=128
on the real configuration), never in the vision tower; both 4-bit forms (NF4 of the fp16 release, the Int4 release's
GPTQ as it is) with LoRA gradients equal to the dequantized model's; left padding that stays finite in bf16 whatever
the attention kernel; bad checkpoints as one-line errors; and the method's whole path on a tiny Qwen-VL: it learns
the synthetic rule through train.py and predict.py."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import data
import model
import prompt
from qwen_vl import modeling as qwen_vl
from conftest import QWEN_VL_RECIPE, ROOT, greedy_equals_generate, script
from frames import Batches, FrameCache, to_model
from test_gptq import learns_and_resumes, lora_gradients
from test_train import LEARNED, read_csv
import scoring.decode

SHARED = os.path.join(ROOT, "qwen_vl", "reference")  # the official code's outputs, carried in the repository


def verify(folder):
    code, out, err = script("model.py", "--verify", folder)
    return code, json.loads(out.strip().splitlines()[-1]) if out.strip() else None, err


def test_equal_to_the_official_code_on_its_references():
    rc, result, err = verify(SHARED)
    assert rc == 0 and result["ok"], (result, err[-2000:])
    floats = {k: v for k, v in result.items() if k.startswith(("fp16_", "int4_")) and not k.endswith("_mismatched")}
    # every quantity of the references, in both layouts, the long prompt (NTK and log-n) included
    assert {"fp16_logits_last4", "fp16_hidden_states_all", "fp16_long_last_logits", "int4_logits_last4",
            "int4_batch_last_logits", "fp16_generate_step_logits"} <= set(floats)
    assert max(floats.values()) < 1e-4  # float32 noise only (measured ~2e-5); the tolerance is 2e-3


def broken_copy(tmp_path, edit):
    """The references with one checkpoint edited by `edit(folder)`; big files linked, not copied."""
    dst = tmp_path / "qwen-vl"
    shutil.copytree(SHARED, dst, copy_function=os.symlink)
    folder = dst / "tiny-chat"
    for name in os.listdir(folder):  # the checkpoint's own files, real copies: the edit must not reach the original
        os.unlink(folder / name)
        shutil.copy(os.path.join(SHARED, "tiny-chat", name), folder / name)
    edit(folder)
    return str(dst)


def swap_mlp_gate(folder):
    """w1 and w2 exchanged: silu on the other branch (the references' mistake h)."""
    state = load_file(folder / "model.safetensors")
    for i in range(2):
        a, b = f"transformer.h.{i}.mlp.w1.weight", f"transformer.h.{i}.mlp.w2.weight"
        state[a], state[b] = state[b], state[a]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def norm_eps(folder):
    """Every RMSNorm at eps 1e-5 instead of 1e-6 (the references' mistake g: 0.39 on the logits)."""
    config = json.load(open(folder / "config.json"))
    config["layer_norm_epsilon"] = 1e-5
    json.dump(config, open(folder / "config.json", "w"))


@pytest.mark.parametrize("edit", [swap_mlp_gate, norm_eps])
def test_a_broken_copy_fails(edit, tmp_path):
    rc, result, err = verify(broken_copy(tmp_path, edit))
    assert rc == 1 and not result["ok"] and any(k.startswith("fp16_") for k in result["failed"]), (result, err[-2000:])


def test_lora_on_c_attn_is_the_papers_67m_from_the_configuration_alone():
    code, out, err = script("model.py", "--arch", "qwen-vl-chat", "--r", 128, "--alpha", 1024)
    assert code == 0, err[-2000:]
    assert "trainable parameters: 67,108,864 of" in out and "(0.69%)" in out  # 0.7% of 9.7 B


@pytest.mark.parametrize("modules", [None, ["all"]])
def test_lora_only_in_the_language_model(tiny_qvl, modules):
    m = model.add_lora(model.load_model(tiny_qvl), 8, 16, modules=modules)
    wrapped = sorted({n.split(".lora_")[0] for n, p in m.named_parameters() if p.requires_grad})
    kinds = {n.split(".", 5)[-1] for n in wrapped}
    assert kinds == ({"attn.c_attn"} if modules is None else set(qwen_vl.QUANTIZED)), kinds
    assert len(wrapped) == len(kinds) * 2 and all(".transformer.h." in n for n in wrapped)
    assert not any(".visual." in n for n, _ in m.named_parameters() if "lora_" in n)


def test_nf4_language_model_full_precision_vision(tiny_qvl):
    import bitsandbytes as bnb

    m = model.load_model(tiny_qvl)
    quantized = [n for n, mod in m.named_modules() if isinstance(mod, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * len(qwen_vl.QUANTIZED) and all(n.startswith("transformer.h.") for n in quantized)
    assert all(mod.weight.quant_type == "nf4" and mod.weight.quant_state.nested for mod in m.modules()
               if isinstance(mod, bnb.nn.Linear4bit))
    assert not any(p.requires_grad for p in m.parameters())


def a_batch(folder, synthetic, cache, n=4):
    processor = model.load_processor(folder)
    videos = data.load_split(synthetic, "train")[:n]
    frames = FrameCache(cache, 3, model.budget_of(processor))
    frames.fill(videos)
    batch, labels = Batches(videos, frames, processor)[list(range(n))]
    return processor, batch, labels


@pytest.mark.parametrize("eval_first", [False, True])
def test_gptq_lora_gradients_are_those_of_the_dequantized_model(eval_first, tiny_qvl_gptq, synthetic, cache):
    processor, batch, labels = a_batch(tiny_qvl_gptq, synthetic, cache)
    gptq_model = model.load_model(tiny_qvl_gptq)
    dense_model = model.load_model(tiny_qvl_gptq)
    for name, layer in list(qwen_vl.language_linears(dense_model)):
        dense = torch.nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            dense.weight.copy_(layer.dequantize_weight().T.float())
            dense.bias.copy_(layer.bias.float())
        qwen_vl.replace(dense_model, name, dense.requires_grad_(False))
    before = {k: v.clone() for k, v in gptq_model.state_dict().items() if k.endswith(("qweight", "scales"))}
    # (qzeros left out: gptqmodel re-encodes them between its v1 and v2 forms when the layer switches train/eval)
    gptq = lora_gradients(gptq_model, batch, labels, processor, eval_first, modules=["all"])
    dense = lora_gradients(dense_model, batch, labels, processor, eval_first, modules=["all"])
    assert gptq.keys() == dense.keys() and len(gptq) == 2 * 2 * len(qwen_vl.QUANTIZED)
    for name in gptq:  # float32 both ways, the same dequantized weights: rounding only
        scale = dense[name].abs().max()
        assert scale > 0 and (gptq[name] - dense[name]).abs().max() <= 1e-4 * scale, name
    after = {k.split("base_model.model.")[-1].replace(".base_layer", ""): v for k, v in gptq_model.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the quantized weights never move


def test_greedy_decoding_on_the_cache_equals_generate(tiny_qvl, synthetic, cache):
    processor, batch, _ = a_batch(tiny_qvl, synthetic, cache)
    m = model.load_model(tiny_qvl)
    tok = processor.tokenizer
    greedy_equals_generate(m, to_model(batch, processor, "cpu"), tok.eos_token_id, tok.pad_token_id)


def test_expected_decoding_equals_a_plain_forward_of_each_answer(tiny_qvl, synthetic, cache):
    processor, batch, _ = a_batch(tiny_qvl, synthetic, cache, n=2)
    m = model.load_model(tiny_qvl).eval()
    inputs = to_model(batch, processor, "cpu")
    answers = prompt.answer_ids(processor.tokenizer)
    fast = scoring.decode.answer_logprobs(m, inputs, answers)
    for s in (0, 7, 42, 100):  # each answer appended to the prompts, scored by one ordinary forward
        ids = torch.cat([inputs["input_ids"], torch.tensor(answers[s]).expand(2, -1)], 1)
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, len(answers[s]), dtype=torch.long)], 1)
        with torch.no_grad():
            logits = m(ids, mask, inputs["pixel_values"]).logits[:, -len(answers[s]) - 1:-1].log_softmax(-1)
        slow = logits.gather(-1, torch.tensor(answers[s]).expand(2, -1)[..., None])[..., 0].sum(1)
        assert torch.allclose(fast[:, s], slow, atol=2e-5), (s, fast[:, s], slow)


def test_left_padding_stays_finite_in_bf16_whatever_the_attention_kernel(tiny_qvl, monkeypatch):
    """On a GPU the model runs in bf16, where the mask's minimum is -inf, and a left-padding query has nothing to
    attend: CUDA's memory-efficient SDPA then gives NaN, which 0 x NaN carries into every real position of the next
    layer. Under an attention that guards nothing (a plain softmax), a left-padded batch in bf16 keeps every real
    position's logits finite, and in float32 they are those of the real SDPA."""
    import types

    import numpy as np
    import torch.nn.functional as F

    from scaffold import synthetic

    def plain(q, k, v, attn_mask=None, *args, **kwargs):
        w = q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5
        return ((w if attn_mask is None else w + attn_mask.float()).softmax(-1) @ v.float()).to(q.dtype)

    rng = np.random.default_rng(0)
    processor = model.load_processor(tiny_qvl)
    frames = [torch.from_numpy(rng.integers(0, 256, (3, 3, 112, 112), dtype=np.uint8)) for _ in range(2)]
    captions = [[synthetic.synthetic_caption(rng) for _ in range(5)], ["a"] * 5]  # the second row is left-padded
    batch, _ = prompt.encode(processor, frames, captions, None)
    batch = to_model(batch, processor, "cpu")
    real = batch["attention_mask"].bool()
    assert not real[1].all()
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = qwen_vl.from_pretrained(tiny_qvl, dtype)
        with torch.no_grad():
            logits["sdpa", dtype] = m(**batch).logits[real].float()
            monkeypatch.setattr(qwen_vl, "F", types.SimpleNamespace(**dict(vars(F), scaled_dot_product_attention=plain)))
            logits["plain", dtype] = m(**batch).logits[real].float()
            monkeypatch.undo()
    assert torch.isfinite(logits["plain", torch.bfloat16]).all()
    torch.testing.assert_close(logits["plain", torch.float32], logits["sdpa", torch.float32], atol=1e-4, rtol=1e-4)


def write_broken(tmp_path, tiny_qvl, edit):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_qvl, folder)
    edit(folder)
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda f: os.remove(f / "qwen.tiktoken"), "qwen.tiktoken"),
    (lambda f: json.dump({**json.load(open(f / "config.json")), "visual": {
        k: v for k, v in json.load(open(f / "config.json"))["visual"].items() if k != "width"}},
        open(f / "config.json", "w")), "'visual' dict has no 'width'"),
    (lambda f: save_file({k: v for k, v in load_file(f / "model.safetensors").items() if "ln_f" not in k},
                         f / "model.safetensors"), "no tensor transformer.ln_f.weight"),
    (lambda f: save_file({k: (v[:-1] if k == "lm_head.weight" else v) for k, v in
                          load_file(f / "model.safetensors").items()}, f / "model.safetensors"),
     "tensor lm_head.weight has shape"),
])
def test_a_bad_checkpoint_is_one_line_naming_the_file(edit, message, tmp_path, tiny_qvl):
    folder = write_broken(tmp_path, tiny_qvl, edit)
    code, _, err = script("model.py", "--model", folder, "--r", 8)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(folder) in lines[0], err[-2000:]


@pytest.mark.parametrize("command", [["train.py"], ["cv.py"], ["cv.py", "--zero-shot"],
                                     ["predict.py", "--zero-shot", "--split", "val"]])
@pytest.mark.parametrize("flags, message", [(["--input", "video", "--frames", "4"], "--input video"),
                                            (["--max-pixels", "401408"], "--max-pixels")])
def test_options_this_family_cannot_honour_are_refused(command, flags, message, tiny_qvl, synthetic, cache, tmp_path):
    """Qwen-VL-Chat reads images at its one size: asked for a video input or another size, every script says so in
    one line before it writes anything."""
    out = tmp_path / "run" / ("predictions.csv" if command[0] == "predict.py" else "")
    code, _, err = script(*command, "--data", synthetic, "--model", tiny_qvl, "--out", out, "--cache", cache, *flags)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err[-2000:]
    assert not os.path.exists(tmp_path / "run") or os.listdir(tmp_path / "run") == []


def test_the_tiny_qwen_vl_learns_through_train_and_predict(tiny_qvl, synthetic, cache, tmp_path):
    out = tmp_path / "run"
    code, out_, err = script("train.py", "--data", synthetic, "--model", tiny_qvl, "--out", out, "--cache", cache,
                             *QWEN_VL_RECIPE, "--log-every", 100)
    log = out_ + err
    assert code == 0, log[-3000:]
    assert "trainable parameters:" in log and "tokens per sample: 48 visual (3 frames" in log
    last = read_csv(out / "metrics.csv")[-1]
    assert float(last["srcc"]) > LEARNED and int(last["invalid"]) == 0, last
    config = json.load(open(out / "config.json"))
    assert config["modules"] == "c_attn"
    code, _, err = script("predict.py", "--data", synthetic, "--adapter", out, "--split", "val", "--cache", cache,
                          "--out", tmp_path / "val.csv")
    assert code == 0, err[-3000:]
    held = {r["video_id"]: r["mem_score"] for r in read_csv(out / "predictions-val.csv")}
    again = {r["video_id"]: r["mem_score"] for r in read_csv(tmp_path / "val.csv")}
    assert held == again  # predict.py reads the adapter back to the same answers


def test_the_tiny_int4_qwen_vl_learns_and_resumes_bit_for_bit(tiny_qvl_gptq, synthetic, cache, tmp_path):
    """The paper's own form of the model, the Int4 release's GPTQ layout as it is, with the paper's LoRA on c_attn:
    it learns the demo's rule through train.py and predict.py, and a run cut back to a checkpoint resumes to the same
    bits (test_gptq.learns_and_resumes)."""
    learns_and_resumes(tiny_qvl_gptq, synthetic, cache, tmp_path, QWEN_VL_RECIPE)
    assert json.load(open(tmp_path / "run" / "config.json"))["modules"] == "c_attn"


def test_scores_your_own_videos_in_four_frames_with_captions_it_writes(tiny_qvl, tmp_path):
    """predict.py --videos on the paper's model, zero-shot, with --frames 4 (each frame one image of its own) and
    --explain: the captions are written by the model's own sampling on its KV cache (qwen_vl.generate), each video
    gets its expected score and a share for each of its 4 frames and its captions."""
    from scaffold.synthetic import fade, write_video

    import numpy as np

    folder = tmp_path / "mine"
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.webm"):
        write_video(str(folder / name), fade(rng, 24, 64)[0])
    code, out, err = script("predict.py", "--videos", folder, "--zero-shot", "--model", tiny_qvl, "--frames", 4,
                            "--explain", "--cache", tmp_path / "cache", "--out", tmp_path / "scores.csv", "--workers", 0)
    assert code == 0, (out + err)[-3000:]
    rows = {r["video_id"]: r for r in read_csv(tmp_path / "scores.csv")}
    assert sorted(rows) == ["a.mp4", "b.webm"] and all(r["captions_from"] == "model" for r in rows.values())
    assert all(sum(bool(r[f"caption_{k}"]) for k in range(1, 6)) >= 1 for r in rows.values())
    assert all(0 <= float(r["mem_score"]) <= 1 and "std" in r for r in rows.values())
    explained = read_csv(out.split("share of the score to ")[1].splitlines()[0])
    assert sorted(r["video_id"] for r in explained) == sorted(rows)
    assert [c for c in explained[0] if c.startswith("frame_")] == [f"frame_{k}{std}" for std in ("", "_std")
                                                                     for k in range(1, 5)]
