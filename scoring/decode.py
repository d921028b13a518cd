"""
Reading a score from the model (predict.py --decode, train.py's held-out evaluation, cv.py's zero-shot), then the
paper's post-processing:

    greedy       the paper's: the likeliest token at each step until the answer ends, then prompt.parse_score reads a
                 number 0-100 in the text; an answer without one is invalid and gets the training mean (postprocess,
                 the one place that fills it)
    constrained  greedy among the valid answers only: each step picks the likeliest token that keeps the answer one
                 of the 101 valid ones (an integer 0-100, then end-of-turn). Never invalid
    expected     the probability the model gives each of the 101 answers (the product of its tokens' probabilities),
                 renormalised over them; the score is their expectation: continuous, valid, few ties, and with a
                 spread (the standard deviation) beside it

Both new modes are derived from the 101 answers' token sequences alone (prompt.answer_ids: the tokenizer's encoding
of each number, then end-of-turn), as a trie: they stay exact for a tokenizer that does not split numbers into digits.
The trie's functions are pure functions of token ids and log-probabilities; the decoders run the model; the
predictions and raw answers are written as CSV here too, the one format every script writes them in.
"""

import inspect
from contextlib import nullcontext

import torch
from tqdm import tqdm

import frames
import prompt
from model import virtual_tokens
from plumbing.errors import InputError
from plumbing.files import write_csv
from qwen_vl.modeling import QWenLMHeadModel

PAPER_TRAIN_MEAN = 80  # the paper's fill value for invalid zero-shot answers (train+val mean score 0.801)
DECODES = ("greedy", "constrained", "expected")  # how a score is read from the model (above); greedy: the paper's
# Greedy decoding's budget zero-shot: the base model answers in sentences, and the paper read its score in a paragraph.
# 256 new tokens hold a paragraph (Qwen-VL-Chat's own generation_config allows 512); decoding stops where the turn ends.
ZERO_SHOT_TOKENS = 256
SCORES = torch.arange(101)  # the valid answers, in the order of prompt.answer_ids


# -----------------------------------------------------------------------------
# the valid answers as a trie: constrained and expected decoding


def trie(answers):
    """{prefix (a tuple of token ids): the token ids that may follow it} over the answers' token sequences: what
    constrained decoding may pick after each prefix. Every answer ends with end-of-turn, which no answer holds
    elsewhere, so a path through the trie stops exactly on a whole answer."""
    allowed = {}
    for answer in answers:
        for t in range(len(answer)):
            allowed.setdefault(tuple(answer[:t]), set()).add(answer[t])
    return {prefix: sorted(tokens) for prefix, tokens in allowed.items()}


def prefixes(answers):
    """The answers' proper prefixes but the empty one, each once, shorter first (a parent before its children): the
    trie's inner nodes. Expected decoding feeds each one's last token to read the distribution that follows it.
    With Qwen's digits: the 10 first digits, the 90 pairs 10..99, and 100 (before its end-of-turn)."""
    return sorted({tuple(a[:t]) for a in answers for t in range(1, len(a))}, key=lambda p: (len(p), p))


def tree_mask(nodes):
    """(N, N) bool: node i may attend to node j when j's prefix begins i's (its ancestors and itself). With it, the
    trie's nodes go through the model as one row of N tokens, each seeing what it would see on its own."""
    return torch.tensor([[len(q) <= len(p) and p[:len(q)] == q for q in nodes] for p in nodes])


