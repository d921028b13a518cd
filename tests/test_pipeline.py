"""The input pipeline of the real run: frames picked exactly with the decoder's shortcuts, the pixel budget (the
processor's own arithmetic), the frame cache at that budget, batches made off the training thread in the plan's
order, uint8 patches normalized where the model is, and a decode that gives what model.generate gives."""

import os

import av
import numpy as np
import pytest
import torch

import data
import model
import prompt
from frames import Batches, DEFAULT_MAX_PIXELS, FrameCache, frame_indices, loader, pixels, read_frames, to_model
from scaffold.synthetic import synthetic_frames
from conftest import greedy_equals_generate

CAPTIONS = ["a man walks in a park", "a dog runs on the beach", "two people dance", "a child jumps", "a cat sits"]


def write(path, codec, frames, options=None, **attrs):
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], "yuv420p"
        stream.options = options or {}
        for key, value in attrs.items():
            setattr(stream.codec_context, key, value)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving(n, height=64, width=96, seed=0):
    """Frames that all differ: a fade with the position bar, noise, and a horizontal pan."""
    rng = np.random.default_rng(seed)
    base = synthetic_frames(0.1, 0.9, np.ones(3), n, width)[:, :height].astype(float)
    noise = rng.integers(0, 255, (1, height, width, 3))
    return np.stack([np.roll(0.7 * f + 0.3 * noise[0], 3 * i, axis=1) for i, f in enumerate(base)]).astype(np.uint8)


CODECS = {  # B-frames and several keyframes in each, where the codec has them
    "h264": ("libx264", "mp4", dict(options={"x264-params": "keyint=12:bframes=3:b-pyramid=normal", "crf": "20"})),
    "hevc": ("libx265", "mp4", dict(options={"x265-params": "keyint=12:bframes=4:log-level=none"})),
    "mpeg4": ("mpeg4", "mp4", dict(max_b_frames=2, gop_size=10)),
    "vp9": ("libvpx-vp9", "webm", dict(options={"crf": "30", "b": "0"})),
}


@pytest.mark.parametrize("codec", list(CODECS))
def test_frames_are_exactly_those_of_a_full_decode(codec, tmp_path):
    """read_frames skips the decoding of frames nothing references; what it keeps equals a full decode's frames."""
    name, ext, settings = CODECS[codec]
    path = write(str(tmp_path / f"clip.{ext}"), name, moving(61), settings.pop("options", None), **settings)
    with av.open(path) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(every) == 61 and not np.array_equal(every[0], every[1])
    for n in (1, 2, 3, 5, 8, 61, 70):
        frames = read_frames(path, n)
        assert frames.shape[0] == n
        for frame, i in zip(frames, frame_indices(61, n)):
            assert np.array_equal(frame, every[i]), (codec, n, i)


@pytest.fixture(scope="module")
def clip720(tmp_path_factory):
    """A 720p H.264 clip of textured motion, as bench.py writes them (1 second here)."""
    from scaffold import synthetic

    return synthetic.write_clips(str(tmp_path_factory.mktemp("clips")), n=1, seconds=1)[0]


