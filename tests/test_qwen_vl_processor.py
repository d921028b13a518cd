"""qwen_vl_processor.py gives what the official Qwen-VL-Chat code gave (qwen_vl/reference, see its README): the
tokenizer's ids on the truncated vocabulary of the tiny checkpoints and on the real one (special ids, digits one by
one, chat tokens as text under make_context's allowed_special, image paths as byte ids padded to a 258-id span,
make_context's ids and raw text, decode back to the raw text), the 448x448 pixels bit for bit, and the processor's
chat text and left-padded batch; bad checkpoint files are one-line InputErrors naming the file."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from plumbing.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE = os.path.join(ROOT, "qwen_vl", "reference")  # the official code's outputs, carried in the repository

from qwen_vl.processing import (IMAGE_TAGS, ImageTransform, QWenTokenizer, QWenVLProcessor, chatml,  # noqa: E402
                               context_ids, from_list_format)

REFERENCE = os.path.join(ORACLE, "reference")
# folder of qwen.tiktoken -> the official tokenizer's outputs on it (both files have the same keys)
VOCABULARIES = {"tiny-chat": ("reference/reference.json", "tokenizer"),
                "tokenizer": ("tokenizer/tokenizer_reference.json", None)}


def load_json(name):
    with open(os.path.join(ORACLE, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module", params=sorted(VOCABULARIES))
def vocab(request):
    """(our tokenizer, the official tokenizer's outputs) on one vocabulary."""
    name, key = VOCABULARIES[request.param]
    if not os.path.isfile(os.path.join(ORACLE, request.param, "qwen.tiktoken")):  # the real vocabulary: Qwen's, not ours
        pytest.skip(f"{os.path.join(ORACLE, request.param, 'qwen.tiktoken')}: the real vocabulary is not redistributed "
                    "here; copy Qwen-VL-Chat's own there to check its ids")
    ref = load_json(name)
    return QWenTokenizer.from_pretrained(os.path.join(ORACLE, request.param)), ref[key] if key else ref


@pytest.fixture(scope="module")
def processor():
    return QWenVLProcessor.from_pretrained(os.path.join(ORACLE, "tiny-chat"))


def test_special_ids_and_length(vocab):
    tok, ref = vocab
    assert len(tok) == ref["len_tokenizer"] == ref["len_mergeable_ranks"] + 217
    assert {t: tok.special_ids[t] for t in ref["special_ids"]} == ref["special_ids"]
    attributes = ref["attributes"]
    for name in ("img_start_id", "img_end_id", "img_pad_id", "im_start_id", "im_end_id", "eod_id", "pad_token_id"):
        assert getattr(tok, name) == attributes[name], name
    assert tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == attributes["im_end_id"]
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<img>"]) == [attributes["eod_id"], attributes["img_start_id"]]
    assert tok.image_span == 256


def test_digits_and_strings(vocab):
    tok, ref = vocab
    for number, ids in ref["integers_0_100"].items():
        assert tok.encode(number) == ids, number
    for text, ids in {**ref["strings"], **ref["captions"]}.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    # make_context's allowed_special: the chat tokens written in a text stay text
    for text, ids in ref["strings_with_allowed_special_IMAGE_ST_only"].items():
        assert tok.encode(text, allowed_special=set(IMAGE_TAGS)) == ids, text
    assert tok.encode(ref["answer"]["text"]) == ref["answer"]["ids"]
    assert tok.encode("cafe\u0301") == tok.encode("caf\u00e9")  # NFC first, as official


@pytest.mark.parametrize("prompt", ["prompt", "prompt2_batch"])
def test_context_is_make_context(vocab, prompt):
    tok, ref = vocab
    p = ref[prompt]
    query = from_list_format(p["list_format"])
    assert query == p["query"] and chatml(query) == p["raw_text"]
    ids = context_ids(tok, query)
    assert ids == p["context_ids"] and len(ids) == p["context_len"]
    assert tok.encode(p["raw_text"]) == ids  # the raw text re-tokenized (what a batch does) gives the same ids
    assert tok.decode(ids) == p["raw_text"]
    for image in p["images"]:
        assert ids[image["img_pos"]] == tok.img_start_id and ids[image["img_end_pos"]] == tok.img_end_id
    if prompt == "prompt":
        assert ids + tok.encode(ref["answer"]["text"]) + [tok.im_end_id] == ref["teacher_forced_input_ids"]


def test_image_path_is_a_span_of_byte_ids(vocab):
    tok, ref = vocab
    for path, frame in ref["image_path_encoding"]["frames"].items():
        span = tok.encode(f"<img>{path}</img>")
        assert span == frame["span_ids"] == tok.image_ids(path) and len(span) == frame["span_len"] == 258
        assert span[1:1 + frame["n_path_ids"]] == frame["path_byte_ids"]
        assert tok.decode(span) == f"<img>{path}</img>"
        assert tok.decode(span, skip_special_tokens=True) == path  # as official: the tags go, the path stays
    with pytest.raises(InputError, match="more than the 256"):
        tok.encode("<img>" + "x" * 257 + "</img>")
    with pytest.raises(InputError, match="not closed"):
        tok.encode("Picture 1:<img>frame-1.png")


def test_decode_skips_ids_past_the_vocabulary(vocab):
    """A model's embedding has padding rows past the tokenizer (tiny: 4352 > 4313): greedy decoding can pick one."""
    tok, ref = vocab
    ids = ref["answer"]["ids"] + [tok.im_end_id]
    assert tok.decode(ids + [len(tok), len(tok) + 30]) == "72<|im_end|>"
    assert tok.batch_decode(torch.tensor([ids + [len(tok)]])) == ["72"]


def test_resize_is_the_official_448_image():
    transform = ImageTransform()
    for n in (1, 2, 3):
        frame = Image.open(os.path.join(REFERENCE, f"frame-{n}.png"))
        official = torch.from_numpy(np.array(Image.open(os.path.join(REFERENCE, f"frame-{n}-448.png")).convert("RGB")))
        ours = transform.resize(frame)
        assert ours.dtype == torch.uint8 and torch.equal(ours, official.permute(2, 0, 1))
        # the frame cache's arrays and tensors give the same pixels
        array = np.array(frame.convert("RGB"))
        assert torch.equal(transform.fit([array])[0], ours)
        assert torch.equal(transform.resize(torch.from_numpy(array).permute(2, 0, 1)), ours)
    assert str(transform) == repr(transform) == "Resize448" and transform.size(180, 320) == (448, 448)


def test_normalized_pixels_are_bit_exact():
    transform = ImageTransform()
    frames = [transform.resize(Image.open(os.path.join(REFERENCE, f"frame-{n}.png")).convert("RGB")) for n in (1, 2, 3)]
    pixels = transform.normalize(torch.stack(frames))
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 3, 448, 448)
    expected = load_json("reference/reference.json")["results"]["pixel_values_checksums"]["sha256_float32_bytes"]
    assert hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest() == expected


