"""
Scoring your own videos (predict.py --videos DIR): the video files of a folder, their captions (a CSV file of yours,
or five written by the base model), the ranking they get and a contact sheet of it.

    python predict.py --videos my-clips --adapter runs/final --decode expected --sheet my-clips.png
    python predict.py --videos my-clips --recursive --captions captions.csv --adapter runs/final

Not the paper's method: its captions were written by people (Memento10k's five a video), and the model was
fine-tuned on those. Captions written by a model read differently (other words, other length, its own mistakes), and
scores given over them may drift from what the fine-tuned model learned; a captions file of yours avoids that.
"""

import csv
import math
import os
from contextlib import nullcontext

import torch
from tqdm import tqdm

import data
import prompt
from plumbing import sources
from plumbing.errors import InputError
from frames import chunks, to_model

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
CAPTIONS = 5  # captions the base model writes a video, as Memento10k has
CELL = (2.4, 2.2)  # inches of one video in the contact sheet, at 100 dpi


def find_videos(root, recursive=False):
    """
    The video files in `root` (by extension, in any case), sorted; with `recursive`, in its subfolders too. Each is a
    data.Video with no captions and no score, whose id is its path relative to `root` with / between folders
    (the file name for a video directly in `root`): unique, where two subfolders hold the same file name or one
    folder the same name in two containers. The frame cache keys entries by the file's absolute path, size and time,
    so two folders' videos never share one.
    """
    if not os.path.isdir(root):
        raise InputError(f"{root}: no such folder of videos")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(subfolders) if recursive else []
        found += [os.path.join(folder, f) for f in files if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
    return [data.Video(os.path.relpath(path, root).replace(os.sep, "/"), path, [], None) for path in sorted(found)]


def read_captions(path, videos):
    """
    Captions of yours: a CSV file with the columns video,caption and one or more rows a video (as many as it has, as
    TRECVid gives several), in the order they are to be read. `video` is the video's path relative to DIR, as the
    ranking writes it (its file name where it lies directly in DIR). A video the file does not name gets the base
    model's captions. Each caption is made one line (sources.clean_caption). Returns {video_id: captions}; a row that
    names no video found or an empty caption stops the run with the line.
    """
    known, captions = {v.video_id for v in videos}, {}
    reader = csv.DictReader(sources.read_text(path).splitlines())
    if not {"video", "caption"} <= set(reader.fieldnames or []):
        raise InputError(f"{path}: line 1: expected the columns video,caption")
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        video, caption = (row["video"] or "").strip(), sources.clean_caption(row["caption"] or "")
        if video not in known:
            raise InputError(f"{where}: no video {video!r} in the folder (name it by its path relative to it)")
        if not caption:
            raise InputError(f"{where}: the caption is empty")
        captions.setdefault(video, []).append(caption)
    return captions


def write_captions(model, processor, videos, cache, video=False, batch_size=8, seed=0, max_new_tokens=40):
    """
    Five captions a video, written by the base model with the adapter off (the adapter was trained to answer a score,
    not to describe): the same frames as the score's prompt, then prompt.CAPTION_REQUEST, sampled five times (top-p
    0.9, temperature 0.7) from a generator seeded with `seed`: the same command writes the same captions. Each is made
    one line, as the prompt puts one caption a line. Returns a list of five strings a video.
    """
    from peft import PeftModel

    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    written = []
    with model.disable_adapter() if isinstance(model, PeftModel) else nullcontext():
        for chunk in tqdm(chunks(len(videos), batch_size), desc="writing captions", unit="batch"):
            frames, seconds = cache.clips([videos[i] for i in chunk], video)
            batch, _ = prompt.encode(processor, frames, [[] for _ in chunk], seconds=seconds,
                                     request=prompt.CAPTION_REQUEST)
            batch = to_model(batch, processor, model.device)
            with torch.no_grad():
                out = model.generate(**batch, do_sample=True, top_p=0.9, temperature=0.7, num_return_sequences=CAPTIONS,
                                     max_new_tokens=max_new_tokens, eos_token_id=end,
                                     pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            texts = [sources.clean_caption(t) for t in texts]
            written += [texts[k:k + CAPTIONS] for k in range(0, len(texts), CAPTIONS)]
    model.train(was_training)
    return written


def ranking(table, videos, origin):
    """decode.prediction_table's (header, rows) -> the same, sorted by score (highest first), with where the captions
    came from and the captions themselves: caption_1..caption_K, K the most any video has, empty where one has fewer."""
    header, rows = table
    most = max((len(v.captions) for v in videos), default=0)
    rows = [row + [source] + v.captions + [""] * (most - len(v.captions))
            for row, v, source in zip(rows, videos, origin)]
    return header + ["captions_from"] + [f"caption_{k + 1}" for k in range(most)], ranked(rows)


def ranked(rows):
    """Rows of a table whose first columns are video_id,mem_score, highest score first (ties by id)."""
    return sorted(rows, key=lambda row: (-float(row[1]), row[0]))


def contact_sheet(path, videos, scores, cache):
    """A PNG of every video's middle frame, highest score first, each labelled with its rank, score (0-1) and name."""
    from scoring import figures  # matplotlib: only where a sheet is asked for

    order = sorted(range(len(videos)), key=lambda i: (-scores[i], videos[i].video_id))
    columns = min(6, len(order))
    rows = math.ceil(len(order) / columns)
    fig = figures.new_figure((figures.DPI * CELL[0] * columns, figures.DPI * CELL[1] * rows))
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for rank, (ax, i) in enumerate(zip(axes, order), start=1):
        frames = cache.get(videos[i])
        ax.imshow(frames[len(frames) // 2].permute(1, 2, 0).numpy())
        name = videos[i].video_id if len(videos[i].video_id) <= 28 else "..." + videos[i].video_id[-25:]
        ax.set_title(f"{rank}. {scores[i] / 100:.2f}\n{name}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    figures.save(fig, path)