@pytest.mark.parametrize("family", ["tiny", "tiny3"])
def test_pixel_budget_is_the_processors(family, clip720, request):
    """At the default budget a 720p frame keeps <= 448 x 448 pixels: the processor makes the same patches from the
    frame fitted by Budget.fit as from the full frame, and prompt.pixels turns encode's uint8 patches into exactly
    the floats the processor computes itself."""
    processor = model.load_processor(request.getfixturevalue(family), DEFAULT_MAX_PIXELS)
    budget = model.budget_of(processor)
    frames = read_frames(clip720, 3)
    assert frames.shape == (3, 720, 1280, 3)
    fitted = budget.fit(frames)
    height, width = fitted.shape[2:]
    assert fitted.shape[:2] == (3, 3) and height * width <= 448 * 448
    assert height % budget.factor == 0 and width % budget.factor == 0
    text = [processor.apply_chat_template(prompt.messages(CAPTIONS, 3), tokenize=False, add_generation_prompt=True)]
    full = processor(text=text, images=[list(frames)], return_tensors="pt")
    small = processor(text=text, images=[list(fitted)], return_tensors="pt")
    assert torch.equal(full["pixel_values"], small["pixel_values"]) and torch.equal(full["input_ids"], small["input_ids"])
    assert full["image_grid_thw"].prod(1).sum() // 4 == 3 * model.visual_tokens(processor, 720, 1280)
    if family == "tiny":
        assert model.visual_tokens(processor, 720, 1280) == (336 // 28) * (588 // 28) == 252  # <= 256, the paper's
    batch, _ = prompt.encode(processor, [fitted], [CAPTIONS])
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].numel() * 8 == full["pixel_values"].nbytes
    assert torch.equal(batch["input_ids"], full["input_ids"])
    assert torch.equal(pixels(batch["pixel_values"], processor.image_processor), full["pixel_values"])


def test_cache_keeps_frames_at_the_budget(tiny, clip720, tmp_path):
    processor = model.load_processor(tiny, DEFAULT_MAX_PIXELS)
    cache = FrameCache(str(tmp_path), 3, model.budget_of(processor))
    video = data.Video("clip", clip720, ["a caption"] * 5, 0.5)
    assert cache.fill([video]) == [video]
    stored = cache.get(video)
    exact = model.budget_of(processor).fit(read_frames(clip720, 3))
    assert stored.shape == exact.shape == (3, 3, 336, 588) and stored.dtype == torch.uint8
    assert (stored.int() - exact.int()).abs().float().mean() < 3  # JPEG at quality 95
    assert os.path.getsize(cache.path(video)) < 1_000_000
    # another budget is another entry; the first stays
    other = FrameCache(str(tmp_path), 3, model.budget_of(model.load_processor(tiny, 100_000)))
    assert other.path(video) != cache.path(video) and other.get(video)[0, 0].numel() <= 100_000
    assert len(os.listdir(tmp_path)) == 2


def test_loader_keeps_the_plan_and_the_global_rng(tiny, synthetic, cache):
    processor = model.load_processor(tiny)
    videos = data.load_split(synthetic, "val")[:10]
    frames = FrameCache(cache, 3, model.budget_of(processor))
    frames.fill(videos)
    plan = [[3, 1, 4], [1, 5], [9, 2, 6], [5]]
    dataset = Batches(videos, frames, processor)
    state = torch.get_rng_state()
    made = list(loader(dataset, plan, workers=2))
    assert torch.equal(torch.get_rng_state(), state)  # LoRA dropout draws from it: resume must see the same
    assert len(made) == len(plan)
    for (batch, labels), indices in zip(made, plan):
        expected, expected_labels = dataset[indices]
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
        assert torch.equal(labels, expected_labels)


@pytest.mark.parametrize("family", ["tiny", "tiny3"])
def test_greedy_decoding_equals_generate(family, synthetic, cache, request):
    """One prefill and at most three cached steps give model.generate's greedy tokens, for the base model and under
    peft's wrapper, on a left-padded batch (captions of different lengths)."""
    folder = request.getfixturevalue(family)
    processor = model.load_processor(folder)
    videos = data.load_split(synthetic, "val")[:6]
    frames = FrameCache(cache, 3, model.budget_of(processor))
    frames.fill(videos)
    batch, _ = Batches(videos, frames, processor, labelled=False)[list(range(6))]
    assert (batch["attention_mask"] == 0).any()  # padding is exercised
    batch = to_model(batch, processor, "cpu")
    end, pad = processor.tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN), processor.tokenizer.pad_token_id
    torch.manual_seed(0)
    base = model.load_model(folder)
    lora = model.add_lora(model.load_model(folder), 8, 16, dropout=0.0)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # an adapter that changes the answers
    answers = []
    for m in (base, lora):
        answers.append(greedy_equals_generate(m, batch, end, pad).tolist())
    assert answers[0] != answers[1]  # the adapter is used
