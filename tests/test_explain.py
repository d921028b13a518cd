"""Why this score (predict.py --explain, explain.py) and the page of the scores (--report, report.py): each frame's and
caption's share is the mean change of the expected score when that input alone is replaced by other videos' (the
stand-ins), with its standard deviation over them; on the synthetic rule whose score lives in the last frame, the
trained model's largest share goes to the last frame and captions, which carry no signal, get small ones; the
untrained model's shares are near zero; captions come as many as the data has, one line each, in columns of their
own; and the page, rendered by headless Chromium, shows every video with its score, frames, captions and shares, and
sorts by a click.

The browser is Debian's chromium with its chromedriver (.ci/run installs them), driven by selenium: nothing is
downloaded. Without them these tests fail and say what to install. Run them alone with
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_explain.py"""

import csv
import html.parser
import os

import numpy as np
import pytest
import torch

import data
from scoring import explain
import model
import predict
import prompt
from scoring import report
from scaffold import synthetic
from plumbing.errors import InputError
from frames import DEFAULT_MAX_PIXELS, FrameCache, to_model
from conftest import script
import scoring.decode

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Headless, and nothing of its own on the network: no updates, no sync, no QUIC probes.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
SHARES = ["frame_1", "frame_2", "frame_3"] + [f"caption_{k}" for k in range(1, 6)]
STDS = [f"{c}_std" for c in SHARES]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through selenium and Debian's chromedriver, with a fresh profile."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    assert not missing, f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def shown(driver):
    """What the page shows, row by row in the order the browser lays them out, read from the DOM it built: the
    rendered text of each cell, each image's decoded width, each share bar's value and its drawn width."""
    return driver.execute_script("""
        const text = (row, css) => { const e = row.querySelector(css); return e ? e.innerText.trim() : null; };
        return Array.from(document.querySelectorAll("#videos tbody tr")).map(row => ({
            id: text(row, ".id"), score: text(row, ".score"), std: text(row, ".std"), error: text(row, ".error"),
            captions: Array.from(row.querySelectorAll(".caption")).map(c => c.innerText),
            images: Array.from(row.querySelectorAll("img")).map(i => i.complete ? i.naturalWidth : 0),
            bars: Array.from(row.querySelectorAll(".share")).map(s => [parseFloat(s.dataset.share),
                s.querySelector(".bar").getBoundingClientRect().width, s.getBoundingClientRect().width,
                s.nextElementSibling.nextElementSibling.innerText])}));""")


def click(driver, key):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'button[data-key="{key}"]').click()
    return shown(driver)


