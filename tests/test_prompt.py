"""prompt.py: the paper's prompt word for word, the target, the label mask and the post-processing."""

import torch

import model as qwen
import prompt

CAPTIONS = ["a man walks in a park", "a dog runs on the beach", "two people dance", "a child jumps", "a cat sits"]


def test_prompt_text_is_listing_1_in_the_chat_layout(tiny):
    processor = qwen.load_processor(tiny)
    text = processor.apply_chat_template(prompt.messages(CAPTIONS, 3), tokenize=False, add_generation_prompt=True)
    frame = "<|vision_start|><|image_pad|><|vision_end|>"
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "You are an expert in multimedia perception and memorability. On a scale from 0 to 100, predict how "
        "memorable the following video is based on the following frames and textual captions that describe them.\n"
        f"Picture 1:{frame}\nPicture 2:{frame}\nPicture 3:{frame}\n"
        "a man walks in a park\na dog runs on the beach\ntwo people dance\na child jumps\na cat sits\n"
        "(Answer only with a number between 0 and 100). PREDICTED SCORE:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected


def test_video_prompt_is_listing_1_around_one_video(tiny):
    """--input video: the paper's text word for word around one video input, with no label."""
    processor = qwen.load_processor(tiny)
    text = processor.apply_chat_template(prompt.messages(CAPTIONS, 8, video=True), tokenize=False,
                                         add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + prompt.INSTRUCTION + "\n"
        "<|vision_start|><|video_pad|><|vision_end|>\n" + "\n".join(CAPTIONS) + "\n" + prompt.ANSWER_CUE
        + "<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.video_metadata([0.0, 0.5, 1.0], 3) == dict(total_num_frames=3, fps=2.0, frames_indices=[0, 1, 2])
    # no time known, or none between the frames (a one-frame video): the processors' own assumption
    assert prompt.video_metadata(None, 3)["fps"] == prompt.video_metadata([0.0, 0.0, 0.0], 3)["fps"] == 24


def test_frames_follow_the_count():
    content = prompt.messages(CAPTIONS, 8)[0]["content"]
    assert [c["type"] for c in content] == ["text"] + ["text", "image", "text"] * 8 + ["text"]
    assert [c["text"] for c in content[1::3][:8]] == [f"Picture {k}:" for k in range(1, 9)]  # as Qwen-VL-Chat numbers images


def test_target_is_digits_then_end_of_turn(tiny):
    tok = qwen.load_processor(tiny).tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for label, digits in [(7, "7"), (73, "73"), (100, "100")]:
        ids = prompt.target_ids(tok, label)
        assert ids[-1] == end
        assert tok.convert_ids_to_tokens(ids[:-1]) == list(digits)  # one token per digit, as in Qwen


def test_label_mask_supervises_exactly_the_target():
    prompts, targets = [[5, 6, 7, 8], [9, 10]], [[1, 2, 99], [3, 99]]
    input_ids, attention_mask, labels = prompt.join(prompts, targets, pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7, 8, 1, 2, 99], [0, 0, 0, 9, 10, 3, 99]]
    assert attention_mask.tolist() == [[1] * 7, [0, 0, 0, 1, 1, 1, 1]]
    I = prompt.IGNORE
    assert labels.tolist() == [[I, I, I, I, 1, 2, 99], [I, I, I, I, I, 3, 99]]


def test_encode_appends_targets_after_the_processed_prompt(tiny, synthetic, cache):
    import data
    from frames import FrameCache

    processor = qwen.load_processor(tiny)
    videos = data.load_split(synthetic, "train")[:3]
    frames = [FrameCache(cache).get(v) for v in videos]
    with_targets, labels = prompt.encode(processor, frames, [v.captions for v in videos], [v.label for v in videos])
    without, none = prompt.encode(processor, frames, [v.captions for v in videos])
    assert none is None
    tok = processor.tokenizer
    for i, v in enumerate(videos):
        supervised = with_targets["input_ids"][i][labels[i] != prompt.IGNORE].tolist()
        assert supervised == prompt.target_ids(tok, v.label)
        # the prompt part is token for token what generation sees
        row = with_targets["input_ids"][i][with_targets["attention_mask"][i].bool()].tolist()
        gen = without["input_ids"][i][without["attention_mask"][i].bool()].tolist()
        assert row[: len(gen)] == gen and len(row) == len(gen) + len(supervised)
    # every image token is a visual position; the answer positions are text
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(with_targets["mm_token_type_ids"] == 1, with_targets["input_ids"] == image_id)
    assert torch.equal(with_targets["pixel_values"], without["pixel_values"])


def test_parse_score():
    assert prompt.parse_score("73") == 73
    assert prompt.parse_score(" 100") == 100
    assert prompt.parse_score("0") == 0
    assert prompt.parse_score("I think 85.5 out of 100") == 85
    assert prompt.parse_score("The score is 42.") == 42
    for invalid in ["", "high", "6666", "1000", "101", "-5"]:
        assert prompt.parse_score(invalid) is None, invalid


def test_the_paper_map_names_functions_that_exist():
    """README's "The paper in the code": every `file.py:name` it gives is a function (or property) of that file."""
    import importlib
    import os
    import re

    from conftest import ROOT

    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## The paper in the code")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| the paper")]
    names = re.findall(r"`(\w+)\.py:([\w.]+)`", "\n".join(rows))
    assert len(rows) >= 19 and len(names) >= 30
    for module, dotted in names:
        target = importlib.import_module(module)
        for part in dotted.split("."):
            target = getattr(target, part)
        assert callable(target) or isinstance(target, property), f"{module}.py:{dotted}"
