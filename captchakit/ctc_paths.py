"""Paths of a CTC head's columns that spell a text of a length labels have.

A CTC reader's best column path can spell a text of a length no label has: a character held over
a blank reads twice, two neighbours merge into one. When the labels' lengths are known (the
settings' min_length to length), `path_of_length` finds the best path among those that spell an
allowed length, and `length_mass` the probability of spelling an allowed length at all, so that a
reading's confidence can be the probability of its text given that labels have those lengths.
Both walk the columns once over the states (k, s): k characters spelt so far, s the class of the
latest column. A column of class c after a column of c continues the same character; after any
other class it spells one more.
"""

from __future__ import annotations

import numpy as np


def path_of_length(logp, blank: int, shortest: int, longest: int) -> list[int] | None:
    """The most probable column path of (T, K) log-probabilities `logp` (numpy) that spells from
    `shortest` to `longest` characters, or None when T columns cannot (a Viterbi pass over (k, s))."""
    columns, classes = logp.shape
    score = np.full((longest + 1, classes), -np.inf)  # (k, s)
    score[0, blank] = logp[0, blank]
    if longest:
        score[1] = np.where(np.arange(classes) == blank, -np.inf, logp[0])
    back = np.zeros((columns, longest + 1, classes, 2), dtype=np.int64)  # the state each came from
    ks = np.arange(longest + 1)
    for t in range(1, columns):
        order = np.argsort(score, axis=1)[:, ::-1][:, :2]  # the two best classes at each k: (k, 2)
        first, second = score[ks, order[:, 0]], score[ks, order[:, 1]]
        # A new character c at k comes from k - 1's best class other than c.
        enter_from = np.where(order[:-1, :1] == np.arange(classes), order[:-1, 1:], order[:-1, :1])  # (k-1, K)
        enter = np.where(order[:-1, :1] == np.arange(classes), second[:-1, None], first[:-1, None])
        new = np.full_like(score, -np.inf)
        stay = score[1:]  # the same character held: (k, c) -> (k, c)
        take = stay >= enter
        new[1:] = np.where(take, stay, enter) + logp[t]
        back[t, 1:, :, 0] = np.where(take, ks[1:, None], ks[:-1, None])
        back[t, 1:, :, 1] = np.where(take, np.arange(classes), enter_from)
        new[:, blank] = first + logp[t, blank]  # a blank follows anything and spells nothing
        back[t, :, blank, 0], back[t, :, blank, 1] = ks, order[:, 0]
        score = new
    k, s = np.unravel_index(np.argmax(score[shortest:]), score[shortest:].shape)
    if not np.isfinite(score[shortest + k, s]):
        return None
    state, path = (shortest + int(k), int(s)), []
    for t in range(columns - 1, -1, -1):
        path.append(state[1])
        state = tuple(back[t, state[0], state[1]])
    return path[::-1]


def length_mass(logp, blank: int, shortest: int, longest: int):
    """(N,) the total probability of the column paths of (N, T, K) log-probabilities `logp` that
    spell from `shortest` to `longest` characters (the forward pass of `path_of_length`, summed)."""
    import torch  # here, not above: captcha_gen.py imports the codec, and so this, without torch

    logp = logp.double()
    n, columns, classes = logp.shape
    score = logp.new_full((n, longest + 1, classes), -torch.inf)  # (N, k, s), log-probabilities
    score[:, 0, blank] = logp[:, 0, blank]
    chars = torch.arange(classes, device=logp.device) != blank
    score[:, 1, chars] = logp[:, 0, chars]
    for t in range(1, columns):
        total = score.logsumexp(2, keepdim=True)  # (N, k, 1)
        # A new character c at k: every class at k - 1 but c itself, log(total - p(c)).
        share = (score[:, :-1] - total[:, :-1]).exp().clamp(max=1.0)
        enter = torch.where(total[:, :-1].isfinite(), total[:, :-1] + torch.log1p(-share), -torch.inf)
        new = torch.full_like(score, -torch.inf)
        new[:, 1:] = torch.logaddexp(score[:, 1:], enter) + logp[:, t, None, :]
        new[:, :, blank] = total[:, :, 0] + logp[:, t, None, blank]
        score = new
    return score[:, shortest:].flatten(1).logsumexp(1).exp().float()
