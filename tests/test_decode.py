"""How a score is read from the model (scoring.decode.py, predict.py --decode): the 101 valid answers as a trie; constrained
and expected decoding never give an invalid answer where greedy does; the expected score is a true expectation over
the answers' probabilities, computed with the prompt's cache exactly as a plain forward computes it; after training
it ranks at least as well as greedy, with fewer ties; and predict.py --videos scores a folder of your own videos."""

import csv
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

import data
from scoring import videos as folder
import model
import predict
import prompt
import train
from plumbing.errors import InputError
from frames import FrameCache, to_model
from scaffold.synthetic import fade, write_video
from scaffold.tiny import make_tiny
from conftest import greedy_equals_generate, script
import scoring.decode
from plumbing import sources

# A toy vocabulary for the pure functions: digit d is token d, end-of-turn 10, a word 11.
END, WORD, V = 10, 11, 12
DIGITS = [[int(c) for c in str(s)] + [END] for s in range(101)]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_valid_answers_as_a_trie(tiny):
    """Qwen's tokenizers split numbers digit by digit: the 101 answers are 1-3 digits and end-of-turn, and the trie
    allows exactly the continuations that keep an answer valid."""
    tokenizer = model.load_processor(tiny).tokenizer
    answers = prompt.answer_ids(tokenizer)
    digit = {str(d): tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    end = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN)
    assert answers[57] == [digit["5"], digit["7"], end] and answers[100] == [digit["1"], digit["0"], digit["0"], end]
    allowed = scoring.decode.trie(answers)
    ids = lambda text: tuple(digit[c] for c in text)  # noqa: E731
    assert allowed[()] == sorted(digit.values())  # a first digit, "0" included (the answer 0)
    assert allowed[ids("0")] == [end]  # no leading zero
    assert allowed[ids("1")] == sorted(list(digit.values()) + [end])
    assert allowed[ids("10")] == sorted([digit["0"], end])  # 10 or 100
    assert allowed[ids("100")] == allowed[ids("57")] == [end] and end in allowed[ids("7")]
    assert ids("57") + (end,) not in allowed and ids("101") not in allowed
    nodes = scoring.decode.prefixes(answers)
    assert len(nodes) == 101 and [len(n) for n in nodes] == sorted(len(n) for n in nodes)  # 10 + 90 + "100"
    mask = scoring.decode.tree_mask(nodes)
    i, j = nodes.index(ids("10")), nodes.index(ids("100"))
    assert mask[j, i] and mask[j, j] and not mask[i, j] and mask.sum() == 10 + 90 * 2 + 3


def chain_rule(token_logprobs, answers):
    """log P(answer) by the chain rule, one answer and one token at a time: the reference for score_logprobs."""
    nodes = scoring.decode.prefixes(answers)
    rows = {(): 0, **{n: 1 + k for k, n in enumerate(nodes)}}
    return torch.tensor([[sum(float(lp[rows[tuple(a[:t])], a[t]]) for t in range(len(a))) for a in answers]
                         for lp in token_logprobs])


def logprobs(*rows):
    """(1 + N, V) log-probabilities: row 0 after the prompt; others {prefix: {token: p}}; unnamed rows uniform."""
    nodes = scoring.decode.prefixes(DIGITS)
    out = torch.full((1 + len(nodes), V), 1.0 / V)
    for prefix, probs in rows:
        row = 0 if prefix == () else 1 + nodes.index(prefix)
        out[row] = 0.0
        for token, p in probs.items():
            out[row, token] = p
    return out.log()


