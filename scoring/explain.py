"""
Why this score (predict.py --explain): each frame's and each caption's share of a video's expected score, by taking it
away.

    python predict.py --adapter runs/final --split test --explain                  # RUN/explain-test.csv
    python predict.py --videos my-clips --adapter runs/final --explain --report my-clips.html

An input is taken away by putting the same input of another video in its place: frame k of video j for frame k,
caption k of video j for caption k. K other videos stand in, one at a time (--stand-ins, default STAND_INS), so a
video with N frames and C captions is scored 1 + K x (N + C) times: with all its inputs, then with each input replaced
by each stand-in's. An input's share is what the score loses without it, score(all) - the mean over the stand-ins of
score(with the stand-in's), in mem_score's 0-1 units: positive, the input raised the score; negative, it lowered it.
Its std is the standard deviation of score(all) - score(with the stand-in's) over the K stand-ins (population form):
how much the share depends on which video stands in. The scores are the exact expected ones (scoring/decode.py), so a share
is a difference of continuous numbers, not of integers that tie.

Which videos stand in: the next K in the order scored, wrapping past the last (video i's are i+1, ..., i+K): the same
command gives the same shares. With fewer than K other videos, all the others stand in; a video scored alone has none,
and predict.py refuses --explain for it in one line.

How an input is taken away, and why so:
  a frame    replaced by the stand-in's frame at the same position, resized to this video's frame size where the two
             differ (bicubic with antialiasing, as the frame cache fits frames): the same visual tokens at the same
             places and positions, so the only change is what that frame shows, and what it shows instead is a frame
             of the kind the model read, at that point of a clip. The earlier stand-in, the video's mean colour, was a
             frame the model never saw, and it left the score where it was whenever that colour happened to be what
             the model reads. Measured on the trained tiny model of the tests (the demo's fade rule: the score lives in
             the last frame's brightness), its 45 held-out videos: the last frame's share under 0.005 in 11 videos
             with the mean colour, 3 with four stand-ins; the last frame's share the largest of the three frames' in
             39 of 45 with the mean colour, 44 with four stand-ins; the largest of all eight shares in 32 against 42
  a caption  replaced by the stand-in's caption at the same position; a stand-in with fewer captions gives its captions
             in turn (caption k mod its count), so every stand-in counts for every caption. The prompt keeps its form,
             C lines of the kind the model learned from, and loses only what this caption says of this video. Dropping
             the line, or leaving it empty ("\n\n", one token in Qwen's vocabularies), changes the form the model was
             trained on, and the fine-tuned tiny model reacts to that alone: with one stand-in, captions that carry
             nothing got mean |share| 0.052 dropped and 0.045 empty against 0.003 replaced (the last frame's: 0.108)

How many stand-ins: one is one draw, and a share then says as much of the stand-in as of the input (on the fade rule,
the last frame's share is its brightness less the stand-in's). Over the same 45 videos, the last frame's share was the
largest of the frames' in 37, 41, 44 and 43 with 1, 2, 4 and 8 stand-ins, the largest of all eight in 36, 41, 42 and
42: four is where it stops gaining, at 33 prompts a video (1 + 4 x 8), about 31 times plain expected decoding.

Pure functions and a Dataset, and `attribute`, which runs the model over them for predict.py.
"""

import math

import torch

import prompt
from frames import Batches, chunks, loader
from scoring import decode

STAND_INS = 4  # videos that stand in, one at a time, for an input taken away (--stand-ins)


def stand_ins(n_videos, i, k=STAND_INS):
    """The indices of the videos that stand in for video i's inputs: the next k in order, wrapping past the last, never
    video i itself (so at most n_videos - 1; none for a video scored alone)."""
    return [(i + j) % n_videos for j in range(1, min(k, n_videos - 1) + 1)]


def variants(video, n_frames, n_stand_ins):
    """How many times a video is scored: with all its inputs, then each input replaced by each stand-in's in turn."""
    return 1 + n_stand_ins * (n_frames + len(video.captions))


def rows(videos, n_frames, k=STAND_INS):
    """
    Every prompt to score, a video's one after the other, as (video, input, stand-in): (i, 0, None), all of video
    i's inputs; then for each input (1..N its frames, N+1..N+C its captions) that input replaced by each stand-in's,
    (i, input, j).
    """
    out = []
    for i, v in enumerate(videos):
        others = stand_ins(len(videos), i, k)
        out += [(i, 0, None)] + [(i, x, j) for x in range(1, n_frames + len(v.captions) + 1) for j in others]
    return out


def replace_input(frames, captions, taken, stand_in=None):
    """
    A video's inputs with input `taken` replaced: 0, none; 1..N, frame `taken` (from 1) by the stand-in's frame at the
    same position, resized to this video's frame size; N+1..N+C, caption `taken - N` (from 1) by the stand-in's at the
    same position, or where it has fewer, its caption at that position modulo its count. frames: (N, 3, H, W) uint8, as
    the cache gives them; stand_in: the stand-in video's (frames, captions).
    """
    n = len(frames)
    if taken == 0:
        return frames, captions
    if taken <= n:
        import torchvision.transforms.v2.functional as tvF

        instead = stand_in[0][taken - 1]
        if instead.shape != frames[taken - 1].shape:
            instead = tvF.resize(instead, list(frames.shape[-2:]), interpolation=tvF.InterpolationMode.BICUBIC,
                                 antialias=True)
        frames = frames.clone()
        frames[taken - 1] = instead
        return frames, captions
    k, theirs = taken - n - 1, stand_in[1]
    return frames, captions[:k] + [theirs[k % len(theirs)]] + captions[k + 1:]


