"""
How a score is read from the model's answer (predict.py --decode, and train.py's held-out evaluation):

    greedy       the paper's: the likeliest token at each step, then a regular expression reads a number 0-100 from
                 the text; an answer without one is invalid and gets the training mean
    constrained  greedy among the valid answers only: each step picks the likeliest token that keeps the answer one
                 of the 101 valid ones (an integer 0-100, then end-of-turn). Never invalid
    expected     the probability the model gives each of the 101 answers (the product of its tokens' probabilities),
                 renormalised over them; the score is their expectation: continuous, valid, few ties, and with a
                 spread (the standard deviation) beside it

Both new modes are derived from the 101 answers' token sequences alone (prompt.answer_ids: the tokenizer's encoding
of each number, then end-of-turn), as a trie: they stay exact for a tokenizer that does not split numbers into digits.
Pure functions of token ids and log-probabilities; predict.py runs the model.
"""

import torch

SCORES = torch.arange(101)  # the valid answers, in the order of prompt.answer_ids


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
