"""
Qwen-VL-Chat as written here (modeling.py, processing.py, and the project's prompt.py) against what the official code
computed (transformers 4.32 + its remote code) on a tiny random checkpoint in both official layouts.

    python model.py --verify         # qwen_vl/reference/: one JSON line of the largest differences; exit 1 past tolerance
    python model.py --verify DIR     # another set of references in the same layout

DIR holds tiny-chat/ (fp16) and tiny-chat-int4/ (GPTQ v1) checkpoints, reference/ and reference-int4/ with
reference.json, reference.safetensors and the frames, and tokenizer/ with the official tokenizer's ids on the real
vocabulary, checked where DIR/tokenizer/qwen.tiktoken (Qwen's file, not carried in this repository) is there. Every
reference quantity is recomputed through the project's own code: the prompt (prompt.messages and the chat layout),
the tokenizer, the pixels, the vision tower, every position's final hidden state, the last logits, the answer's
loss, greedy decoding on the KV cache, a left-padded batch, and a prompt past seq_length (dynamic NTK and log-n).

Tolerances. Token ids must be equal. Float quantities: 2e-3 in absolute terms. The official code's own float noise
(a left-padded row against the same prompt alone) is 2.8e-4 at most, and a re-implementation in float32 differs
from it by ~1e-5; every likely mistake that its README measures moves the logits by at least 0.079 (the smallest:
all visual LayerNorms at eps 1e-5), 40x the tolerance. The three it cannot see ((b) positions shifted alike, (x1)
tanh-GELU, (i3) log-n off by one position: under 1e-3) no tolerance could tell from float noise.
"""

import json
import os
import sys

import torch

import prompt
from qwen_vl import modeling as qwen_vl
from qwen_vl import processing as qwen_vl_processor
from plumbing.errors import InputError

TOLERANCE = 2e-3
REFERENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")  # carried in the repository
REAL_VOCABULARY = "qwen.tiktoken"  # Qwen-VL-Chat's 151,643 ranks, Qwen's to distribute: not carried


def greedy(model, input_ids, attention_mask, pixel_values, steps):
    """Greedy tokens and each step's logits through the model's own generate: one prefill, then its KV cache."""
    ids, scores = model.generate(input_ids, attention_mask, pixel_values, max_new_tokens=steps, output_scores=True)
    return ids[:, input_ids.shape[1]:], scores


def messages(list_format):
    """The official list format of a reference prompt -> the project's prompt.messages with the same captions,
    its image items carrying the reference's file names (which the tokenizer writes between <img> and </img>)."""
    images = [item["image"] for item in list_format if "image" in item]
    last = list_format[-1]["text"]
    if not last.endswith(prompt.ANSWER_CUE):
        raise InputError(f"the reference prompt does not end with the answer cue: {last[-60:]!r}")
    captions = last[:-len(prompt.ANSWER_CUE)].rstrip("\n").split("\n")
    m = prompt.messages(captions, len(images))
    slots = [item for item in m[0]["content"] if item["type"] == "image"]
    for item, path in zip(slots, images):
        item["image"] = path
    return m


def check_tokenizer(tokenizer, ref, diffs, key):
    """The ids of the numbers 0-100, of the answer and of both prompts' contexts, on one vocabulary."""
    numbers = ref["integers_0_100"]
    diffs[f"{key}_numbers_ids_mismatched"] = sum(tokenizer.encode(str(s)) != numbers[str(s)] for s in range(101))
    for name in ("prompt", "prompt2_batch"):
        p = ref[name]
        query = qwen_vl_processor.from_list_format(p["list_format"])
        ids = qwen_vl_processor.context_ids(tokenizer, query)
        ours = tokenizer.encode(qwen_vl_processor.QWenVLProcessor(tokenizer, None).apply_chat_template(
            messages(p["list_format"]), tokenize=False, add_generation_prompt=True))
        diffs[f"{key}_{name}_ids_mismatched"] = int(ids != p["context_ids"]) + int(ours != p["context_ids"])


