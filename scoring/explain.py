"""
Why this score (predict.py --explain): each frame's and each caption's share of a video's expected score, by occlusion.

    python predict.py --adapter runs/final --split test --explain                  # RUN/explain-test.csv
    python predict.py --videos my-clips --adapter runs/final --explain --report my-clips.html

A video with N frames and C captions (Memento10k's five) is scored 1 + N + C times: with all its inputs, with each
frame occluded in turn, with each caption taken away in turn (below). An input's share is what the score loses
without it, score(all) - score(without it), in mem_score's 0-1 units: positive, the input raised the score; negative,
it lowered it. The scores are the exact expected ones (scoring.decode.py), so a share is a difference of two continuous numbers, not of
two integers that tie.

How an input is taken away, and why so:
  a frame    replaced by the video's mean colour (per channel, over its N frames), at the same size: the same visual
             tokens at the same places and positions, so the only change is what that frame shows; and no colour
             from outside the video (a fixed grey would bring a brightness of its own, which the model reads:
             lighting is what the paper's worst-predicted videos share)
  a caption  replaced by the caption in the same place of the next video scored (in the order given, the last
             video's by the first's; a video scored alone has its caption's line dropped). The prompt keeps its form,
             five lines of the kind the model learned from, and loses only what this caption says of this video.
             Dropping the line, or leaving it empty ("\n\n", one token in Qwen's vocabularies), changes the form
             the model was trained on, and the fine-tuned tiny model reacts to that alone: captions that carry
             nothing got mean shares of 0.052 (dropped) and 0.045 (empty) against 0.003 (another video's), the last
             frame's being 0.108 (README, "Why this score")

Pure functions and a Dataset; predict.py runs the model.
"""

import math

import prompt
import scoring.decode
from scoring.videos import CAPTIONS
from frames import Batches, chunks


def variants(video, n_frames):
    """How many times a video is scored: all its inputs, each frame occluded, each caption replaced."""
    return 1 + n_frames + len(video.captions)


def occlude(frames, captions, variant, stand_ins=None):
    """
    A video's inputs for one variant: 0, all of them; 1..N, frame `variant` (from 1) replaced by the video's mean
    colour; N+1..N+C, caption `variant - N` (from 1) replaced by the one in the same place of `stand_ins`, or dropped
    where it has none. frames: (N, 3, H, W) uint8, as the cache gives them.
    """
    n = len(frames)
    if variant == 0:
        return frames, captions
    if variant <= n:
        mean = frames.float().mean((0, 2, 3)).round().to(frames.dtype)  # (3,): per channel over every frame
        frames = frames.clone()
        frames[variant - 1] = mean[:, None, None]
        return frames, captions
    k = variant - n - 1
    instead = [stand_ins[k]] if stand_ins and k < len(stand_ins) else []
    return frames, captions[:k] + instead + captions[k + 1:]


def stand_ins(videos, i):
    """The captions that stand in for video i's when they are taken away: the next video's, the last one's being the
    first's; none for a video scored alone."""
    return videos[(i + 1) % len(videos)].captions if len(videos) > 1 else None


def rows(videos, n_frames):
    """Every (video index, variant) to score, a video's variants one after the other."""
    return [(i, k) for i, v in enumerate(videos) for k in range(variants(v, n_frames))]


def plan(videos, n_frames, batch_size):
    """`rows` in batches of `batch_size` rows: every batch full but the last, and a video's variants in one forward
    pass wherever they fall in one batch (always, with a batch that is a multiple of their count)."""
    pairs = rows(videos, n_frames)
    return [[pairs[j] for j in chunk] for chunk in chunks(len(pairs), batch_size)]


def default_batch(n_frames, batch_size=8):
    """--explain's batch when none is given: at least `batch_size` rows, a whole number of videos of five captions
    (1 + 3 + 5 = 9 rows with the paper's three frames: one video a forward pass)."""
    per_video = 1 + n_frames + CAPTIONS
    return per_video * math.ceil(batch_size / per_video)


class Occlusions(Batches):
    """frames.Batches over (video index, variant) pairs: an item is a list of them, and comes back as prompt.encode's
    inputs of each variant (`occlude`). A video's frames are read from the cache once an item."""

    def __getitem__(self, pairs):
        ids = list(dict.fromkeys(i for i, _ in pairs))
        frames, seconds = self.clips([self.videos[i] for i in ids])
        frames = dict(zip(ids, frames))
        seconds = dict(zip(ids, seconds)) if seconds is not None else None
        inputs = [occlude(frames[i], self.videos[i].captions, k, stand_ins(self.videos, i)) for i, k in pairs]
        return prompt.encode(self.processor, [f for f, _ in inputs], [c for _, c in inputs], None,
                             [seconds[i] for i, _ in pairs] if seconds is not None else None)


def shares(distributions, videos, n_frames):
    """
    distributions: (rows, 101) P(s) of every row of `rows`, in that order. Returns (answers, shares): each video's
    distribution with all its inputs (predict.generate's answer with --decode expected), and its shares as
    {"frames": [N floats], "captions": [C floats]} in 0-1 units: score(all) - score(without the input).
    """
    mean = scoring.decode.summary(distributions.float())[0] / 100
    answers, out, start = [], [], 0
    for v in videos:
        n = variants(v, n_frames)
        score = mean[start:start + n]
        lost = (score[0] - score[1:]).tolist()
        answers.append(distributions[start])
        out.append(dict(frames=lost[:n_frames], captions=lost[n_frames:]))
        start += n
    assert start == len(distributions), (start, len(distributions))
    return answers, out


def table(predictions, explained, n_frames):
    """
    (header, rows) of explain-NAME.csv from predict.prediction_table's (with --decode expected) and `shares`'s:
    video_id, mem_score, std, then frame_1..frame_N and caption_1..caption_5, the shares in 0-1 units (4 decimals; a
    video with fewer captions leaves the rest empty).
    """
    header, lines = predictions
    keep = [header.index(c) for c in ("video_id", "mem_score", "std")]
    return (["video_id", "mem_score", "std"] + [f"frame_{k + 1}" for k in range(n_frames)]
            + [f"caption_{k + 1}" for k in range(CAPTIONS)],
            [[line[c] for c in keep] + [f"{s:.4f}" for s in share["frames"]]
             + [f"{s:.4f}" for s in share["captions"]] + [""] * (CAPTIONS - len(share["captions"]))
             for line, share in zip(lines, explained)])