def plan(videos, n_frames, batch_size, k=STAND_INS):
    """`rows` in batches of `batch_size` rows: every batch full but the last, and a video's rows in one forward pass
    wherever they fall in one batch (always, with a batch that is a multiple of their count)."""
    items = rows(videos, n_frames, k)
    return [[items[j] for j in chunk] for chunk in chunks(len(items), batch_size)]


def default_batch(videos, n_frames, k=STAND_INS, batch_size=8):
    """--explain's batch when none is given: at least `batch_size` rows, a whole number of the rows of the video with
    the most captions (with the paper's three frames, five captions and four stand-ins, 1 + 4 x 8 = 33: one video a
    forward pass where every video has five)."""
    most = max(variants(v, n_frames, len(stand_ins(len(videos), i, k))) for i, v in enumerate(videos))
    return most * math.ceil(batch_size / most)


class Replacements(Batches):
    """frames.Batches over `rows`: an item is a list of them, and comes back as prompt.encode's inputs of each
    (`replace_input`). The frames of each video an item names, its own or a stand-in's, are read once an item."""

    def __getitem__(self, items):
        ids = list(dict.fromkeys(i for item in items for i in (item[0], item[2]) if i is not None))
        frames, seconds = self.cache.clips([self.videos[i] for i in ids], self.video)
        frames = dict(zip(ids, frames))
        seconds = dict(zip(ids, seconds)) if seconds is not None else None
        inputs = [replace_input(frames[i], self.videos[i].captions, x,
                                None if j is None else (frames[j], self.videos[j].captions)) for i, x, j in items]
        return prompt.encode(self.processor, [f for f, _ in inputs], [c for _, c in inputs], None,
                             [seconds[i] for i, _, _ in items] if seconds is not None else None)


def shares(distributions, videos, n_frames, k=STAND_INS):
    """
    distributions: (rows, 101) P(s) of every row of `rows`, in that order. Returns (answers, shares): each video's
    distribution with all its inputs (decode.generate's answer with --decode expected), and its shares as
    {"frames": [N floats], "captions": [C floats], "frames_std": [N floats], "captions_std": [C floats]} in 0-1 units:
    score(all) - the mean over the stand-ins of score(with the stand-in's input), and the standard deviation of that
    difference over the stand-ins.
    """
    mean = decode.summary(distributions.float())[0] / 100
    answers, out, start = [], [], 0
    for i, v in enumerate(videos):
        m = len(stand_ins(len(videos), i, k))
        n = variants(v, n_frames, m)
        score = mean[start:start + n]
        lost = (score[0] - score[1:]).view(-1, m)  # (N + C, stand-ins)
        share, std = lost.mean(1).tolist(), lost.std(1, correction=0).tolist()
        answers.append(distributions[start])
        out.append(dict(frames=share[:n_frames], captions=share[n_frames:], frames_std=std[:n_frames],
                        captions_std=std[n_frames:]))
        start += n
    assert start == len(distributions), (start, len(distributions))
    return answers, out


def table(predictions, explained, n_frames):
    """
    (header, rows) of explain-NAME.csv from decode.prediction_table's (with --decode expected) and `shares`'s:
    video_id, mem_score, std, then frame_1..frame_N and caption_1..caption_K, the shares in 0-1 units, then the same
    names with _std, each share's standard deviation over the stand-ins (4 decimals). K is the most captions any
    video written has; a video with fewer leaves the rest of its caption columns empty.
    """
    header, lines = predictions
    keep = [header.index(c) for c in ("video_id", "mem_score", "std")]
    most = max((len(share["captions"]) for share in explained), default=0)
    names = [f"frame_{k + 1}" for k in range(n_frames)] + [f"caption_{k + 1}" for k in range(most)]

    def cells(frames, captions):
        return [f"{s:.4f}" for s in frames + captions] + [""] * (most - len(captions))

    return (["video_id", "mem_score", "std"] + names + [f"{name}_std" for name in names],
            [[line[c] for c in keep] + cells(share["frames"], share["captions"])
             + cells(share["frames_std"], share["captions_std"])
             for line, share in zip(lines, explained)])


def attribute(model, processor, videos, cache, batch_size=33, workers=0, progress=True, video=False, stand_ins=STAND_INS):
    """
    --explain: (answers, shares). Each video is scored by expected decoding with all its inputs, then with each frame
    and each caption replaced by each of `stand_ins` other videos' in turn, `batch_size` of these rows a forward pass;
    answers are its distributions with all inputs (decode.generate's with decode expected), shares its frames' and
    captions' in 0-1 units, with their standard deviations over the stand-ins.
    """
    dataset = Replacements(videos, cache, processor, labelled=False, video=video)
    batches = loader(dataset, plan(videos, cache.n_frames, batch_size, stand_ins), workers)
    p = decode.answer(model, processor, batches, "expected", progress=progress, desc="explaining")
    return shares(torch.stack(p), videos, cache.n_frames, stand_ins)