def test_the_trained_model_credits_the_last_frame_and_the_page_shows_it(trained, synthetic, cache, tmp_path, browser):
    """predict.py --explain --report on the trained run's held-out videos, as a user runs it."""
    out, code, log = trained
    assert code == 0, log
    code, stdout, stderr = script("predict.py", "--data", synthetic, "--adapter", out, "--split", "val", "--cache", cache,
                                  "--out", tmp_path / "val.csv", "--explain", "--report", tmp_path / "val.html")
    assert code == 0, stdout + stderr
    predictions, explained = read_csv(tmp_path / "val.csv"), read_csv(tmp_path / "explain-val.csv")
    assert list(explained[0]) == ["video_id", "mem_score", "std"] + SHARES + STDS
    assert [(r["video_id"], r["mem_score"], r["std"]) for r in explained] == \
        [(r["video_id"], r["mem_score"], r["std"]) for r in predictions] and len(explained) == 45
    assert "explained: 1485 scores" in stdout  # 45 x (1 + 4 stand-ins x (3 frames + 5 captions))

    # The fade rule: the score lives in the last frame. Chance would give it the largest of the three frames' shares 1
    # time in 3 (15 of 45, standard deviation 3.2), the largest of all eight 1 in 8; measured 44 and 42 of 45 (a
    # frame replaced by the video's mean colour instead, as before: 39 and 32, the last frame's share under 0.005 in 11
    # videos, against 3). Captions carry nothing: measured mean |share| 0.0025 against 0.100 for the last frame.
    frames = np.array([[float(r[f"frame_{k}"]) for k in (1, 2, 3)] for r in explained])
    captions = np.array([[float(r[f"caption_{k}"]) for k in range(1, 6)] for r in explained])
    assert (np.abs(frames).argmax(1) == 2).mean() >= 0.8, frames
    assert (np.abs(np.concatenate([frames, captions], 1)).argmax(1) == 2).mean() >= 0.8, (frames, captions)
    assert np.abs(captions).mean() < 0.1 * np.abs(frames[:, 2]).mean(), (captions, frames)
    assert all(float(r[c]) >= 0 for r in explained for c in STDS)

    browser.get((tmp_path / "val.html").as_uri())
    rows = shown(browser)
    by_id = {r["video_id"]: r for r in explained}
    truth = {v.video_id: v.score for v in data.load_split(synthetic, "val")}
    assert sorted(r["id"] for r in rows) == sorted(by_id)  # every video, once
    assert [r["id"] for r in rows] == [r["video_id"] for r in sorted(explained, key=lambda r: (-float(r["mem_score"]),
                                                                                              r["video_id"]))]
    for r in rows:
        assert r["score"] == by_id[r["id"]]["mem_score"] and r["std"] == "± " + by_id[r["id"]]["std"]
        assert float(r["error"][6:]) == pytest.approx(float(r["score"]) - truth[r["id"]], abs=1.5e-4)
        assert len(r["images"]) == 3 and all(width > 0 for width in r["images"])  # decoded, all three frames
        assert [f"{s:.4f}" for s, _, _, _ in r["bars"]] == [f"{float(by_id[r['id']][c]) + 0.0:.4f}" for c in SHARES]
        assert [spread for _, _, _, spread in r["bars"]] == [f"± {by_id[r['id']][c]}" for c in STDS]
    scale = max(abs(s) for r in rows for s, _, _, _ in r["bars"])
    for s, drawn, whole, _ in (bar for r in rows for bar in r["bars"]):  # a bar's length is its share on one scale
        assert drawn == pytest.approx(whole / 2 * abs(s) / scale, abs=1.0)
    assert browser.execute_script("return Array.from(document.querySelectorAll('.histogram rect'))"
                                  ".reduce((n, r) => n + parseInt(r.dataset.count), 0)") == 45

    for key, shown_value in [("std", lambda r: float(r["std"][2:])), ("error", lambda r: abs(float(r["error"][6:])))]:
        before = [r["id"] for r in rows]
        rows = click(browser, key)
        values = [shown_value(r) for r in rows]
        assert values == sorted(values, reverse=True) and [r["id"] for r in rows] != before, key
        assert sorted(r["id"] for r in rows) == sorted(before)
    again = [shown_value(r) for r in click(browser, "error")]  # a second click: the other way round
    assert again == sorted(again)


def test_untrained_shares_are_near_zero_and_each_is_its_own_replacement(tiny, synthetic, cache, tmp_path):
    """The tiny model taught only the answer's format reads nothing in the frames or captions: every share is under
    0.02 (measured at most 0.009). And a share is what the column says: the score with all inputs minus the mean of
    the scores with that frame, or that caption, replaced by each of the next four videos' at the same place, and its
    _std their standard deviation, scored here by hand."""
    predict.main(map(str, ["--data", synthetic, "--zero-shot", "--model", tiny, "--split", "val", "--cache", cache,
                           "--explain", "--out", tmp_path / "val.csv", "--workers", 0]))
    rows = read_csv(tmp_path / "explain-val.csv")
    assert len(rows) == 45 and np.abs([[float(r[c]) for c in SHARES] for r in rows]).max() < 0.02

    videos = data.load_split(synthetic, "val")[:5]  # the first and the four that stand in for it
    processor = model.load_processor(tiny, DEFAULT_MAX_PIXELS)  # predict.py's budget
    stored = [FrameCache(cache, 3, model.budget_of(processor)).get(v) for v in videos]
    frames, captions = [stored[0]], [videos[0].captions]
    for j in range(1, 5):  # the last frame replaced by video j's last frame
        replaced = stored[0].clone()
        replaced[2] = stored[j][2]
        frames.append(replaced)
        captions.append(videos[0].captions)
    for j in range(1, 5):  # the second caption replaced by video j's second caption
        frames.append(stored[0])
        captions.append(videos[0].captions[:1] + [videos[j].captions[1]] + videos[0].captions[2:])
    batch, _ = prompt.encode(processor, frames, captions)
    m = model.load_model(tiny)
    m.eval()
    p = scoring.decode.expected(m, to_model(batch, processor, "cpu"), prompt.answer_ids(processor.tokenizer))
    score = (p * torch.arange(101)).sum(-1) / 100
    lost_frame, lost_caption = score[0] - score[1:5], score[0] - score[5:9]
    row = rows[0]
    assert float(row["mem_score"]) == pytest.approx(score[0].item(), abs=1e-4)
    assert float(row["frame_3"]) == pytest.approx(lost_frame.mean().item(), abs=1e-4)
    assert float(row["frame_3_std"]) == pytest.approx(lost_frame.std(correction=0).item(), abs=1e-4)
    assert float(row["caption_2"]) == pytest.approx(lost_caption.mean().item(), abs=1e-4)
    assert float(row["caption_2_std"]) == pytest.approx(lost_caption.std(correction=0).item(), abs=1e-4)


