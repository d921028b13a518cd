"""
Qwen-VL-Chat (v1)'s text and pixel side without trust_remote_code: its tiktoken tokenizer, the chatml layout of
make_context, the 448x448 image transform, and an HF-processor-like wrapper the prompt code can call.

Written from the official tokenization_qwen.py, qwen_generation_utils.py and visual.py (x1ngzai/Qwen-VL-Chat-Int4,
commit 1cd721a) and checked against what that code computed (../shared/qwen-vl, tests/test_qwen_vl_processor.py):

    tokenizer = QWenTokenizer.from_pretrained("tiny-chat")
    ids = context_ids(tokenizer, from_list_format([{"text": "Rate it.\n"}, {"image": "frame-1.png"}]))
    processor = QWenVLProcessor.from_pretrained("tiny-chat")
    batch = processor(text=[chatml(query)], images=[[frame]])   # input_ids, attention_mask, uint8 pixel_values
"""

import base64
import binascii
import json
import os
import unicodedata

import numpy as np
import tiktoken
import torch
from PIL import Image

from plumbing.errors import InputError

# Qwen's pre-tokenizer: like cl100k's, but every digit is its own piece, so a score 0-100 is 1-3 digit tokens.
SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
IMAGE_TAGS = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>")
# The official order: their ids are len(ranks) + position here (151643.. on the real vocabulary).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205)), *IMAGE_TAGS)
SYSTEM = "You are a helpful assistant."


def load_ranks(path):
    """qwen.tiktoken as {token bytes: rank}: one `base64(bytes) rank` a line, ranks 0..n-1 (the special tokens are
    numbered after the last rank, so a gap or a repeat would give two tokens one id)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read the vocabulary ({e.strerror})") from None
    ranks, seen = {}, set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            token, rank = base64.b64decode(token, validate=True), int(rank)
        except (ValueError, binascii.Error):
            raise InputError(f"{path}: line {n} is not `base64(token) rank`") from None
        if token in ranks or rank in seen or rank < 0:
            raise InputError(f"{path}: line {n} repeats a token or a rank, or its rank is negative")
        ranks[token] = rank
        seen.add(rank)
    if not ranks or max(seen) != len(ranks) - 1:
        raise InputError(f"{path}: the ranks are not 0..{len(ranks) - 1}")
    return ranks


class QWenTokenizer:
    """Qwen-VL's tokenizer, with the part of the HF tokenizer interface the project uses."""

    def __init__(self, ranks, image_span=256):
        self.special_ids = {t: len(ranks) + i for i, t in enumerate(SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding("Qwen", pat_str=SPLIT, mergeable_ranks=ranks, special_tokens=self.special_ids)
        self.ranks, self.image_span = ranks, image_span
        self.eod_id, self.im_start_id, self.im_end_id = (self.special_ids[t] for t in SPECIAL_TOKENS[:3])
        self.img_start_id, self.img_end_id, self.img_pad_id = (self.special_ids[t] for t in IMAGE_TAGS[-3:])
        self.pad_token, self.pad_token_id = "<|endoftext|>", self.eod_id
        self.eos_token, self.eos_token_id = "<|im_end|>", self.im_end_id
        self.padding_side = "left"

    @classmethod
    def from_pretrained(cls, folder, image_span=256):
        return cls(load_ranks(os.path.join(folder, "qwen.tiktoken")), image_span)

    def __len__(self):
        return self.encoding.n_vocab

    def encode(self, text, add_special_tokens=False, allowed_special="all"):
        """Token ids of text. allowed_special: "all" or the set of special strings read as special tokens; any
        other special string is plain text. add_special_tokens does nothing: Qwen adds none (as official)."""
        text = unicodedata.normalize("NFC", text)
        allowed = set(self.special_ids) if allowed_special == "all" else set(allowed_special)
        ids = []
        # The official tokenizer cuts <img>PATH</img> out of the token stream and puts the path's bytes there; since
        # tiktoken encodes the text between special tokens piece by piece, cutting the string first is the same.
        while "<img>" in allowed and "<img>" in text:
            start = text.index("<img>")
            end = text.find("</img>", start)
            if end < 0:
                raise InputError(f"an <img> is not closed by </img> in the text {text[start:start + 60]!r}")
            ids += self._encode_plain(text[:start], allowed) + self.image_ids(text[start + 5:end])
            text = text[end + 6:]
        return ids + self._encode_plain(text, allowed)

    def _encode_plain(self, text, allowed):
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=()) if text else []

    def image_ids(self, path):
        """The span of an image: <img>, one id per UTF-8 byte of the path (the id is the byte's value: the official
        code maps each byte to the single-byte token of that rank), <imgpad> up to image_span ids, </img>. The model
        puts the image's image_span visual features in place of the ids between the tags."""
        path_ids = list(path.encode("utf-8"))
        if len(path_ids) > self.image_span:
            raise InputError(f"image path {path[:60]!r}...: {len(path_ids)} bytes, more than the {self.image_span}"
                             f" ids of an image span")
        pads = [self.img_pad_id] * (self.image_span - len(path_ids))
        return [self.img_start_id] + path_ids + pads + [self.img_end_id]

    def decode(self, ids, skip_special_tokens=False):
        """The text of ids; an image span reads back as <img>PATH</img> (only PATH when skipping special tokens, as
        official). Ids past the vocabulary, such as a model's padding rows of the embedding, are skipped."""
        ids = [int(i) for i in (ids.tolist() if torch.is_tensor(ids) else ids)]
        ids = [i for i in ids if 0 <= i < len(self)]
        pieces, i = [], 0
        while i < len(ids):
            end = ids.index(self.img_end_id, i) if ids[i] == self.img_start_id and self.img_end_id in ids[i:] else -1
            inner = ids[i + 1:end]
            inner = inner[:inner.index(self.img_pad_id)] if self.img_pad_id in inner else inner
            if end > 0 and all(b < 256 for b in inner):
                tags = (b"", b"") if skip_special_tokens else (b"<img>", b"</img>")
                pieces += [tags[0], bytes(inner), tags[1]]
                i = end + 1
                continue
            if not (skip_special_tokens and ids[i] >= self.eod_id):
                pieces.append(self.encoding.decode_single_token_bytes(ids[i]))
            i += 1
        # Bytes joined first: a character may be split over tokens; a broken one reads as U+FFFD (official errors).
        return b"".join(pieces).decode("utf-8", errors="replace")

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(row, skip_special_tokens) for row in rows]

    def convert_tokens_to_ids(self, tokens):
        """Id of a special string or of a token's bytes (None if neither), or the list of ids of a list of them."""
        if isinstance(tokens, (str, bytes)):
            return self.special_ids[tokens] if tokens in self.special_ids else self.ranks.get(
                tokens.encode("utf-8") if isinstance(tokens, str) else tokens)
        return [self.convert_tokens_to_ids(t) for t in tokens]