def test_expected_is_an_expectation():
    """P(s) is the product of an answer's token probabilities, renormalised over the 101 answers; the score is its
    mean, the spread its standard deviation: set by hand, then against the chain rule on random log-probabilities."""
    nodes = scoring.decode.prefixes(DIGITS)
    # The model says "4" or "6" (0.4 each), else a word (0.2, not an answer); then "0" and end-of-turn, surely.
    certain = [((4,), {0: 1.0}), ((4, 0), {END: 1.0}), ((6,), {0: 1.0}), ((6, 0), {END: 1.0})]
    two = logprobs(((), {4: 0.4, 6: 0.4, WORD: 0.2}), *certain)
    # "5", then "7" (0.5), "0" (0.25) or end-of-turn (0.25): 57, 50 or 5
    three = logprobs(((), {5: 1.0}), ((5,), {7: 0.5, 0: 0.25, END: 0.25}), ((5, 7), {END: 1.0}), ((5, 0), {END: 1.0}))
    p = scoring.decode.distribution(scoring.decode.score_logprobs(torch.stack([two, three]), DIGITS, nodes))
    assert p[0, 40] == pytest.approx(0.5, abs=1e-6) and p[0, 60] == pytest.approx(0.5, abs=1e-6)  # the word's 0.2 left out
    assert p[1, 57] == pytest.approx(0.5, abs=1e-6) and p[1, 50] == p[1, 5] == pytest.approx(0.25, abs=1e-6)
    mean, argmax, std = scoring.decode.summary(p)
    assert mean.tolist() == pytest.approx([50, 0.5 * 57 + 0.25 * 50 + 0.25 * 5], abs=1e-4)
    hand = np.sqrt(0.5 * (57 - 42.25) ** 2 + 0.25 * (50 - 42.25) ** 2 + 0.25 * (5 - 42.25) ** 2)
    assert std.tolist() == pytest.approx([10, hand], abs=1e-4) and argmax.tolist() == [40, 57]
    assert scoring.decode.spread(list(p)) == [(0.4, pytest.approx(0.1, abs=1e-6)), (0.57, pytest.approx(hand / 100, abs=1e-6))]

    torch.manual_seed(0)
    random = torch.randn(3, 1 + len(nodes), V).mul(3).log_softmax(-1)
    logp = scoring.decode.score_logprobs(random, DIGITS, nodes)
    assert torch.allclose(logp, chain_rule(random, DIGITS), atol=1e-5)
    p = scoring.decode.distribution(logp)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-6)  # the 101 probabilities sum to 1 within 1e-6
    mean, argmax, std = scoring.decode.summary(p)
    for row, m, a, s in zip(p.double().numpy(), mean, argmax, std):
        assert m == pytest.approx((row * np.arange(101)).sum(), abs=1e-3) and a == row.argmax()
        assert s == pytest.approx(np.sqrt((row * (np.arange(101) - m.item()) ** 2).sum()), abs=1e-3)

    # A tokenizer that writes "100" as one token and 10..99 as two digits: the trie and the sums follow its answers.
    merged = DIGITS[:100] + [[WORD, END]]  # WORD stands for the token "100"
    nodes = scoring.decode.prefixes(merged)
    assert scoring.decode.trie(merged)[(1, 0)] == [END] and WORD in scoring.decode.trie(merged)[()]
    random = torch.randn(2, 1 + len(nodes), V).log_softmax(-1)
    assert torch.allclose(scoring.decode.score_logprobs(random, merged, nodes), chain_rule(random, merged), atol=1e-5)


def batch_of(folder_, videos, cache, video=False, labels=None):
    processor = model.load_processor(folder_)
    frames = FrameCache(cache, 3, model.budget_of(processor))
    frames.fill(videos, timed=video)
    clips = [frames.clip(v) if video else (frames.get(v), None) for v in videos]
    batch, label_ids = prompt.encode(processor, [f for f, _ in clips], [v.captions for v in videos], labels,
                                     [s for _, s in clips] if video else None)
    return processor, to_model(batch, processor, "cpu"), label_ids