def score_logprobs(token_logprobs, answers, nodes):
    """
    token_logprobs: (B, 1 + N, V) log-softmax of the next token after the prompt (row 0) and after each node of
    `nodes` (row 1 + k). Returns (B, len(answers)): the log-probability of each whole answer, the sum over its tokens
    of the log-probability of that token after the tokens before it (not renormalised).
    """
    row = {p: 1 + k for k, p in enumerate(nodes)}
    row[()] = 0
    longest = max(map(len, answers))
    # (answer, step) -> where its token's log-probability is; steps past an answer's end point at row 0 and weigh 0
    rows = torch.tensor([[row[tuple(a[:t])] if t < len(a) else 0 for t in range(longest)] for a in answers])
    tokens = torch.tensor([[a[t] if t < len(a) else 0 for t in range(longest)] for a in answers])
    real = torch.tensor([[t < len(a) for t in range(longest)] for a in answers])
    picked = token_logprobs[:, rows.to(token_logprobs.device), tokens.to(token_logprobs.device)]  # (B, answers, steps)
    return picked.masked_fill(~real.to(picked.device), 0).sum(-1)


def distribution(logprobs):
    """(B, 101) log-probabilities of the answers -> P(s), renormalised over the 101: the mass the model puts on
    anything else (a word, a longer number) is left out, as greedy's fill leaves it out."""
    return logprobs.float().softmax(-1)


def summary(p):
    """P(s) (B, 101) -> (expected score, argmax, standard deviation), each (B,), in score units 0-100."""
    s = SCORES.to(p.device, p.dtype)
    mean = (p * s).sum(-1)
    std = (p * (s - mean[:, None]) ** 2).sum(-1).clamp(min=0).sqrt()
    return mean, p.argmax(-1), std


# -----------------------------------------------------------------------------
# decoding, then post-processing


def generate(model, processor, videos, cache, batch_size=8, workers=0, max_new_tokens=None, progress=True, video=False,
             decode="greedy"):
    """
    The model's answer for each video, in order (see above): with `decode` greedy or constrained, the text it
    wrote; with expected, its probabilities of the 101 scores, a (101,) tensor. Batches are made by `workers`
    processes; with `video`, the frames of each go in as one native video input. max_new_tokens: greedy's budget
    (token_budget), the longest valid answer unless told.
    """
    assert decode in DECODES, decode
    batches = frames.loader(frames.Batches(videos, cache, processor, labelled=False, video=video),
                            frames.chunks(len(videos), batch_size), workers)
    return answer(model, processor, batches, decode, max_new_tokens, progress)


def answer(model, processor, batches, decode, max_new_tokens=None, progress=True, desc="predicting"):
    """The model's answer (see generate) for each row of `batches`, prompt.encode's inputs from frames.loader."""
    tokenizer = processor.tokenizer
    ends, pad = prompt.stop_ids(tokenizer), tokenizer.pad_token_id
    answers_ids = prompt.answer_ids(tokenizer)
    allowed = trie(answers_ids) if decode == "constrained" else None
    # unless told, the longest valid answer: all that a fine-tuned model needs to say; constrained decoding says no more
    steps = max_new_tokens if allowed is None and max_new_tokens else max(map(len, answers_ids))
    was_training = model.training
    model.eval()
    answers = []
    for batch, _ in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        batch = frames.to_model(batch, processor, model.device)
        with autocast(model.device):
            if decode == "expected":
                answers += list(expected(model, batch, answers_ids).cpu())
            else:
                tokens = greedy(model, batch, ends, pad, steps, allowed)
                answers += tokenizer.batch_decode(tokens, skip_special_tokens=True)
    model.train(was_training)
    return answers


@torch.no_grad()
def greedy(model, batch, end, pad, max_new_tokens, allowed=None):
    """
    Greedy decoding as token ids (B, at most max_new_tokens): one forward pass over the prompts that computes the
    logits of their last position only (the prefill), then one cached step per further token, until every answer has
    ended with `end` (a token id, or a list of them: prompt.stop_ids). A fine-tuned model's score is at most three
    digits and end-of-turn: a prefill and at most three steps; a base model's sentence takes one step a token, the
    batch's rows together, until the last of them ends. The same tokens as model.generate(do_sample=False) with
    eos_token_id=end, without its per-step machinery; an answer that ended is padded with `pad`.
    With `allowed` (trie of the valid answers), each step picks the likeliest token that keeps the answer
    valid: constrained decoding.
    """
    base, cache, logits, mask = prefill(model, batch)
    token = _pick(logits[:, -1], [], allowed)
    ends = torch.as_tensor(end, device=token.device)
    tokens, done = [token], torch.isin(token, ends)
    for _ in range(max_new_tokens - 1):
        if done.all():
            break
        position = _positions(base, mask, 1)  # the new token's: right after the tokens so far
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        out = base(input_ids=token[:, None], attention_mask=mask, position_ids=position, **cache, use_cache=True)
        token = torch.where(done, pad, _pick(out.logits[:, -1], tokens, allowed))
        tokens.append(token)
        done |= torch.isin(token, ends)
    return torch.stack(tokens, 1)


