"""Why this score (predict.py --explain, explain.py) and the page of the scores (--report, report.py): each frame's and
caption's share is the change of the expected score when that input alone is taken away; on the synthetic rule whose
score lives in the last frame, the trained model's largest share goes to the last frame and captions, which carry no
signal, get small ones; the untrained model's shares are near zero; and the page, rendered by headless Chromium,
shows every video with its score, frames, captions and shares, and sorts by a click.

The browser is Debian's chromium with its chromedriver (.ci/run installs them), driven by selenium: nothing is
downloaded. Without them these tests fail and say what to install. Run them alone with
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_explain.py"""

import csv
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
from plumbing.errors import InputError
from frames import DEFAULT_MAX_PIXELS, FrameCache, to_model
from conftest import script
import scoring.decode

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Headless, and nothing of its own on the network: no updates, no sync, no QUIC probes.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
SHARES = ["frame_1", "frame_2", "frame_3"] + [f"caption_{k}" for k in range(1, 6)]


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
                s.querySelector(".bar").getBoundingClientRect().width, s.getBoundingClientRect().width])}));""")


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
    assert list(explained[0]) == ["video_id", "mem_score", "std"] + SHARES
    assert [(r["video_id"], r["mem_score"], r["std"]) for r in explained] == \
        [(r["video_id"], r["mem_score"], r["std"]) for r in predictions] and len(explained) == 45

    # The fade rule: the score lives in the last frame. Chance would give it the largest share 1 time in 3 (15 of 45,
    # standard deviation 3.2); measured 39 of 45. Captions carry nothing: measured mean |share| 0.003 against 0.108
    # for the last frame.
    frames = np.array([[float(r[f"frame_{k}"]) for k in (1, 2, 3)] for r in explained])
    captions = np.array([[float(r[f"caption_{k}"]) for k in range(1, 6)] for r in explained])
    last = np.abs(frames).argmax(1) == 2
    assert last.mean() >= 2 / 3, (last.sum(), frames)
    assert np.abs(captions).mean() < 0.1 * np.abs(frames[:, 2]).mean(), (captions, frames)

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
        assert [f"{s:.4f}" for s, _, _ in r["bars"]] == [f"{float(by_id[r['id']][c]) + 0.0:.4f}" for c in SHARES]
    scale = max(abs(s) for r in rows for s, _, _ in r["bars"])
    for s, drawn, whole in (bar for r in rows for bar in r["bars"]):  # a bar's length is its share on one scale
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


def test_untrained_shares_are_near_zero_and_each_is_its_own_occlusion(tiny, synthetic, cache, tmp_path):
    """The tiny model taught only the answer's format reads nothing in the frames or captions: every share is under
    0.02 (measured at most 0.009). And a share is what the column says: the score with all inputs minus the score with
    that frame replaced by the video's mean colour, or that caption by the next video's, scored here by hand."""
    predict.main(map(str, ["--data", synthetic, "--zero-shot", "--model", tiny, "--split", "val", "--cache", cache,
                           "--explain", "--out", tmp_path / "val.csv", "--workers", 0]))
    rows = read_csv(tmp_path / "explain-val.csv")
    assert len(rows) == 45 and np.abs([[float(r[c]) for c in SHARES] for r in rows]).max() < 0.02

    videos = data.load_split(synthetic, "val")[:2]
    processor = model.load_processor(tiny, DEFAULT_MAX_PIXELS)  # predict.py's budget
    stored = FrameCache(cache, 3, model.budget_of(processor)).get(videos[0])
    mean = torch.from_numpy(stored.numpy().mean(axis=(0, 2, 3)).round().astype(np.uint8))
    occluded = stored.clone()
    occluded[2] = mean[:, None, None]
    captions = list(videos[0].captions)
    swapped = captions[:1] + [videos[1].captions[1]] + captions[2:]
    batch, _ = prompt.encode(processor, [stored, occluded, stored], [captions, captions, swapped])
    m = model.load_model(tiny)
    m.eval()
    p = scoring.decode.expected(m, to_model(batch, processor, "cpu"), prompt.answer_ids(processor.tokenizer))
    score = (p * torch.arange(101)).sum(-1) / 100
    row = rows[0]
    assert float(row["mem_score"]) == pytest.approx(score[0].item(), abs=1e-4)
    assert float(row["frame_3"]) == pytest.approx((score[0] - score[1]).item(), abs=1e-4)
    assert float(row["caption_2"]) == pytest.approx((score[0] - score[2]).item(), abs=1e-4)


def test_variants_and_their_batches(tiny, synthetic, cache, tmp_path):
    """1 + N + C variants a video, one after the other, in full batches; a video scored alone has a caption's line
    dropped; --explain decodes expected only, and a page that cannot be written stops the run before the model loads,
    in one line."""
    videos = data.load_split(synthetic, "val")[:3]
    videos[1].captions = videos[1].captions[:2]  # one of your own videos, with two captions
    assert [explain.variants(v, 3) for v in videos] == [9, 6, 9]
    batches = explain.plan(videos, 3, 9)
    assert [len(b) for b in batches] == [9, 9, 6] and sum(batches, []) == explain.rows(videos, 3)
    frames = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 3, 2, 2)
    assert explain.occlude(frames, ["a", "b"], 4)[1] == ["a"]  # alone: no stand-in, the line is dropped
    assert explain.occlude(frames, ["a", "b"], 3, ["x", "y"])[1] == ["x", "b"]

    with pytest.raises(SystemExit):
        predict.main(["--zero-shot", "--model", tiny, "--explain", "--decode", "greedy"])
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
