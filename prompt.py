"""
The paper's prompt (Martin-Fernandez et al., Sensors 2025, Listing 1), its answer and its label mask.

Pure functions of strings and token ids: nothing here loads a model, so every rule of the method that
lives in text can be tested on its own.

    instruction -> frames (first, middle, last) -> five captions, one per line -> answer cue
    answer      =  the score as an integer 0-100, then the end-of-turn token
"""

import re
from decimal import ROUND_HALF_UP, Decimal

import torch


INSTRUCTION = (
    "You are an expert in multimedia perception and memorability. On a scale from 0 to 100, predict how "
    "memorable the following video is based on the following frames and textual captions that describe them."
)
ANSWER_CUE = "(Answer only with a number between 0 and 100). PREDICTED SCORE:"
# What the base model is asked for the captions of a video that has none (predict.py --videos without --captions)
CAPTION_REQUEST = "Describe what happens in this video in one short sentence."
IMAGE_PAD = "<|image_pad|>"  # one visual token of a frame in Qwen's chat layout
VIDEO_PAD = "<|video_pad|>"  # one visual token of a native video input (two frames' tubelets)
END_OF_TURN = "<|im_end|>"  # Qwen's end of an assistant turn; the model must learn to stop after the score
END_OF_TEXT = "<|endoftext|>"  # Qwen's end of a document; the official Qwen-VL-Chat also stops an answer there
IGNORE = -100  # label of a position that carries no loss (torch's cross_entropy ignore_index)


def messages(captions, n_frames, video=False, request=None):
    """
    The user turn of Listing 1 as chat messages; the frames are passed to the processor in the same order.
    Each frame is introduced as the paper's Qwen-VL-Chat introduces an image, "Picture k:<img>...</img>\n", with no
    space before the image (its tokenizer's from_list_format, and the format of its fine-tuning data): the layout the
    paper's model read, for every family.
    With `video`, the frames are one native video input instead, on its own line where the pictures stood.
    With `request` (CAPTION_REQUEST), the same frames are followed by that request instead of the paper's question.
    """
    content = [] if request else [{"type": "text", "text": INSTRUCTION + "\n"}]
    if video:
        # No label: the paper's model read no video, so there is no format of the paper's to keep, and Qwen's own chat
        # templates write a video with nothing before it (they number inputs, "Video 1: ", only with add_vision_id,
        # to tell several apart); the text around it stays the paper's word for word.
        content += [{"type": "video"}, {"type": "text", "text": "\n"}]
    else:
        for k in range(n_frames):
            content += [{"type": "text", "text": f"Picture {k + 1}:"}, {"type": "image"},
                        {"type": "text", "text": "\n"}]
    content.append({"type": "text", "text": request or "\n".join(captions) + "\n" + ANSWER_CUE})
    return [{"role": "user", "content": content}]


def score_tokens(tokenizer, label):
    """Token ids the model is trained to answer: the integer's digits (Qwen splits numbers digit by digit) and end-of-turn."""
    assert 0 <= label <= 100, label
    return tokenizer.encode(str(label), add_special_tokens=False) + [tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def stop_ids(tokenizer):
    """The token ids that end an answer: end-of-turn, and end-of-text where the tokenizer has it (Qwen-VL-Chat's
    official chat stops at either; its generation_config names end-of-text as the end of sequence)."""
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    known = end_of_text is not None and end_of_text != getattr(tokenizer, "unk_token_id", None)
    return [tokenizer.convert_tokens_to_ids(END_OF_TURN)] + ([end_of_text] if known else [])


def answer_ids(tokenizer):
    """The token ids of every answer the method allows, scores 0..100 in order: each one's score_tokens. They come from
    the tokenizer's own encoding of each number, so they are the exact answers whatever it does with digits (Qwen's
    split them one by one: 1-3 digit tokens, then end-of-turn; another may make "100" one token)."""
    return [score_tokens(tokenizer, s) for s in range(101)]


def left_pad(rows, value):
    """Rows of ints (lists or 1-d tensors) -> a (len(rows), longest) tensor, each row right-aligned."""
    rows = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, width - len(row):] = row
    return out


