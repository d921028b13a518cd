"""
Synthetic datasets (Memento10k, TRECVid, VideoMem) and video clips, written in the real formats: the demo, the tests
and bench.py read them through the same code as the real datasets. Nothing here is part of the method.

    python synthetic.py runs/synth --n 300                  # the authors' JSON layout
    python synthetic.py runs/synth-csv --n 300 --layout csv # the MediaEval 2021 layout
    python synthetic.py runs/synth-trecvid --n 300 --layout trecvid    # MediaEval 2021's TRECVid: short and long term
    python synthetic.py runs/synth-videomem --n 300 --layout videomem  # VideoMem: dev-set, test-set, webm videos
    python synthetic.py runs/synth-pos --n 300 --rule position   # the score in the last third only (RULES)
    python synthetic.py runs/clips --clips 16               # 3-second 720p H.264 clips of textured motion (bench.py)
"""

import argparse
import csv
import json
import os

import numpy as np
from tqdm import tqdm

from plumbing import sources
from plumbing.errors import Help, cli
from plumbing.files import atomic


CAPTION_PARTS = (
    ["a man", "a woman", "a child", "a dog", "a cat", "two people", "a group of friends", "a bird"],
    ["walks", "runs", "dances", "jumps", "sits", "plays", "cooks", "swims"],
    ["in a park", "on the beach", "in a kitchen", "on a street", "in the snow", "at a party", "in a forest",
     "on a stage"],
)
CAPTION_WORDS = [p for parts in CAPTION_PARTS for p in parts]


def synthetic_caption(rng):
    return " ".join(rng.choice(parts) for parts in CAPTION_PARTS)


def synthetic_frames(first, last, tint, n_frames, size):
    """A clip whose brightness fades from `first` to `last` (0-1), with a white bar across the top whose
    width grows from nothing (first frame) to the full width (last frame) so each frame shows its position."""
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        level = first + (last - first) * t / (n_frames - 1)
        frames[t] = (30 + 170 * level * tint).astype(np.uint8)
        frames[t, :8, : round(size * t / (n_frames - 1))] = 255
    return frames


# The codec each container is written with: what phones, cameras and the web commonly hold
CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
OPTIONS = {"libx264": {"crf": "18"}, "libvpx-vp9": {"crf": "30", "b": "0"}}  # near-lossless H.264, VP9 by quality


def write_video(path, frames, fps=24):
    """Frames (N, H, W, 3) uint8 -> a video in the container its extension names (CODECS; H.264 .mp4 for the
    datasets)."""
    import av

    codec = CODECS[os.path.splitext(path)[1].lower()]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = OPTIONS.get(codec, {})
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def fade(rng, n_frames, size):
    """The demo's rule: the brightness fades from a random level to the scoring one, under a random tint, with the
    position bar; the last frame carries the score, the middle one half of it, the first none."""
    first, last = rng.uniform(0, 1, size=2)
    tint = rng.uniform(0.6, 1.0, size=3)
    return synthetic_frames(first, last, tint, n_frames, size), last, first


