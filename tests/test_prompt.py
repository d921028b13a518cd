"""prompt.py: the paper's prompt word for word, the target, the label mask and the post-processing."""

import pytest
import torch

import model
import prompt

CAPTIONS = ["a man walks in a park", "a dog runs on the beach", "two people dance", "a child jumps", "a cat sits"]


def test_prompt_text_is_listing_1_in_the_chat_layout(tiny):
    processor = model.load_processor(tiny)
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
    processor = model.load_processor(tiny)
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
    tok = model.load_processor(tiny).tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for label, digits in [(7, "7"), (73, "73"), (100, "100")]:
        ids = prompt.score_tokens(tok, label)
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

    processor = model.load_processor(tiny)
    videos = data.load_split(synthetic, "train")[:3]
    frames = [FrameCache(cache).get(v) for v in videos]
    with_targets, labels = prompt.encode(processor, frames, [v.captions for v in videos], [v.label for v in videos])
    without, none = prompt.encode(processor, frames, [v.captions for v in videos])
    assert none is None
    tok = processor.tokenizer
    for i, v in enumerate(videos):
        supervised = with_targets["input_ids"][i][labels[i] != prompt.IGNORE].tolist()
        assert supervised == prompt.score_tokens(tok, v.label)
        # the prompt part is token for token what generation sees
        row = with_targets["input_ids"][i][with_targets["attention_mask"][i].bool()].tolist()
        gen = without["input_ids"][i][without["attention_mask"][i].bool()].tolist()
        assert row[: len(gen)] == gen and len(row) == len(gen) + len(supervised)
    # every image token is a visual position; the answer positions are text
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(with_targets["mm_token_type_ids"] == 1, with_targets["input_ids"] == image_id)
    assert torch.equal(with_targets["pixel_values"], without["pixel_values"])


# Answer shapes and the score a careful reader takes from each (prompt.parse_score's rule); None: invalid.
READINGS = [
    ("73", 73),  # the answer asked for
    (" 100", 100),
    ("0", 0),
    ("The score is 42.", 42),
    ("PREDICTED SCORE: 75", 75),  # the prompt's cue echoed
    ("72.9", 73),  # a decimal rounds...
    ("72.5", 73),  # ...half up
    ("72.4", 72),
    ("0.85", 1),  # read as written, on the 0-100 scale asked for: not rescaled
    ("99.5", 100),
    ("85%", 85),  # a percentage is its number
    ("I think 85.5 out of 100", 86),  # a scale is not a reading: "out of 100"...
    ("75/100", 75),  # ..."/100"...
    ("On a scale from 0 to 100, I rate it 75", 75),  # ..."0 to 100" (the paper's regex would read 0)...
    ("(Answer only with a number between 0 and 100). PREDICTED SCORE: 64", 64),  # ...the prompt's own words...
    ("On a scale of 100, this video scores 70.", 70),
    ("On a 0-100 scale: 55", 55),
    ("On a 100-point scale: 66", 66),
    ("On a scale of 1 to 10, I would say 8.", 8),  # ...another scale's too, and its reading stays as written
    ("8/10", 8),
    ("0 to 100", None),  # only a scale: no reading
    ("70-80", 75),  # a range: its midpoint
    ("Memorability: 70\u201380%", 75),  # with an en dash, as a percentage
    ("between 70 and 75", 73),  # 72.5, half up
    ("from 60 to 70", 65),
    ("#1: 80", 80),  # a reference is not a reading: "#1"...
    ("1. The video is vivid.\n2. Score: 77", 77),  # ...a list's markers...
    ("In Picture 2 a dog runs; I predict 68.", 68),  # ...the prompt's pictures...
    ("The 3rd frame is the most striking: 61", 61),  # ...an ordinal, or any number glued to a word
    ("An mp4 in 4K: 70", 70),
    ("75. The video is memorable.", 75),  # two digits opening a line are a score, not a list's marker
    ("80 or 90", 80),  # several numbers: the first
    ("The video shows 2 dogs. PREDICTED SCORE: 75", 2),  # the first, even where a later one was meant
    ("-5", None),  # negative: invalid
    ("score: \u22125", None),  # with a minus sign
    ("101", None),  # over 100: invalid
    ("6666", None),  # an answer that never stopped, read whole: not 66
    ("1000", None),  # not 100
    ("", None),  # no number: invalid
    ("high", None),
    ("seventy-five", None),  # a number in words is no number
    ("I cannot tell how memorable this video is.", None),
    ("The video shows a man walking his dog in a park, an everyday scene, and such scenes are moderately memorable.\n"
     "Based on the frames and the captions, I would predict a memorability score of 72 out of 100.", 72),  # a paragraph
    ("85\u5206", 85),  # another language's word after it
]


@pytest.mark.parametrize("answer,score", READINGS)
def test_parse_score(answer, score):
    """The paper extracts "a number between 0 and 100" from the answer; parse_score's docstring says how: the first
    number that is not a scale or a reference, a range's midpoint, rounded half up, in 0-100 or invalid."""
    assert prompt.parse_score(answer) == score


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
    names = re.findall(r"`([\w/]+)\.py:([\w.]+)`", "\n".join(rows))
    assert len(rows) >= 19 and len(names) >= 30
    for module, dotted in names:
        target = importlib.import_module(module.replace("/", "."))
        for part in dotted.split("."):
            target = getattr(target, part)
        assert callable(target) or isinstance(target, property), f"{module}.py:{dotted}"