def join(prompts, answers, pad_id):
    """
    Concatenate each prompt with its answer and left-pad the batch.
    Left padding puts every answer at the end of its row, exactly where generation writes it, so training and
    inference see the same prompt positions and the loss needs logits of the last few positions only.
    Returns input_ids, attention_mask and labels: IGNORE everywhere except the answer's tokens.
    """
    prompts = [torch.as_tensor(p, dtype=torch.long) for p in prompts]
    answers = [torch.as_tensor(t, dtype=torch.long) for t in answers]
    input_ids = left_pad([torch.cat([p, t]) for p, t in zip(prompts, answers)], pad_id)
    attention_mask = left_pad([torch.ones(len(p) + len(t)) for p, t in zip(prompts, answers)], 0)
    labels = left_pad([torch.cat([torch.full_like(p, IGNORE), t]) for p, t in zip(prompts, answers)], IGNORE)
    return input_ids, attention_mask, labels


def encode(processor, frames, captions, labels=None, seconds=None, request=None, answer=score_tokens):
    """
    A batch of videos -> model inputs (and labels when `labels`, the integer scores, are given).
    frames: per video its frames, (3, H, W) tensors or (H, W, 3) arrays; captions: per video its captions.
    seconds: None, the paper's way: each frame is an image. Else per video when each frame is shown (FrameCache.clip),
    and the frames of each go in as one native video input (Qwen's tubelets of two frames: half the visual tokens).
    The processor lays out the chat and expands each frame into its visual tokens; the answers are appended
    as token ids, exactly as generation would produce them. With `request`, the frames are followed by it instead of
    the paper's question (see messages), and captions may be empty. The patches stay uint8 and an image is not yet repeated
    over the vision tower's two time steps: `pixels` does both where the model is, and a batch moves 8x fewer bytes
    from the loader's workers to the GPU than the processor's own float32 patches (4x for a video).
    answer(tokenizer, label): an answer's token ids, score_tokens unless told (tiny.teach_answer_format teaches others).
    """
    tokenizer = processor.tokenizer
    video = seconds is not None
    texts = [processor.apply_chat_template(messages(c, len(f), video, request), tokenize=False, add_generation_prompt=True)
             for f, c in zip(frames, captions)]
    if video:
        # The frames come fitted to the pixel budget (the video processor's is set to let them through: model.py) and
        # sampled already: the video processor must not pick frames again.
        visual = dict(videos=list(frames), video_metadata=[video_metadata(s, len(f)) for f, s in zip(frames, seconds)],
                      do_sample_frames=False)
    else:
        visual = dict(images=[list(f) for f in frames], temporal_patch_size=1)
    enc = processor(text=texts, **visual, padding=True, padding_side="left", return_tensors="pt", do_rescale=False,
                    do_normalize=False)
    keep = enc["attention_mask"].bool()
    answers = [answer(tokenizer, y) for y in labels] if labels is not None else [[] for _ in texts]
    input_ids, attention_mask, label_ids = join([ids[k] for ids, k in zip(enc["input_ids"], keep)], answers,
                                                tokenizer.pad_token_id)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask)
    for key, value in enc.items():
        if key in batch:
            continue
        if value.shape == keep.shape:  # other per-token fields (mm_token_type_ids): text type 0 for the answer
            value = left_pad([torch.cat([v[k], v.new_zeros(len(t))]) for v, k, t in zip(value, keep, answers)], 0)
        batch[key] = value
    return batch, (label_ids if labels is not None else None)


# The frame rate Qwen's processors assume when a video's is unknown.
ASSUMED_FPS = 24


def video_metadata(seconds, n_frames):
    """
    When the frames of a native video input are shown, as Qwen's processors read it: Qwen2.5-VL spaces its rotary
    time positions by second_per_grid_ts (two frames / the clip's frame rate), Qwen3-VL writes "<t seconds>" before
    each tubelet (frame index / frame rate). The N frames are evenly spaced from the first frame to the last
    (frames.frame_indices), so they are described as a clip of their own, N frames at N-1 intervals over their real
    span: both models then get the real time between frames, up to the rounding of the frames' indices (< half a
    source frame). Where the file tells no time (seconds None) or the frames span none (a one-frame video), the
    processors' own assumption, 24 frames a second, stands in.
    """
    span = seconds[-1] - seconds[0] if seconds else 0.0
    fps = (n_frames - 1) / span if span > 0 else ASSUMED_FPS
    return dict(total_num_frames=n_frames, fps=fps, frames_indices=list(range(n_frames)))