def max_abs(a, b):
    """The largest absolute difference; infinite where the shapes differ (another prompt length, say)."""
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def check_model(dir_, checkpoint, reference, diffs, key):
    from PIL import Image
    from safetensors.torch import load_file

    ref_dir = os.path.join(dir_, reference)
    with open(os.path.join(ref_dir, "reference.json")) as f:
        info = json.load(f)
    ref = load_file(os.path.join(ref_dir, "reference.safetensors"))
    processor = qwen_vl_processor.QWenVLProcessor.from_pretrained(os.path.join(dir_, checkpoint))
    model = qwen_vl.from_pretrained(os.path.join(dir_, checkpoint), torch.float32, "cpu")
    tokenizer, transform = processor.tokenizer, processor.image_processor
    frames_dir = os.path.join(dir_, "reference")

    def encode(p):
        """A reference prompt through the project's prompt and processor: (its text, its frames)."""
        text = processor.apply_chat_template(messages(p["list_format"]), tokenize=False, add_generation_prompt=True)
        frames = [Image.open(os.path.join(frames_dir, item["image"])).convert("RGB") for item in p["list_format"]
                  if "image" in item]
        return text, frames

    p1, p2 = info["prompt"], info["prompt2_batch"]
    (t1, f1), (t2, f2) = encode(p1), encode(p2)
    one = processor(text=[t1], images=[f1])
    pixels = transform.normalize(one["pixel_values"])
    official_448 = torch.stack([transform.normalize(transform.resize(Image.open(os.path.join(
        frames_dir, f"{os.path.splitext(item['image'])[0]}-448.png")).convert("RGB"))) for item in p1["list_format"]
        if "image" in item])
    diffs[f"{key}_pixels"] = max_abs(pixels, official_448)
    target = torch.tensor([tokenizer.encode(info["teacher_forced"]["answer_text"]) + [tokenizer.eos_token_id]])
    input_ids = torch.cat([one["input_ids"], target], 1)
    diffs[f"{key}_input_ids_mismatched"] = int(input_ids.tolist() != ref["input_ids"].tolist())
    with torch.no_grad():
        diffs[f"{key}_visual_features"] = max_abs(model.transformer.visual(pixels), ref["visual_features"])
        out = model(input_ids, torch.ones_like(input_ids), pixels, output_hidden_states=True)
        diffs[f"{key}_last_hidden_state"] = max_abs(out.hidden_states[-1][0], ref["last_hidden_state"])
        if "hidden_states_all" in ref:
            diffs[f"{key}_hidden_states_all"] = max(max_abs(a[0], b) for a, b in zip(out.hidden_states,
                                                                                    ref["hidden_states_all"]))
        diffs[f"{key}_logits_last4"] = max_abs(out.logits[0, -4:], ref["logits_last4"])
        k = target.shape[1]
        ce = torch.nn.functional.cross_entropy(out.logits[0, -k - 1:-1].float(), target[0], reduction="none")
        diffs[f"{key}_answer_ce"] = max(max_abs(ce, ref["answer_ce_per_token"]), abs(float(ce.sum() - ref["answer_ce_sum"])))
        single = model(one["input_ids"], one["attention_mask"], pixels, logits_to_keep=1).logits[0, -1]
        diffs[f"{key}_single_last_logits"] = max_abs(single, ref["single_last_logits_prompt1"])
        tokens, scores = greedy(model, one["input_ids"], one["attention_mask"], pixels, len(ref["generate_new_ids"]))
        diffs[f"{key}_generate_ids_mismatched"] = int(tokens[0].tolist() != ref["generate_new_ids"].tolist())
        diffs[f"{key}_generate_step_logits"] = max_abs(scores[0], ref["generate_step_logits"])

        batch = processor(text=[t1, t2], images=[f1, f2], padding=True, padding_side="left")
        diffs[f"{key}_batch_ids_mismatched"] = int(batch["input_ids"].tolist() != ref["batch_input_ids"].tolist() or
                                                   batch["attention_mask"].tolist() != ref["batch_attention_mask"].tolist())
        bpx = transform.normalize(batch["pixel_values"])
        last = model(batch["input_ids"], batch["attention_mask"], bpx, logits_to_keep=1).logits[:, -1]
        diffs[f"{key}_batch_last_logits"] = max_abs(last, ref["batch_last_logits"])
        two = processor(text=[t2], images=[f2])
        single2 = model(two["input_ids"], two["attention_mask"], transform.normalize(two["pixel_values"]),
                        logits_to_keep=1).logits[0, -1]
        diffs[f"{key}_single_last_logits"] = max(diffs[f"{key}_single_last_logits"],
                                                 max_abs(single2, ref["single_last_logits_prompt2"]))
        tokens, _ = greedy(model, batch["input_ids"], batch["attention_mask"], bpx, ref["batch_generate_new_ids"].shape[1])
        diffs[f"{key}_batch_generate_ids_mismatched"] = int(tokens.tolist() != ref["batch_generate_new_ids"].tolist())

        if "long_input_ids" in ref:
            long_ids = torch.tensor([qwen_vl_processor.context_ids(tokenizer, info["long_prompt"]["query"])])
            diffs[f"{key}_long_ids_mismatched"] = int(long_ids.tolist() != ref["long_input_ids"].tolist())
            out = model(long_ids, torch.ones_like(long_ids), output_hidden_states=True)
            h = out.hidden_states[-1][0]
            diffs[f"{key}_long_last_logits"] = max_abs(out.logits[0, -1], ref["long_last_logits"])
            diffs[f"{key}_long_hidden"] = max(max_abs(h[::64][:len(ref["long_last_hidden_state_sampled"])],
                                                      ref["long_last_hidden_state_sampled"]),
                                              max_abs(h[-8:], ref["long_last_hidden_state_tail"]))
            tokens, scores = greedy(model, long_ids, torch.ones_like(long_ids), None, len(ref["long_generate_new_ids"]))
            diffs[f"{key}_long_generate_ids_mismatched"] = int(tokens[0].tolist() != ref["long_generate_new_ids"].tolist())
            diffs[f"{key}_long_generate_step_logits"] = max_abs(scores[0], ref["long_generate_step_logits"])
    return info