@pytest.mark.parametrize("family, video", [("tiny", False), ("tiny3", False), ("tiny", True)])
def test_cached_answer_probabilities_equal_a_full_forward(family, video, synthetic, cache, request):
    """The answers' log-probabilities from the prefill's cache and one forward of the trie's nodes (each at its own
    rope position, seeing the prompt and its ancestors) equal a plain forward of the prompt and each whole answer,
    for the base model and under an adapter, on a left-padded batch; the images or one native video input."""
    folder_ = request.getfixturevalue(family)
    videos = data.load_split(synthetic, "val")[:3]
    videos[1].captions = [c + " and then the sun sets" for c in videos[1].captions]  # rows of different lengths
    processor, batch, _ = batch_of(folder_, videos, cache, video)
    assert (batch["attention_mask"] == 0).any()
    answers = prompt.answer_ids(processor.tokenizer)
    torch.manual_seed(0)
    lora = model.add_lora(model.load_model(folder_), 8, 16, dropout=0.0)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    lora.eval()
    for m, context in [(lora, lora.disable_adapter()), (lora, torch.no_grad())]:
        with context:
            cached = scoring.decode.answer_logprobs(m, batch, answers)
            for s in (0, 7, 10, 57, 100):
                _, full, labels = batch_of(folder_, videos, cache, video, [s] * len(videos))
                with torch.no_grad():
                    logits = m(**full).logits[:, :-1].float().log_softmax(-1)
                targets = labels[:, 1:]
                plain = logits.gather(-1, targets.clamp(min=0)[..., None])[..., 0].masked_fill(targets < 0, 0).sum(-1)
                torch.testing.assert_close(cached[:, s], plain, atol=2e-5, rtol=0)


def zero_shot(model_dir, synthetic, cache, decode, capsys):
    """predict.py zero-shot on the 45 validation videos: (scores, invalid count, the CSV's rows)."""
    out = os.path.join(os.path.dirname(model_dir), f"zero-shot-{decode}.csv")
    scores = predict.main(map(str, ["--data", synthetic, "--zero-shot", "--model", model_dir, "--split", "val",
                                    "--cache", cache, "--out", out, "--batch-size", 16, "--workers", 0, "--decode", decode]))
    log = capsys.readouterr().out
    return scores, int(log.split("invalid answers: ")[1].split("/")[0]), read_csv(out)


@pytest.fixture(scope="module")
def untaught(tmp_path_factory):
    """A tiny random Qwen2.5-VL never taught the answer's format: greedy reads random tokens."""
    return make_tiny(str(tmp_path_factory.mktemp("untaught") / "model"), teach=False)


def test_constrained_and_expected_are_never_invalid(untaught, tiny, synthetic, cache, capsys):
    """Zero-shot on a tiny random model that answers random tokens, greedy gives invalid answers and the other two
    none; where greedy's answer is valid (the taught tiny model), constrained gives the same tokens."""
    invalid = {d: zero_shot(untaught, synthetic, cache, d, capsys)[1] for d in scoring.decode.DECODES}
    assert invalid["greedy"] > 0 and invalid["constrained"] == invalid["expected"] == 0, invalid
    _, _, rows = zero_shot(untaught, synthetic, cache, "expected", capsys)
    assert list(rows[0]) == ["video_id", "mem_score", "argmax", "std"]
    assert all(0 <= float(r["mem_score"]) <= 1 and 0 <= float(r["std"]) <= 0.5 for r in rows)

    processor, batch, _ = batch_of(tiny, data.load_split(synthetic, "val")[:16], cache)
    tokenizer = processor.tokenizer
    end, pad = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN), tokenizer.pad_token_id
    answers = prompt.answer_ids(tokenizer)
    m = model.load_model(tiny)
    m.eval()
    free = scoring.decode.greedy(m, batch, end, pad, 4).tolist()
    constrained = scoring.decode.greedy(m, batch, end, pad, 4, scoring.decode.trie(answers)).tolist()
    valid = [i for i, row in enumerate(free) if row[:row.index(end) + 1 if end in row else None] in answers]
    assert len(valid) >= 8  # the taught model mostly answers validly
    for i, row in enumerate(constrained):
        row = row[:row.index(end) + 1]
        assert row in answers and (i not in valid or row == free[i][:len(row)])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen_vl"])