def test_variants_and_their_batches(tiny, synthetic, cache, tmp_path):
    """1 + K x (N + C) variants a video, one after the other, in full batches, the next K videos standing in (wrapping;
    all the others where fewer); a stand-in's frame of another size is resized to the video's, a stand-in with fewer
    captions gives them in turn; a video scored alone cannot be explained; --explain decodes expected only, and a page
    that cannot be written stops the run before the model loads, in one line."""
    videos = data.load_split(synthetic, "val")[:3]
    videos[1].captions = videos[1].captions[:2]  # one of your own videos, with two captions
    assert [explain.stand_ins(3, i, 4) for i in range(3)] == [[1, 2], [2, 0], [0, 1]]  # fewer others than asked
    assert [explain.stand_ins(5, 4, 2), explain.stand_ins(1, 0, 4)] == [[0, 1], []]
    assert [explain.variants(v, 3, 2) for v in videos] == [17, 11, 17]
    assert explain.default_batch(videos, 3, 2) == 17 and explain.default_batch(videos[1:2] * 2, 3, 4, 8) == 12
    batches = explain.plan(videos, 3, 17, 2)
    assert [len(b) for b in batches] == [17, 17, 11] and sum(batches, []) == explain.rows(videos, 3, 2)
    assert explain.rows(videos, 3, 2)[17:20] == [(1, 0, None), (1, 1, 2), (1, 1, 0)]

    frames = torch.zeros(2, 3, 4, 6, dtype=torch.uint8)
    theirs = torch.full((2, 3, 8, 12), 200, dtype=torch.uint8)  # twice the size, one grey
    replaced, same = explain.replace_input(frames, ["a", "b", "c"], 2, (theirs, ["x", "y"]))
    assert replaced.shape == frames.shape and (replaced[1] == 200).all() and (replaced[0] == 0).all()
    assert same == ["a", "b", "c"] and (frames == 0).all()  # the video's own frames are left as they were
    assert explain.replace_input(frames, ["a", "b", "c"], 4, (theirs, ["x", "y"]))[1] == ["a", "y", "c"]
    assert explain.replace_input(frames, ["a", "b", "c"], 5, (theirs, ["x", "y"]))[1] == ["a", "b", "x"]  # 3 mod 2

    with pytest.raises(SystemExit):
        predict.main(["--zero-shot", "--model", tiny, "--explain", "--decode", "greedy"])
    with pytest.raises(SystemExit):
        predict.main(["--zero-shot", "--model", tiny, "--explain", "--stand-ins", "0"])
    alone = tmp_path / "alone"
    alone.mkdir()
    os.symlink(videos[0].path, alone / "one.mp4")
    with pytest.raises(InputError, match=r"alone: --explain needs two videos or more .*; one here: one\.mp4$"):
        predict.main(map(str, ["--videos", alone, "--zero-shot", "--model", tiny, "--cache", cache, "--explain",
                               "--out", tmp_path / "alone.csv"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"^\S*file/page.html: cannot write the report there \(.*\)$"):
        predict.main(map(str, ["--data", synthetic, "--zero-shot", "--model", tiny, "--split", "val",
                               "--report", tmp_path / "file" / "page.html"]))


def test_the_page_shows_names_and_captions_as_text(browser, tmp_path):
    """Names and captions with markup in them show as the text they are; a greedy page (no spread, no truth) offers
    only the sort by score."""
    class Frames:  # a frame cache of two frames a video
        def get(self, video):
            return torch.full((2, 3, 30, 40), 120, dtype=torch.uint8)

    videos = [data.Video("<b>bold</b> & co.mp4", "", ["a <script>alert(1)</script> caption"], None),
              data.Video("plain.mp4", "", ["one", "two"], None)]
    report.write(str(tmp_path / "page.html"), videos, [40, 70], Frames(), title="<i>mine</i>")
    browser.get((tmp_path / "page.html").as_uri())
    rows = shown(browser)
    assert [r["id"] for r in rows] == ["plain.mp4", "<b>bold</b> & co.mp4"] and rows[1]["score"] == "0.4000"
    assert rows[1]["captions"] == ["a <script>alert(1)</script> caption"] and rows[1]["std"] is None
    assert browser.title == "<i>mine</i>" and browser.execute_script(
        "return [document.scripts.length, document.querySelectorAll('#videos b, #videos i').length, "
        "Array.from(document.querySelectorAll('button')).map(b => b.dataset.key)]") == [1, 0, ["score"]]
    assert [len(r["images"]) for r in rows] == [2, 2] and all(w == 40 for r in rows for w in r["images"])


# A caption as a file may hold it: a line break, a tab, spaces at the edges and inside; the prompt and the files read it
# as one line.
MESSY = "  a dog\n runs  on the\tbeach \r\n"
CLEAN = "a dog runs on the beach"
SEVEN = [MESSY, "a cat sleeps", "two people dance", "a bird sings", "a child jumps", "a man cooks", "a woman swims"]


def check_caption_columns(path, first, counts, explained):
    """The CSV at `path` has the columns of the most captions any video has (7), each video's cells filled up to its
    own count and empty after it, its shares' and their _std alike where `explained`: no cell shifted. `first`: the
    columns before the frames or captions. Returns {video_id: row}."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    captions = [f"caption_{k}" for k in range(1, 8)]
    shares = ["frame_1", "frame_2", "frame_3"] + captions
    header = first + (shares + [f"{c}_std" for c in shares] if explained else captions)
    assert lines[0] == header and all(len(line) == len(header) for line in lines[1:]), lines
    rows = {line[0]: dict(zip(header, line)) for line in lines[1:]}
    assert sorted(rows) == sorted(counts)
    for video_id, row in rows.items():
        for k, c in enumerate(captions, start=1):
            cells = [row[c]] + ([row[f"{c}_std"]] if explained else [])
            assert all(cells) if k <= counts[video_id] else not any(cells), (video_id, c, cells)
        if explained:  # a number in every frame's cells
            assert all(float(row[f"frame_{k}{std}"]) >= -1 for k in (1, 2, 3) for std in ("", "_std"))
    return rows


class Page(html.parser.HTMLParser):
    """A report page's video rows as its HTML has them: {id: (captions' text, number of share bars)}."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.id, self.in_caption = {}, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("class") == "video":
            self.id = attrs["data-id"]
            self.rows[self.id] = ([], 0)
        elif attrs.get("class") == "caption":
            self.in_caption = True
        elif attrs.get("class") == "share":
            captions, bars = self.rows[self.id]
            self.rows[self.id] = (captions, bars + 1)

    def handle_data(self, text):
        if self.in_caption:
            self.rows[self.id][0].append(text)
            self.in_caption = False