def verify(dir_):
    """Every difference, by name: counts of mismatched id lists (must be 0) and largest absolute float differences."""
    for sub in ("tiny-chat", "reference"):
        if not os.path.isdir(os.path.join(dir_, sub)):
            raise InputError(f"{dir_}: no {sub}/: expected the official references' layout (see verify.py)")
    diffs = {}
    info = check_model(dir_, "tiny-chat", "reference", diffs, "fp16")
    check_tokenizer(qwen_vl_processor.QWenTokenizer.from_pretrained(os.path.join(dir_, "tiny-chat")), info["tokenizer"],
                    diffs, "tokenizer")
    if os.path.isdir(os.path.join(dir_, "tiny-chat-int4")):
        check_model(dir_, "tiny-chat-int4", "reference-int4", diffs, "int4")
    real = os.path.join(dir_, "tokenizer")
    if os.path.isfile(os.path.join(real, REAL_VOCABULARY)):
        with open(os.path.join(real, "tokenizer_reference.json")) as f:
            check_tokenizer(qwen_vl_processor.QWenTokenizer.from_pretrained(real), json.load(f), diffs, "real_tokenizer")
    else:
        print(f"not checked: the real vocabulary ({os.path.join(real, REAL_VOCABULARY)} is Qwen's, not carried here: copy "
              "Qwen-VL-Chat's own there to check its ids too)", file=sys.stderr)
    return diffs


def failures(diffs):
    return [k for k, v in diffs.items() if (v != 0 if k.endswith("_mismatched") else not v <= TOLERANCE)]


def main(dir_):
    """Print one JSON line of the differences and their verdict; exit 1 when any is past its tolerance."""
    torch.manual_seed(0)
    diffs = verify(dir_)
    bad = failures(diffs)
    print(json.dumps(dict(ok=not bad, tolerance=TOLERANCE, failed=bad,
                          **{k: (v if isinstance(v, int) else float(f"{v:.3g}")) for k, v in diffs.items()})))
    return 1 if bad else 0