def test_greedy_decodes_a_long_answer_as_generate(family, untaught, synthetic, cache, tmp_path, request):
    """Zero-shot's budget, scoring.decode.ZERO_SHOT_TOKENS new tokens, on both families: greedy gives model.generate's greedy
    tokens with the same stop tokens (end-of-turn and end-of-text). A tiny model never taught to stop runs the whole
    budget; on a taught one, the decoding stops with the last answer to end."""
    taught = request.getfixturevalue("tiny" if family == "qwen2_5_vl" else "tiny_qvl")
    if family == "qwen_vl":
        untaught = make_tiny(str(tmp_path / "untaught"), family, teach=False)
    videos = data.load_split(synthetic, "val")[:4]
    for folder_, stops_itself in [(untaught, False), (taught, True)]:
        processor, batch, _ = batch_of(folder_, videos, cache)
        tokenizer = processor.tokenizer
        stops = prompt.stop_ids(tokenizer)
        assert stops[0] == tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN) and len(stops) == 2
        tokens = greedy_equals_generate(model.load_model(folder_), batch, stops, tokenizer.pad_token_id,
                                        scoring.decode.ZERO_SHOT_TOKENS)
        stop = torch.isin(tokens, torch.tensor(stops))
        if stops_itself:  # every answer ends, and the decoding with the last of them
            assert stop.any(1).all() and stop.int().argmax(1).max() == tokens.shape[1] - 1 < scoring.decode.ZERO_SHOT_TOKENS
        else:  # some answer never ends: the whole budget
            assert tokens.shape[1] == scoring.decode.ZERO_SHOT_TOKENS and not stop.any(1).all()


def test_expected_ranks_at_least_as_well_after_training(trained, synthetic, cache, tmp_path, capsys):
    """On the learnable synthetic task, train.py's held-out evaluation (train.evaluate) in each mode: the expected
    score ranks the held-out videos at least as well as greedy's integers (SRCC at most 0.01 below), with more
    distinct values; nothing is invalid. predict.py takes the run's --decode unless told otherwise."""
    out, code, log = trained
    assert code == 0, log
    config = json.loads((out / "config.json").read_text())
    assert config["decode"] == "greedy"
    settings = {f.name: config[f.name] for f in dataclasses.fields(train.Config)}
    cfg = train.Config(**dict(settings, eval_batch_size=16, workers=0))
    processor = model.load_processor(cfg.model)
    frames = FrameCache(cache, cfg.frames, model.budget_of(processor))
    labels = sources.read_labels(os.path.join(synthetic, "test_labels.csv"))
    videos = data.load_split(synthetic, "val") + data.load_split(synthetic, "test")
    for v in videos:
        v.score = labels.get(v.video_id, v.score)
    net = model.load_adapter(model.load_model(cfg.model), str(out / "adapter"), cfg.model)
    results = {}
    for decode in scoring.decode.DECODES:
        cfg.decode = decode
        m, scores, _ = train.evaluate(cfg, net, processor, videos, frames, round(config["train_mean"]))
        results[decode] = dict(srcc=m["srcc"], invalid=m["invalid"], distinct=len(set(scores)))
    # measured: SRCC 0.75 (greedy, 9 distinct scores) and 0.78 (expected, 90) on these 90 videos
    assert all(r["invalid"] == 0 for r in results.values()), results
    assert results["expected"]["srcc"] >= results["greedy"]["srcc"] - 0.01, results
    assert results["expected"]["distinct"] > results["greedy"]["distinct"], results

    # the run's decode unless given: a copy of the run that was evaluated with expected
    run = tmp_path / "run"
    shutil.copytree(out / "adapter", run / "adapter")
    (run / "config.json").write_text(json.dumps(dict(config, decode="expected")))
    for flags, columns in [([], ["video_id", "mem_score", "argmax", "std"]), (["--decode", "greedy"], None)]:
        predict.main(map(str, ["--data", synthetic, "--adapter", run, "--split", "val", "--cache", cache, "--workers", 0,
                               "--out", tmp_path / "val.csv", *flags]))
        rows = read_csv(tmp_path / "val.csv")
        assert list(rows[0]) == (columns or ["video_id", "mem_score"]) and len(rows) == 45
    assert "invalid answers: 0/45" in capsys.readouterr().out