def prefill(model, batch):
    """The prompts through the model with a fresh cache, computing the logits of their last position only: (the base
    model under peft's wrapper, which the cached steps call; the cache, as the forward's keyword; the logits (B, 1, V);
    the prompts' mask as the steps see it, seen_by_steps)."""
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache = {_cache_argument(base): DynamicCache()}
    logits = model(**batch, **cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
    return base, cache, logits, seen_by_steps(model, batch)


def seen_by_steps(model, batch):
    """The attention mask of the prompts as the cached steps after the prefill see them. Those steps go to the base
    model (its adapter's layers in it): prompt tuning's wrapper would put its learned tokens before each step again,
    and they are in the cache already, before the prompt (model.virtual_tokens)."""
    mask = batch["attention_mask"]
    return torch.cat([mask.new_ones(len(mask), virtual_tokens(model)), mask], dim=1)


def _pick(logits, tokens, allowed):
    """The likeliest next token of each row; with `allowed`, among those that may follow the row's tokens so far (a
    row that has ended may pick none: its pick is replaced by padding)."""
    if allowed is None:
        return logits.argmax(-1)
    prefixes = torch.stack(tokens, 1).tolist() if tokens else [[]] * len(logits)
    barred = torch.ones(logits.shape, dtype=torch.bool)
    for i, prefix in enumerate(prefixes):
        barred[i, allowed.get(tuple(prefix), [])] = False
    return logits.masked_fill(barred.to(logits.device), float("-inf")).argmax(-1)


def _positions(base, mask, depth):
    """
    The rope positions of new tokens `depth` (1: the next; (1, K) for several) places after the tokens `mask` (B, L)
    covers. Qwen2-VL and its successors: in all three (time, height, width) sections, the count of real tokens before
    them, shifted as the prefill shifted the text after the frames (rope_deltas, kept by the model). Qwen-VL-Chat:
    the index in the padded row, as its official code counts every position (and as its prefill did here).
    """
    if isinstance(base, QWenLMHeadModel):
        return (mask.shape[1] + depth - 1) * torch.ones_like(mask[:, :1])
    return (mask.sum(1, keepdim=True) + depth - 1 + base.model.rope_deltas).expand(3, -1, -1)


@torch.no_grad()
def answer_logprobs(model, batch, answers):
    """
    (B, len(answers)) log-probabilities the model gives each whole answer (token ids, prompt.answer_ids), exactly, in
    two forward passes: the prefill, whose last position gives the first token's, then the trie's inner nodes
    (prefixes, 101 with Qwen's digits) as one row of tokens a video on top of the prompt's cache, each node at
    its own rope position and seeing the prompt and its own ancestors only (tree_mask): what it would see as
    its own sequence. So the prompt's cache is shared, not repeated for each answer (101 copies of it would take
    ~5 GB a video for the 7B model at ~900 tokens, in bf16): a video costs one prefill and 101 more tokens.
    """
    nodes = prefixes(answers)
    base, cache, first, mask = prefill(model, batch)
    n, device = len(mask), mask.device
    tokens = torch.tensor([node[-1] for node in nodes], device=device).expand(n, -1)
    depth = torch.tensor([len(node) for node in nodes], device=device)
    # a 4-d mask (video, 1, node, prompt + nodes), True where a node may look; the model takes it as it is
    seen = torch.cat([mask.bool()[:, None, None, :].expand(-1, 1, len(nodes), -1),
                      tree_mask(nodes).to(device).expand(n, 1, -1, -1)], dim=-1)
    position = _positions(base, mask, depth[None])  # a node's: after the prompt and its ancestors
    rest = base(input_ids=tokens, attention_mask=seen, position_ids=position, **cache, use_cache=True).logits
    return score_logprobs(torch.cat([first, rest], 1).float().log_softmax(-1), answers, nodes)


def expected(model, batch, answers):
    """P(s) of each answer, renormalised over them (distribution): (B, 101) with prompt.answer_ids."""
    return distribution(answer_logprobs(model, batch, answers))


def _cache_argument(model):
    # transformers renamed the forward's `past_key_values` to `cache` (5.2x); the GPU image has an earlier release
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def token_budget(given, decode, zero_shot):
    """--max-new-tokens resolved: greedy decoding's budget of new tokens, `given` or else ZERO_SHOT_TOKENS zero-shot;
    None with an adapter (generate's default: the longest valid answer) and for the other decodes, which read the
    valid answers only (a budget given to them is an error)."""
    if given is not None and given < 1:
        raise InputError(f"--max-new-tokens must be at least 1, not {given}")
    if given is not None and decode != "greedy":
        raise InputError(f"--max-new-tokens is greedy decoding's budget: --decode {decode} reads valid answers only")
    return given or (ZERO_SHOT_TOKENS if zero_shot and decode == "greedy" else None)


def postprocess(answers, fill):
    """
    Answers (generate's) -> scores 0-100, and how many were invalid: the one place where an invalid answer is filled.
    A text (greedy, constrained) gives the score prompt.parse_score reads in it, an integer, or `fill` when it has none
    (invalid); a distribution over the 101 scores (expected) gives its expectation, a float, never invalid.
    """
    if answers and torch.is_tensor(answers[0]):
        return summary(torch.stack(answers))[0].tolist(), 0
    parsed = [prompt.parse_score(a) for a in answers]
    return [fill if p is None else p for p in parsed], sum(p is None for p in parsed)


def describe_invalid(invalid, n, fill):
    """The line that counts the invalid answers and says what replaced them."""
    return f"invalid answers: {invalid}/{n} ({100 * invalid / max(n, 1):.2f}%), replaced by {fill}"


def spread(answers):
    """Distributions over the 101 scores -> their argmax and standard deviation, as (argmax, std) pairs in 0-1 units
    (the mem_score's); None for text answers, which have no distribution."""
    if not answers or not torch.is_tensor(answers[0]):
        return None
    _, argmax, std = summary(torch.stack(answers))
    return [(a / 100, s / 100) for a, s in zip(argmax.tolist(), std.tolist())]


def autocast(device):
    """bf16 autocast on GPU; on CPU everything stays fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


def prediction_table(videos, scores, answers=None):
    """(header, rows) of the predictions: video_id,mem_score (0-1); where the answers are distributions (--decode
    expected), the expectation keeps 4 decimals and their argmax and standard deviation follow, in 0-1 units too."""
    extra = spread(answers)
    if extra is None:
        return ["video_id", "mem_score"], [[v.video_id, f"{s / 100:.2f}"] for v, s in zip(videos, scores)]
    return ["video_id", "mem_score", "argmax", "std"], [[v.video_id, f"{s / 100:.4f}", f"{a:.2f}", f"{d:.4f}"]
                                                        for v, s, (a, d) in zip(videos, scores, extra)]


def write_predictions(path, videos, scores, answers=None):
    """prediction_table as CSV, written to a temporary file and renamed so a reader never sees half of it."""
    write_csv(path, *prediction_table(videos, scores, answers))


def write_answers(path, videos, answers):
    """The raw text answers as CSV, video_id,answer: each whole answer, quoted where it holds a comma, a quote or a line
    break, so that a CSV reader gives it back exactly, to be read again by any rule."""
    write_csv(path, ["video_id", "answer"], [[v.video_id, a] for v, a in zip(videos, answers)])