def from_list_format(items):
    """The official query text: each image as `Picture k:<img>PATH</img>\\n` (k from 1, no space after the colon),
    each text as it is."""
    query, k = "", 0
    for item in items:
        if "image" in item:
            k += 1
            query += f"Picture {k}:<img>{item['image']}</img>\n"
        elif "text" in item:
            query += item["text"]
        else:
            raise ValueError(f"from_list_format: an item needs an 'image' or a 'text' key, not {sorted(item)}")
    return query


def chatml(query, system=SYSTEM):
    """make_context's raw text of a one-turn chat, ending where the assistant's answer begins."""
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"


def context_ids(tokenizer, query, system=SYSTEM):
    """make_context's ids: each role and content encoded on its own, with only the image tags special (so a chat
    token written inside a caption stays text), joined by the im_start/im_end/newline ids."""
    nl, tags = tokenizer.encode("\n"), set(IMAGE_TAGS)

    def turn(role, content):
        return ([tokenizer.im_start_id] + tokenizer.encode(role, allowed_special=tags) + nl
                + tokenizer.encode(content, allowed_special=tags) + [tokenizer.im_end_id])

    return turn("system", system) + nl + turn("user", query) + nl + [tokenizer.im_start_id] + tokenizer.encode(
        "assistant") + nl