def token_counts(batch, tokenizer):
    """(visual, all) tokens of each row of an encoded batch, padding left out."""
    real = batch["attention_mask"].bool()
    if hasattr(tokenizer, "img_start_id"):  # Qwen-VL-Chat: the positions between <img> and </img>
        starts = (batch["input_ids"] == tokenizer.img_start_id).sum(1)
        return list(zip((starts * tokenizer.image_span).tolist(), real.sum(1).tolist()))
    pads = torch.tensor(tokenizer.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD]))
    visual = (torch.isin(batch["input_ids"], pads) & real).sum(1)
    return list(zip(visual.tolist(), real.sum(1).tolist()))


# The paper's post-processing (§4.1), "a regular expression extracts a number between 0 and 100", as a careful reader
# of free text takes it (parse_score). The answer is read left to right as scales, references, ranges and numbers; at
# any place the first of these that fits is taken. A number glued to letters is part of a word ("mp4", "3rd", "4K"),
# and a run of digits is read whole ("6666" is not 66).
_N = r"\d+(?:\.\d+)?"  # a number as written: digits, then maybe a decimal part
_TO = r"(?:\s*[-\u2013\u2014]\s*|\s+to\s+)"  # what joins a range's ends: a hyphen or a dash, or "to"
_READING = re.compile(
    r"(?<![A-Za-z\d])(?:"
    # a scale: a range after "scale", "scale of N", "out of N", "/N", "N-point"
    rf"(?P<scale>scale\s+(?:(?:of|from)\s+)?{_N}{_TO}{_N}|scale\s+of\s+{_N}|out\s+of\s+{_N}|/\s*{_N}|{_N}[-\s]point)"
    # a reference: "#1", "Picture 2", "frames 3", a single digit that opens a list's line ("1. ", "2) ")
    r"|(?P<reference>#\s*\d+|(?:picture|image|frame|caption)s?\s*#?\s*\d+|^[ \t]*\d[.)](?=[ \t]))"
    # a range: "between 70 and 80", "from 70 to 80", "70-80", "70 to 80"
    rf"|between\s+(?P<low>{_N})\s+and\s+(?P<high>{_N})|(?:from\s+)?(?P<from>{_N}){_TO}(?P<to>{_N})"
    rf"|(?P<number>[-\u2212]?{_N})"  # a number, maybe negative
    r")(?![A-Za-z\d])",
    re.IGNORECASE | re.MULTILINE)


def parse_score(answer):
    """
    Free text -> integer 0..100, or None when the answer holds no score (an invalid prediction), by this rule:
    The score is the answer's first number, where a scale ("0 to 100", "between 0 and 100", "out of 100", "/100",
    "on a scale of 1 to 10") and a reference ("#1", "Picture 2", "3rd", a digit opening a list line as in "1. ") are
    not numbers, a range ("70-80", "between 70 and 80") counts as its midpoint and a percentage as its number.
    It is rounded half up (72.5 -> 73, 0.85 -> 1) and must lie in 0-100: an answer whose first number does not
    (-5, 101, 6666), or that has none, is invalid.
    So of several numbers the first decides, even where a later one was meant, and a number on another scale is read
    as written (8/10 -> 8), never rescaled: the raw answers are kept (answers.csv) to be read again by another rule.
    """
    for m in _READING.finditer(answer):
        if m["scale"] or m["reference"]:
            continue
        if m["number"]:
            value = Decimal(m["number"].replace("\u2212", "-"))
        else:
            low, high = Decimal(m["low"] or m["from"]), Decimal(m["high"] or m["to"])
            if low in (0, 1) and high == 100:  # the scale the prompt gives ("between 0 and 100"), not a reading
                continue
            value = (low + high) / 2
        if value < 0:
            return None
        value = int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return value if value <= 100 else None
    return None