def messages(list_format):
    """The prompt code's messages for a list_format: it writes "Picture k:" and "\\n" around each image itself."""
    content, k = [], 0
    for item in list_format:
        if "image" in item:
            k += 1
            content += [{"type": "text", "text": f"Picture {k}:"}, {"type": "image", "image": item["image"]},
                        {"type": "text", "text": "\n"}]
        else:
            content.append({"type": "text", "text": item["text"]})
    return [{"role": "user", "content": content}]


def test_processor_chat_text_and_batch(processor):
    from safetensors.torch import load_file

    ref = load_json("reference/reference.json")
    prompts = [ref["tokenizer"]["prompt"], ref["tokenizer"]["prompt2_batch"]]
    texts = [processor.apply_chat_template(messages(p["list_format"]), tokenize=False, add_generation_prompt=True)
             for p in prompts]
    assert texts == [p["raw_text"] for p in prompts]
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert processor.apply_chat_template(system) == chatml("Hi", system="Be brief.")

    frames = [[np.asarray(Image.open(os.path.join(REFERENCE, i["image"])).convert("RGB")) for i in p["images"]]
              for p in prompts]
    batch = processor(text=texts, images=frames, padding=True, padding_side="left", return_tensors="pt",
                      do_rescale=False, temporal_patch_size=1)
    tensors = load_file(os.path.join(REFERENCE, "reference.safetensors"))
    assert torch.equal(batch["input_ids"], tensors["batch_input_ids"])
    assert torch.equal(batch["attention_mask"], tensors["batch_attention_mask"])
    pixels = batch["pixel_values"]
    assert pixels.shape == (6, 3, 448, 448) and pixels.dtype == torch.uint8
    assert torch.equal(pixels[3], processor.image_processor.resize(frames[1][0]))  # frame-3, already 448x448
    with pytest.raises(ValueError, match="3 <img> spans but 2 images"):
        processor(text=texts[:1], images=[frames[0][:2]])


def test_bad_checkpoint_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="qwen.tiktoken"):
        QWenTokenizer.from_pretrained(str(tmp_path))
    (tmp_path / "qwen.tiktoken").write_text("IQ== 0\nnot-base64 1\n")
    with pytest.raises(InputError, match=r"qwen.tiktoken: line 2"):
        QWenTokenizer.from_pretrained(str(tmp_path))
    with open(os.path.join(ORACLE, "tiny-chat", "qwen.tiktoken")) as f:
        (tmp_path / "qwen.tiktoken").write_text(f.read())
    with open(os.path.join(ORACLE, "tiny-chat", "config.json")) as f:
        config = json.load(f)
    del config["visual"]["image_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"config.json: 'visual' lacks 'image_size'"):
        QWenVLProcessor.from_pretrained(str(tmp_path))
    del config["visual"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"config.json: no 'visual'"):
        QWenVLProcessor.from_pretrained(str(tmp_path))