def position(rng, n_frames, size):
    """Each third of the clip is one uniform grey of its own random level, and the score is the last third's: first,
    middle and last frame look alike, and only its position tells the scoring frame."""
    levels = rng.uniform(0, 1, size=3)
    thirds = np.minimum(np.arange(n_frames) * 3 // n_frames, 2)
    return grey(levels[thirds], size), levels[2], levels[0]


def window(rng, n_frames, size):
    """The scoring grey fills only the frames between 15% and 35% of the clip; every other frame is a random grey.
    First, middle and last never see it (three frames cannot learn it); eight evenly spaced frames see one."""
    levels, level = rng.uniform(0, 1, size=n_frames), rng.uniform(0, 1)
    where = np.arange(n_frames) / (n_frames - 1)
    levels[(where >= 0.15) & (where <= 0.35)] = level
    return grey(levels, size), level, levels[0]


def grey(levels, size):
    """One uniform grey frame per level (0-1), as uint8 RGB."""
    values = (30 + 170 * np.asarray(levels)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (len(values), size, size, 3)).copy()


# What carries the score in a synthetic clip (--rule). Each returns the frames, the level (0-1) the short-term score
# follows, and the first frame's level, which the long-term score follows (the second rule: drawn independently of the
# first, so a model that learned one predicts the other no better than chance).
RULES = {"fade": fade, "position": position, "window": window}
# The dataset layouts written (sources.py reads each): Memento10k's two releases, MediaEval 2021's TRECVid, VideoMem
LAYOUTS = ("json", "csv", "trecvid", "videomem")


def make_synthetic(root, n=200, seed=0, layout="json", n_frames=24, size=64, rule="fade", fractions=(0.7, 0.15)):
    """
    Write n videos split into train, val and test (`fractions`: train's and val's; 70/15/15) in one of LAYOUTS
    (VideoMem's dev-set holds train + val). The short-term score is 0.45 + 0.5 x a level (0-1) that `rule` hides in the
    frames (RULES), plus a little noise; the long-term score (TRECVid, VideoMem) is 0.35 + 0.5 x the first frame's
    level, plus noise: lower, as long-term scores are. The captions say nothing of either: five a video on Memento10k,
    one on VideoMem, one to four on TRECVid (whose release gives several: one is among the counts so that a model
    trained on it meets VideoMem's single caption within what it saw; see README). Test labels are withheld from the
    split's files and written to test_labels.csv (short-term) and test_labels_long.csv (long-term, where there is one).
    Every layout holds the same videos and scores for a seed: only the files differ.
    """
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 1])  # what Memento10k lacks draws from a stream of its own: its files stay
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    records = {s: [] for s in ("train", "val", "test")}
    for i, split in enumerate(tqdm(splits, desc="writing synthetic videos", unit="video")):
        frames, level, first = RULES[rule](rng, n_frames, size)
        score = float(np.clip(0.45 + 0.5 * level + rng.normal(0, 0.01), 0, 1))
        long_score = float(np.clip(0.35 + 0.5 * first + extra.normal(0, 0.01), 0, 1))
        captions = [synthetic_caption(rng) for _ in range(5)]
        count = extra.integers(1, 5)  # TRECVid's count, drawn in every layout: each then holds the same scores
        captions = captions[:count] if layout == "trecvid" else captions[:1] if layout == "videomem" else captions
        folder, video_id, filename = _where(root, layout, split, i)
        os.makedirs(folder, exist_ok=True)
        write_video(os.path.join(folder, filename), frames)
        records[split].append(dict(video_id=video_id, filename=filename, captions=captions, mem_score=round(score, 4),
                                   long_score=round(long_score, 4), alpha=-round(rng.uniform(0, 0.01), 5),
                                   annotations=int(extra.integers(30, 90)),
                                   long_annotations=int(extra.integers(9, 30))))
    write = {"json": _write_json, "csv": _write_csv, "trecvid": _write_csv, "videomem": _write_videomem}[layout]
    write(root, records, layout)
    labels = [("test_labels.csv", "mem_score")]
    if layout in ("trecvid", "videomem"):
        labels.append(("test_labels_long.csv", "long_score"))
    for name, key in labels:
        with open(os.path.join(root, name), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "mem_score"])
            w.writerows([r["video_id"], r[key]] for r in records["test"])
    return root


def _where(root, layout, split, i):
    """(folder, video id, file name) of synthetic video i: the names each release gives its videos."""
    if layout == "json":
        return os.path.join(root, "videos"), f"synthetic_{i:05d}", f"synthetic_{i:05d}.mp4"
    if layout == "videomem":
        folder = sources.VIDEOMEM_DIRS["test" if split == "test" else "trainval"]
        return os.path.join(root, folder, "sources"), f"video{i}", f"video{i}.webm"
    return os.path.join(root, sources.CSV_DIRS[split][0], "Videos"), f"{i:05d}", f"{i:05d}.mp4"


def _write_json(root, records, layout="json"):
    for split, rows in records.items():
        out = [dict(filename=r["filename"], url=f"https://example.invalid/{r['filename']}", captions=r["captions"],
                    action_labels=[], **({} if split == "test" else dict(mem_score=r["mem_score"], alpha=r["alpha"])))
               for r in rows]
        with open(os.path.join(root, sources.JSON_FILES[split]), "w") as f:
            json.dump(out, f, indent=1)


