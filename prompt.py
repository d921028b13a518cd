"""
The paper's prompt (Martin-Fernandez et al., Sensors 2025, Listing 1), its target and its label mask.

Pure functions of strings and token ids: nothing here loads a model, so every rule of the method that
lives in text can be tested on its own.

    instruction -> frames (first, middle, last) -> five captions, one per line -> answer cue
    target      =  the score as an integer 0-100, then the end-of-turn token
"""

import re

import torch

INSTRUCTION = (
    "You are an expert in multimedia perception and memorability. On a scale from 0 to 100, predict how "
    "memorable the following video is based on the following frames and textual captions that describe them."
)
ANSWER_CUE = "(Answer only with a number between 0 and 100). PREDICTED SCORE:"
IMAGE_PAD = "<|image_pad|>"  # one visual token of a frame in Qwen's chat layout
END_OF_TURN = "<|im_end|>"  # Qwen's end of an assistant turn; the model must learn to stop after the score
IGNORE = -100  # label of a position that carries no loss (torch's cross_entropy ignore_index)


def messages(captions, n_frames):
    """
    The user turn of Listing 1 as chat messages; the frames are passed to the processor in the same order.
    Each frame is introduced as the paper's Qwen-VL-Chat introduces an image, "Picture k: <img>...</img>\n" (its
    tokenizer's from_list_format, and the format of its fine-tuning data): the layout the paper's model read.
    """
    content = [{"type": "text", "text": INSTRUCTION + "\n"}]
    for k in range(n_frames):
        content += [{"type": "text", "text": f"Picture {k + 1}: "}, {"type": "image"}, {"type": "text", "text": "\n"}]
    content.append({"type": "text", "text": "\n".join(captions) + "\n" + ANSWER_CUE})
    return [{"role": "user", "content": content}]


def target_ids(tokenizer, label):
    """Token ids the model is trained to answer: the integer's digits (Qwen splits numbers digit by digit) and end-of-turn."""
    assert 0 <= label <= 100, label
    return tokenizer.encode(str(label), add_special_tokens=False) + [tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def left_pad(rows, value):
    """Rows of ints (lists or 1-d tensors) -> a (len(rows), longest) tensor, each row right-aligned."""
    rows = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, width - len(row):] = row
    return out


def join(prompts, targets, pad_id):
    """
    Concatenate each prompt with its target and left-pad the batch.
    Left padding puts every answer at the end of its row, exactly where generation writes it, so training and
    inference see the same prompt positions and the loss needs logits of the last few positions only.
    Returns input_ids, attention_mask and labels: IGNORE everywhere except the target tokens.
    """
    prompts = [torch.as_tensor(p, dtype=torch.long) for p in prompts]
    targets = [torch.as_tensor(t, dtype=torch.long) for t in targets]
    input_ids = left_pad([torch.cat([p, t]) for p, t in zip(prompts, targets)], pad_id)
    attention_mask = left_pad([torch.ones(len(p) + len(t)) for p, t in zip(prompts, targets)], 0)
    labels = left_pad([torch.cat([torch.full_like(p, IGNORE), t]) for p, t in zip(prompts, targets)], IGNORE)
    return input_ids, attention_mask, labels


def encode(processor, frames, captions, labels=None):
    """
    A batch of videos -> model inputs (and labels when `labels`, the integer scores, are given).
    frames: per video its frames, (3, H, W) tensors or (H, W, 3) arrays; captions: per video its captions.
    The processor lays out the chat and expands each frame into its visual tokens; the targets are appended
    as token ids, exactly as generation would produce them. The patches stay uint8 and a frame is not yet repeated
    over the vision tower's two time steps: `pixels` does both where the model is, and a batch moves 8x fewer bytes
    from the loader's workers to the GPU than the processor's own float32 patches.
    """
    tokenizer = processor.tokenizer
    texts = [processor.apply_chat_template(messages(c, len(f)), tokenize=False, add_generation_prompt=True)
             for f, c in zip(frames, captions)]
    enc = processor(text=texts, images=[list(f) for f in frames], padding=True, padding_side="left",
                    return_tensors="pt", do_rescale=False, do_normalize=False, temporal_patch_size=1)
    keep = enc["attention_mask"].bool()
    targets = [target_ids(tokenizer, y) for y in labels] if labels is not None else [[] for _ in texts]
    input_ids, attention_mask, label_ids = join([ids[k] for ids, k in zip(enc["input_ids"], keep)], targets,
                                                tokenizer.pad_token_id)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask)
    for key, value in enc.items():
        if key in batch:
            continue
        if value.shape == keep.shape:  # other per-token fields (mm_token_type_ids): text type 0 for the answer
            value = left_pad([torch.cat([v[k], v.new_zeros(len(t))]) for v, k, t in zip(value, keep, targets)], 0)
        batch[key] = value
    return batch, (label_ids if labels is not None else None)


def pixels(patches, image_processor):
    """
    The uint8 patches of `encode` -> the float32 pixel values the processor makes itself: its rescale and
    normalization, fused as it fuses them ((x - mean / r) / (std / r), r the rescale factor, per channel), then each
    still frame repeated over the vision tower's time steps (Qwen embeds tubelets of temporal_patch_size frames).
    A patch is laid out (channel, time, row, column).
    """
    ip = image_processor
    mean = torch.tensor(ip.image_mean, device=patches.device) * (1.0 / ip.rescale_factor)
    std = torch.tensor(ip.image_std, device=patches.device) * (1.0 / ip.rescale_factor)
    x = patches.to(torch.float32).view(len(patches), len(mean), 1, -1)
    x = x.sub_(mean[:, None, None]).div_(std[:, None, None])
    return x.expand(-1, -1, ip.temporal_patch_size, -1).reshape(len(patches), -1)


def to_model(batch, image_processor, device):
    """A batch of `encode` on the model's device, its patches normalized there; copies from pinned memory overlap."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    batch["pixel_values"] = pixels(batch["pixel_values"], image_processor)
    return batch


def token_counts(batch, tokenizer):
    """(visual, all) tokens of each row of an encoded batch, padding left out."""
    real = batch["attention_mask"].bool()
    visual = ((batch["input_ids"] == tokenizer.convert_tokens_to_ids(IMAGE_PAD)) & real).sum(1)
    return list(zip(visual.tolist(), real.sum(1).tolist()))


# The paper's post-processing: the first number in the answer, kept if it lies in 0..100. The lookarounds keep
# "6666", "1000" or "-5" from being read as a valid 66, 100 or 5.
_NUMBER = re.compile(r"(?<![\d.\-])(\d{1,3})(?:\.\d+)?(?![\d])")


def parse_score(answer):
    """Free text -> integer 0..100, or None when the answer holds no such number (an invalid prediction)."""
    m = _NUMBER.search(answer)
    if m is None:
        return None
    value = int(m.group(1))
    return value if value <= 100 else None