def test_decode_is_a_setting_of_train_and_cv(tmp_path):
    """train.py and cv.py take --decode (saved in config.json), and a resumed run may change it: it changes how a run
    is evaluated, not what it learns."""
    import cv

    assert train.parse_args(["--decode", "expected"])[1].decode == "expected"
    assert cv.parse_args(["--decode", "constrained"])[1].decode == "constrained"
    with pytest.raises(InputError, match="--decode must be one of"):
        train.Config(decode="sampled")
    cfg = train.Config(out=str(tmp_path / "run"))
    train.prepare_out(cfg, resume=False, overwrite=False)
    (tmp_path / "run" / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))  # as train.main saves it
    train.prepare_out(train.Config(out=cfg.out, decode="expected"), resume=True, overwrite=False)
    with pytest.raises(InputError, match="settings that differ"):
        train.prepare_out(train.Config(out=cfg.out, r=8), resume=True, overwrite=False)


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory):
    """A folder of your own videos: one clip in each container, a subfolder with a file of the same name, a file that
    is not a video, and a broken one."""
    root = tmp_path_factory.mktemp("my-videos")
    rng = np.random.default_rng(0)
    for name in ["beach.mp4", "dog.mov", "party.mkv", "snow.webm", "stage.avi", "trip/beach.mp4"]:
        os.makedirs(os.path.dirname(root / name), exist_ok=True)
        write_video(str(root / name), fade(rng, 24, 64)[0])
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "notes.txt").write_text("not a video either")
    return root


def test_scores_a_folder_of_your_own_videos(trained, own_videos, cache, tmp_path):
    """predict.py --videos: one row a readable video, ranked by score, the broken file listed and skipped; captions
    written by the base model when none are given, read from a file when they are; --explain's shares in the ranking's
    order (tests/test_explain.py checks them and the page on a split)."""
    out, code, log = trained
    assert code == 0, log

    def score(*flags):
        code, out_, err = script("predict.py", "--videos", own_videos, "--adapter", out, "--cache", cache, *flags)
        assert code == 0, out_ + err
        return out_ + err

    log = score("--recursive", "--decode", "expected", "--out", tmp_path / "all.csv", "--sheet", tmp_path / "all.png",
                "--explain", "--report", tmp_path / "all.html")
    rows = read_csv(tmp_path / "all.csv")
    explained = read_csv(tmp_path / f"explain-{own_videos.name}.csv")  # beside the ranking, in its order
    assert [(r["video_id"], r["mem_score"]) for r in explained] == [(r["video_id"], r["mem_score"]) for r in rows]
    assert all(r["caption_5"] for r in explained) and (tmp_path / "all.html").stat().st_size > 10_000
    assert sorted(r["video_id"] for r in rows) == ["beach.mp4", "dog.mov", "party.mkv", "snow.webm", "stage.avi",
                                                    "trip/beach.mp4"]
    scores = [float(r["mem_score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert "6 readable videos, 1 skipped" in log and "broken.mp4" in log and "6 videos captioned by the base model" in log
    assert all(r["captions_from"] == "model" and sum(bool(r[f"caption_{k}"]) for k in range(1, 6)) >= 3 for r in rows)
    assert (tmp_path / "all.png").stat().st_size > 10_000

    captions = tmp_path / "captions.csv"
    with open(captions, "w", newline="") as f:
        csv.writer(f).writerows([["video", "caption"], ["dog.mov", "a dog runs on the beach"],
                                 ["beach.mp4", "waves on a beach"], ["beach.mp4", "a quiet  shore"]])
    log = score("--captions", captions, "--out", tmp_path / "top.csv")  # not recursive: trip/ is left out
    rows = {r["video_id"]: r for r in read_csv(tmp_path / "top.csv")}
    assert sorted(rows) == ["beach.mp4", "dog.mov", "party.mkv", "snow.webm", "stage.avi"]
    assert [rows["beach.mp4"][f"caption_{k}"] for k in range(1, 4)] == ["waves on a beach", "a quiet shore", ""]
    assert rows["dog.mov"]["captions_from"] == "file" and rows["party.mkv"]["captions_from"] == "model"
    assert list(rows["dog.mov"])[:2] == ["video_id", "mem_score"] and "3 videos captioned by the base model" in log

    videos = folder.find_videos(str(own_videos), recursive=True)
    with open(captions, "a") as f:
        f.write("holiday.mp4,a video that is not there\n")
    with pytest.raises(InputError, match=r"line 5: no video 'holiday.mp4'"):
        folder.read_captions(str(captions), videos)