def test_trecvid_captions_of_any_count_fill_columns_of_their_own(tiny, cache, tmp_path):
    """TRECVid gives a video as many captions as it has (one row a caption): a video of seven and one of two go through
    predict.py --explain --report with the columns caption_1..caption_7 in explain-NAME.csv, blank past a video's own
    count; the page lists each video's captions and a bar for each; and a caption with a line break, a tab and spaces
    at its edges is read as one clean line: so it stands in the prompt's text, one line among the others."""
    root = tmp_path / "trecvid"
    synthetic.make_synthetic(str(root), n=40, seed=3, layout="trecvid")
    path = root / "dev_set" / "dev_text_descriptions.csv"  # the val split's captions
    given = read_csv(path)
    ids = list(dict.fromkeys(r["video_id"] for r in given))
    captions = {v: [r["description"] for r in given if r["video_id"] == v] for v in ids}
    captions.update({ids[0]: SEVEN, ids[1]: ["a man walks", "a woman runs"]})
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["video_id", "description"]] + [[v, c] for v in ids for c in captions[v]])

    code, stdout, stderr = script("predict.py", "--data", root, "--split", "val", "--zero-shot", "--model", tiny,
                                  "--cache", cache, "--explain", "--stand-ins", 2, "--report", tmp_path / "val.html",
                                  "--out", tmp_path / "val.csv", "--workers", 0)
    assert code == 0, stdout + stderr
    counts = {v: len(c) for v, c in captions.items()}
    assert counts[ids[0]] == 7 and counts[ids[1]] == 2 and max(counts[v] for v in ids[2:]) < 7
    check_caption_columns(tmp_path / "explain-val.csv", ["video_id", "mem_score", "std"], counts, explained=True)

    page = Page((tmp_path / "val.html").read_text())
    assert page.rows[ids[0]] == ([CLEAN] + SEVEN[1:], 3 + 7) and page.rows[ids[1]] == (["a man walks", "a woman runs"],
                                                                                       3 + 2)
    video = next(v for v in data.load_split(str(root), "val") if v.video_id == ids[0])
    assert video.captions == [CLEAN] + SEVEN[1:]
    processor = model.load_processor(tiny, DEFAULT_MAX_PIXELS)
    batch, _ = prompt.encode(processor, [FrameCache(cache, 3, model.budget_of(processor)).get(video)], [video.captions])
    lines = processor.tokenizer.decode(batch["input_ids"][0]).split("\n")
    at = lines.index(CLEAN)
    assert lines[at:at + 7] == [CLEAN] + SEVEN[1:] and lines[at + 7].startswith(prompt.ANSWER_CUE), lines