class ImageTransform:
    """The official visual.image_transform split in two: resize (bicubic to S x S, aspect not kept) gives the uint8
    frames the frame cache stores; normalize gives the float32 pixels the vision tower reads."""

    def __init__(self, image_size=448, mean=(0.48145466, 0.4578275, 0.40821073),
                 std=(0.26862954, 0.26130258, 0.27577711)):
        self.image_size, self.image_mean, self.image_std = int(image_size), tuple(mean), tuple(std)

    def __repr__(self):
        # In the frame cache's keys: the stored uint8 frames depend only on the size (mean and std come later).
        return f"Resize{self.image_size}"

    __str__ = __repr__

    def size(self, height, width):
        return self.image_size, self.image_size

    def resize(self, frame):
        """A PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor as a (3, S, S) uint8 tensor."""
        s = self.image_size
        if torch.is_tensor(frame):
            if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[0] != 3:
                raise ValueError(f"resize: a tensor frame must be (3, H, W) uint8, not {tuple(frame.shape)} "
                                 f"{frame.dtype}")
            if frame.shape[1:] == (s, s):
                return frame
            frame = frame.permute(1, 2, 0).cpu().numpy()
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"resize: an array frame must be (H, W, 3) uint8, not {frame.shape} {frame.dtype}")
            # PIL's resize to the size an image already has is a plain copy, so skipping it changes nothing.
            if frame.shape[:2] == (s, s):
                return torch.from_numpy(np.array(frame)).permute(2, 0, 1).contiguous()
            frame = Image.fromarray(np.ascontiguousarray(frame))
        # torchvision's Resize((S, S), BICUBIC) on a PIL image is exactly this PIL call.
        image = frame.convert("RGB").resize((s, s), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()

    def fit(self, frames):
        """(H, W, 3) uint8 frames as one (N, 3, S, S) uint8 tensor: what the frame cache stores."""
        return torch.stack([self.resize(f) for f in frames])

    def normalize(self, pixels):
        """uint8 (..., 3, S, S) as float32, in torchvision's order of operations (ToTensor: to float, div 255;
        Normalize: sub mean, div std), so the values are bit for bit the official ones."""
        x = pixels.to(torch.float32).div(255)
        mean = torch.tensor(self.image_mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32, device=x.device).view(3, 1, 1)
        return x.sub_(mean).div_(std)


class QWenVLProcessor:
    """The tokenizer and the image transform behind the calls an HF processor answers (apply_chat_template and
    __call__), so the prompt code treats Qwen-VL-Chat as it treats the Qwen2-VL family."""

    def __init__(self, tokenizer, image_transform):
        self.tokenizer, self.image_processor = tokenizer, image_transform

    @classmethod
    def from_pretrained(cls, folder):
        path = os.path.join(folder, "config.json")
        try:
            with open(path) as f:
                config = json.load(f)
        except OSError as e:
            raise InputError(f"{path}: cannot read the model's config ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        visual = config.get("visual") if isinstance(config, dict) else None
        if not isinstance(visual, dict):
            raise InputError(f"{path}: no 'visual' settings: not a Qwen-VL (v1) config")
        if "image_size" not in visual:
            raise InputError(f"{path}: 'visual' lacks 'image_size'")
        tokenizer = QWenTokenizer.from_pretrained(folder, image_span=int(visual.get("n_queries", 256)))
        # The model finds the image spans by this id: a vocabulary of another size would place them nowhere.
        if visual.get("image_start_id", tokenizer.img_start_id) != tokenizer.img_start_id:
            raise InputError(f"{path}: visual.image_start_id {visual['image_start_id']} is not the tokenizer's <img> "
                             f"id {tokenizer.img_start_id} (is qwen.tiktoken the model's?)")
        return cls(tokenizer, ImageTransform(visual["image_size"]))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        """HF-style messages as chatml; an image item is written <img>PATH</img> (PATH: its "image" key, or empty),
        so the caller's "Picture k:" and "\\n" around it make the text from_list_format gives."""
        messages = list(messages)
        system = SYSTEM
        if messages and messages[0]["role"] == "system":
            system = self._content(messages.pop(0)["content"])
        text = f"<|im_start|>system\n{system}<|im_end|>\n"
        text += "".join(f"<|im_start|>{m['role']}\n{self._content(m['content'])}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return self.tokenizer.encode(text) if tokenize else text

    @staticmethod
    def _content(content):
        if isinstance(content, str):
            return content
        parts = []
        for item in content:
            if item["type"] == "text":
                parts.append(item["text"])
            elif item["type"] == "image":
                parts.append(f"<img>{item.get('image', '')}</img>")
            else:
                raise ValueError(f"apply_chat_template: Qwen-VL-Chat takes text and image items, not {item['type']!r}")
        return "".join(parts)

    def __call__(self, text, images=None, padding=True, padding_side="left", return_tensors="pt", **ignored):
        """Token ids of the texts, padded to the longest, and every image of every text in order as one
        (n_images, 3, S, S) uint8 tensor: the vision tower normalizes later (image_processor.normalize). The keyword
        arguments an HF processor also takes (do_rescale, do_normalize, temporal_patch_size) mean nothing here."""
        texts = [text] if isinstance(text, str) else list(text)
        images = [[] for _ in texts] if images is None else list(images)
        if len(images) != len(texts) or return_tensors != "pt" or padding_side not in ("left", "right"):
            raise ValueError(f"QWenVLProcessor: {len(texts)} texts need as many image lists (got {len(images)}), "
                             f"return_tensors 'pt' and padding_side 'left' or 'right'")
        rows = [self.tokenizer.encode(t) for t in texts]
        for k, (row, frames) in enumerate(zip(rows, images)):
            if row.count(self.tokenizer.img_start_id) != len(frames):
                raise ValueError(f"QWenVLProcessor: text {k} has {row.count(self.tokenizer.img_start_id)} <img> "
                                 f"spans but {len(frames)} images")
        width = max(len(row) for row in rows)
        if not padding and any(len(row) != width for row in rows):
            raise ValueError("QWenVLProcessor: texts of different lengths need padding=True")
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            at = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[k, at], attention_mask[k, at] = torch.tensor(row, dtype=torch.long), 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        frames = [frame for row in images for frame in row]
        if frames:
            out["pixel_values"] = torch.stack([self.image_processor.resize(f) for f in frames])
        return out