def _write_csv(root, records, layout="csv"):
    """MediaEval 2021's files: Memento10k's captions one row a video, TRECVid's one row a caption and its scores with
    the long-term columns too."""
    for split, rows in records.items():
        folder, prefix = sources.CSV_DIRS[split]
        base = os.path.join(root, folder)
        with open(os.path.join(base, f"{prefix}_text_descriptions.csv"), "w", newline="") as f:
            w = csv.writer(f)
            if layout == "trecvid":
                w.writerow(["video_id", "description"])
                w.writerows([r["video_id"], c] for r in rows for c in r["captions"])
            else:
                w.writerow(["video_id"] + [f"description_{k}" for k in range(5)])
                w.writerows([r["video_id"], *r["captions"]] for r in rows)
        with open(os.path.join(base, f"{prefix}_video_urls.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "video_url"])
            w.writerows([r["video_id"], f"https://example.invalid/{r['filename']}"] for r in rows)
        if split == "test":
            continue
        with open(os.path.join(base, f"{prefix}_scores.csv"), "w", newline="") as f:
            w = csv.writer(f)
            if layout == "trecvid":
                w.writerow(["video_id", "video_url", "annotations_short_term", "annotations_long_term",
                            "scores_raw_short_term", "scores_raw_long_term", "scores_normalized_short_term",
                            "decay_alpha"])
                w.writerows([r["video_id"], f"https://example.invalid/{r['filename']}", r["annotations"],
                             r["long_annotations"], r["mem_score"], r["long_score"], r["mem_score"], r["alpha"]]
                            for r in rows)
            else:
                w.writerow(["video_id", "video_url", "annotations_short_term", "scores_raw_short_term",
                            "scores_normalized_short_term", "decay_alpha"])
                w.writerows([r["video_id"], f"https://example.invalid/{r['filename']}", 90, r["mem_score"],
                             r["mem_score"], r["alpha"]] for r in rows)


def _write_videomem(root, records, layout="videomem"):
    """VideoMem's files: the dev set's ground truth and the captions of each set, one line a video with its caption's
    words joined by dashes; the test set's ground truth is withheld."""
    sets = {"trainval": records["train"] + records["val"], "test": records["test"]}
    for split, rows in sets.items():
        folder = sources.VIDEOMEM_DIRS[split]
        with open(os.path.join(root, folder, sources.VIDEOMEM_CAPTIONS[split == "test"].format(folder)), "w") as f:
            f.writelines(f"{r['filename']}\t{r['captions'][0].replace(' ', '-')}\n" for r in rows)
    os.makedirs(os.path.join(root, "dev-set", "ground-truth"), exist_ok=True)
    with open(os.path.join(root, "dev-set", "ground-truth", sources.VIDEOMEM_TRUTH.format("dev-set")), "w",
              newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "short-term_memorability", "nb_short-term_annotations", "long-term_memorability",
                    "nb_long-term_annotations"])
        w.writerows([r["filename"], r["mem_score"], r["annotations"], r["long_score"], r["long_annotations"]]
                    for r in sets["trainval"])


def write_clips(folder, n=16, seconds=3, fps=30, height=720, width=1280, seed=0, part=(0, 1)):
    """n H.264 clips (x264's defaults: B-frames, CRF 23) of a textured background panning under a moving disc, with
    a little sensor noise: about the bitrate and decoding cost of real 720p footage, unlike flat synthetic frames.
    part (k, parts): write only clips k, k + parts, ... (several processes share the work); clip i is the same anyway."""
    import av
    import torch
    import torch.nn.functional as F

    os.makedirs(folder, exist_ok=True)
    steps = seconds * fps
    yy, xx = np.mgrid[:height, :width]
    paths = []
    for i in tqdm(range(part[0], n, part[1]), desc="writing 720p clips", unit="clip", disable=part[1] > 1):
        rng = np.random.default_rng([seed, i])
        # smooth texture: low-resolution noise, blurred and upsampled, larger than the frame so it can pan
        noise = torch.from_numpy(rng.normal(size=(1, 3, height // 8 + 2 * steps // 8 + 8, width // 8 + 4 * steps // 8 + 8)))
        texture = F.interpolate(F.avg_pool2d(noise.float(), 3, 1, 1), scale_factor=8, mode="bicubic")[0].permute(1, 2, 0)
        texture = np.clip(128 + 60 * texture.numpy() / texture.std().item(), 0, 255).astype(np.uint8)
        color = rng.integers(0, 256, 3).astype(np.uint8)
        path = os.path.join(folder, f"clip_{i:03d}.mp4")
        with atomic(path, "wb") as f, av.open(f, "w", format="mp4") as container:  # a killed run leaves no half clip
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
            stream.options = {"crf": "23"}
            for t in range(steps):
                frame = texture[2 * t:2 * t + height, 4 * t:4 * t + width].copy()
                frame[(xx - 200 - 10 * t) ** 2 + (yy - 300 - 3 * t) ** 2 < 80 ** 2] = color
                frame += rng.integers(0, 6, size=frame.shape, dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--n", type=int, default=200, help="number of synthetic videos")
    parser.add_argument("--layout", default="json", choices=LAYOUTS, help="the dataset's layout (sources.py)")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--rule", default="fade", choices=list(RULES), help="what carries the score in the frames")
    parser.add_argument("--clips", type=int, help="instead: this many 3-second 720p H.264 clips")
    args = parser.parse_args(argv)
    if args.clips:
        write_clips(args.out, args.clips, seed=args.seed)
        print(f"wrote {args.clips} 720p clips to {args.out}")
    else:
        make_synthetic(args.out, args.n, args.seed, args.layout, rule=args.rule)
        print(f"wrote {args.n} synthetic videos to {args.out} ({args.layout} layout, {args.rule} rule)")


if __name__ == "__main__":
    cli(main)