def test_your_captions_of_any_count_one_line_each(tiny, cache, tmp_path):
    """predict.py --videos --captions takes as many captions a video as the file gives (seven here, where Memento10k
    has five): the ranking and explain-NAME.csv get caption_1..caption_7, blank past a video's own count, and the
    caption written over two lines with spaces around it is one clean cell. The videos differ in size, so a stand-in's
    frame is resized to the video's it replaces."""
    mine = tmp_path / "mine"
    mine.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4"):
        synthetic.write_video(str(mine / name), synthetic.fade(rng, 24, 64)[0])
    synthetic.write_video(str(mine / "wide.mp4"), synthetic.fade(rng, 24, 96)[0][:, :48].copy())
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", "caption"]] + [["wide.mp4", c] for c in SEVEN]
                                + [["a.mp4", "a man walks"], ["a.mp4", "a woman runs"], ["b.mp4", "a bird sings"]])

    code, stdout, stderr = script("predict.py", "--videos", mine, "--captions", tmp_path / "captions.csv",
                                  "--zero-shot", "--model", tiny, "--cache", cache, "--explain", "--stand-ins", 2,
                                  "--out", tmp_path / "scores.csv", "--workers", 0)
    assert code == 0, stdout + stderr
    counts = {"wide.mp4": 7, "a.mp4": 2, "b.mp4": 1}
    first = ["video_id", "mem_score", "argmax", "std", "captions_from"]
    ranking = check_caption_columns(tmp_path / "scores.csv", first, counts, explained=False)
    assert [ranking["wide.mp4"][f"caption_{k}"] for k in range(1, 8)] == [CLEAN] + SEVEN[1:]
    check_caption_columns(tmp_path / "explain-mine.csv", ["video_id", "mem_score", "std"], counts, explained=True)
    stored = FrameCache(cache, 3, model.budget_of(model.load_processor(tiny, DEFAULT_MAX_PIXELS)))
    assert stored.get(data.Video("", str(mine / "wide.mp4"), [], None)).shape[-2:] != \
        stored.get(data.Video("", str(mine / "a.mp4"), [], None)).shape[-2:]
