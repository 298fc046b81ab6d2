"""A-LLMRec's stage-2 prompt: text with placeholder tokens, tokenized into fixed-shape arrays.

The prompt (ghdtjr/A-LLMRec ``models/a_llmrec_model.py``, ``pre_train_phase2`` / ``generate``;
DESIGN.md 6), for the movie domain::

    [UserRep] is a user representation.This user has watched "t1"[HistoryEmb],"t2"[HistoryEmb],...
    in the previous. Recommend one next movie for this user to watch next from the following movie
    title set, "c1"[CandidateEmb],"c2"[CandidateEmb],.... The recommendation is

(one line; the reference writes no space after "representation." and joins the titles with
"," alone, both kept). The target is the quoted title followed by the end-of-sequence token
(``text_output = '"title"' + eos``). History = the user's last ``history`` (10) items, oldest
first; candidates = the ``C`` (20) titles in the order shown. Other domains swap the words
(``DOMAINS``: game/played/play, item/bought/buy).

Placeholders: ``[UserRep]``, ``[HistoryEmb]``, ``[CandidateEmb]`` are added special tokens
(``Tokenizer.add_special_tokens``); their positions receive soft tokens (the projected user
representation, then the projected joint embedding of the title just before each
placeholder), so their rows of the embedding table are never read. The reference prepends
the user vector before the whole tokenized prompt (before OPT's BOS); here it sits at the
``[UserRep]`` placeholder, which is the same position for a tokenizer without a BOS token
(SmolLM2) and right after BOS otherwise.

Soft slots: every token position gets ``slot`` (-1: a real token; 0: the user vector; ``1 + j``:
history item j; ``1 + history + c``: the c-th candidate shown) and each row gets
``soft_items`` [history + C] (dense item ids; -1 where a user has fewer than ``history`` items).

Arrays are padded to widths rounded up to ``bucket`` (32) tokens so that jitted consumers
compile once per bucket, not once per batch.
"""

from __future__ import annotations

from jaxrec.errors import JaxrecError
import dataclasses
import logging
import re
from typing import Sequence

import numpy as np

from jaxrec.lm import LMError, Tokenizer

log = logging.getLogger("jaxrec.methods.allmrec")

USER_TOKEN = "[UserRep]"
HISTORY_TOKEN = "[HistoryEmb]"
CANDIDATE_TOKEN = "[CandidateEmb]"
SPECIAL_TOKENS = (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN)
MISSING_TITLE = "No Title"  # the reference's fallback (find_item_text: text_name_dict[t].get(i, 'No Title'))


class PromptError(JaxrecError, ValueError):
    """A prompt cannot be built: a tokenizer without the placeholder tokens, a title that
    breaks the prompt, or a prompt longer than the model's context. The message names them."""


@dataclasses.dataclass(frozen=True)
class PromptDomain:
    """The dataset's words: ``past`` ("watched"), ``noun`` ("movie"), ``verb`` ("watch")."""

    past: str
    noun: str
    verb: str


#: The reference's three wordings (Movies_and_TV; Video_Games; Luxury_Beauty / Toys_and_Games).
DOMAINS: dict[str, PromptDomain] = {
    "movie": PromptDomain("watched", "movie", "watch"),
    "game": PromptDomain("played", "game", "play"),
    "item": PromptDomain("bought", "item", "buy"),
}
_DATASET_DOMAINS = ((r"^ml-|movie|film|netflix", "movie"), (r"video[ _-]?games?", "game"))


def domain_for(name: str) -> str:
    """``domain`` "auto" resolved from a dataset name: MovieLens / Movies -> "movie", Video Games ->
    "game", everything else (Toys_and_Games included) "item" (the reference's Beauty/Toys wording)."""
    low = name.lower()
    for pattern, domain in _DATASET_DOMAINS:
        if re.search(pattern, low):
            return domain
    return "item"


def get_domain(domain: str, dataset_name: str = "") -> PromptDomain:
    """The ``PromptDomain`` of ``domain`` ("auto" | a key of ``DOMAINS``); PromptError otherwise."""
    key = domain_for(dataset_name) if domain == "auto" else domain
    if key not in DOMAINS:
        raise PromptError(f"prompt domain {domain!r}: expected 'auto' or one of {', '.join(DOMAINS)}")
    return DOMAINS[key]


def prompt_pieces(domain: PromptDomain, history_titles: Sequence[str], candidate_titles: Sequence[str]) -> list[str]:
    """The reference prompt (module docstring) as pieces: text and placeholder tokens alternate
    (``pieces[1::2]`` are the placeholders the template puts; catalogue titles sit only inside
    the text pieces, which are tokenized as plain text)."""
    d = domain
    pieces = ["", USER_TOKEN, f" is a user representation.This user has {d.past} "]
    for j, t in enumerate(history_titles):
        pieces[-1] += f'{"," if j else ""}"{t}"'
        pieces += [HISTORY_TOKEN, ""]
    pieces[-1] += (f" in the previous. Recommend one next {d.noun} for this user to {d.verb} next from the following "
                   f"{d.noun} title set, ")
    for c, t in enumerate(candidate_titles):
        pieces[-1] += f'{"," if c else ""}"{t}"'
        pieces += [CANDIDATE_TOKEN, ""]
    pieces[-1] += ". The recommendation is "
    return pieces


def prompt_text(domain: PromptDomain, history_titles: Sequence[str], candidate_titles: Sequence[str]) -> str:
    """The reference prompt (module docstring) for these titles, ending with "The recommendation is "."""
    return "".join(prompt_pieces(domain, history_titles, candidate_titles))


def target_text(title: str) -> str:
    """The answer the LM is trained to produce (before the end-of-sequence token): ``"title"``."""
    return f'"{title}"'


#: Fields that tell items of one title apart (``item_titles``' ``distinguish="auto"``: the first present).
DISTINGUISH_FIELDS = ("release_year", "year", "brand")


def normalize_title(text: str) -> str:
    """Lower case, quotes and surrounding punctuation stripped, whitespace collapsed: how a
    generated answer is compared with titles (``stage2.match_candidate``)."""
    text = " ".join(text.lower().replace('"', " ").split())
    return text.strip(" .,;:!?'")


def shared_titles(titles: Sequence[str]) -> dict[str, list[int]]:
    """``{normalized title: [item, ...]}`` of the titles (``normalize_title``) that several items share."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(titles):
        groups.setdefault(normalize_title(t), []).append(i)
    return {t: items for t, items in groups.items() if len(items) > 1}


def _field_text(v) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        v = " ".join(str(x) for x in v if str(x).strip())
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return " ".join(str(v).split())


def item_titles(item_features: dict, num_items: int, field: str = "auto",
                source: str = "dataset", distinguish: str | None = "auto") -> tuple[list[str], int]:
    """(titles [I] of str, number of items given ``MISSING_TITLE``) from a dataset's item features.

    ``field`` "auto" takes ``movie_title`` (MovieLens atomic files), else ``title`` (Amazon).
    Token lists are joined by one space; empty titles get the reference's "No Title" and are
    counted (and logged). A title several items share (ml-100k: 22 titles of 45 items, e.g.
    ``Cape Fear`` 1962 and 1991) gets `` (<value>)`` of the ``distinguish`` field appended, for
    those items only (every other title stays the reference's): "auto" takes the first of
    ``DISTINGUISH_FIELDS`` the items have (MovieLens ``release_year``; Amazon ``brand``); None
    appends nothing. The titles still shared after that (ml-100k: 18 titles of 36 items, the
    same film listed twice with one year) are logged; ``PromptBuilder`` counts them and
    ``stage2.evaluate_lm`` scores an answer naming one the same way in every metric (a miss).
    Raises PromptError naming ``source`` and the fields it has when the field is absent or its
    length is not ``num_items``, or when ``distinguish`` names a field that is not there.
    """
    fields = list(item_features or {})
    name = field
    if field == "auto":
        name = next((f for f in ("movie_title", "title") if f in fields), None)
    if name is None or name not in fields:
        raise PromptError(f"{source}: no item title field ({'movie_title or title' if field == 'auto' else field!r}); "
                          f"the item features are {fields or 'none'}; expected item titles for the prompt")
    values = item_features[name]
    if len(values) != num_items:
        raise PromptError(f"{source}: item feature {name!r} has {len(values)} values; expected one per item "
                          f"({num_items})")
    titles, missing = [], 0
    for v in values:
        text = _field_text(v)
        if not text:
            missing += 1
            text = MISSING_TITLE
        titles.append(text)
    if missing:
        log.warning("%s: %d of %d items have no title; they read %r in prompts (as the reference)", source, missing,
                    num_items, MISSING_TITLE)
    shared = shared_titles(titles)
    extra = distinguish
    if distinguish == "auto":
        extra = next((f for f in DISTINGUISH_FIELDS if f in fields), None)
    elif distinguish is not None and distinguish not in fields:
        raise PromptError(f"{source}: distinguish={distinguish!r} is not an item feature (the item features are "
                          f"{fields}); expected a field that tells items of one title apart, 'auto' or None")
    if shared and extra is not None:
        if len(item_features[extra]) != num_items:
            raise PromptError(f"{source}: item feature {extra!r} has {len(item_features[extra])} values; expected "
                              f"one per item ({num_items})")
        for items in shared.values():
            for i in items:
                value = _field_text(item_features[extra][i])
                if value and not titles[i].endswith(f"({value})"):
                    titles[i] = f"{titles[i]} ({value})"
    if shared:
        left = shared_titles(titles)
        log.warning("%s: %d titles are shared by %d items; %s; %d titles (%d items) still name several items (an "
                    "answer naming one counts as a miss in every metric)", source, len(shared),
                    sum(map(len, shared.values())),
                    f"{extra!r} appended to theirs" if extra else "no field to tell them apart",
                    len(left), sum(map(len, left.values())))
    return titles, missing


def _bucket(n: int, bucket: int, cap: int | None) -> int:
    width = -(-n // bucket) * bucket
    return min(width, cap) if cap is not None else width


class PromptBuilder:
    """Builds tokenized prompts and targets for users (host-side numpy; see the module doc).

    Args:
      tokenizer: a ``jaxrec.lm.Tokenizer`` that has the three placeholder tokens and an
        end-of-sequence token (PromptError naming its source otherwise).
      titles: [I] item titles by dense item id.
      domain: the dataset's wording.
      max_positions: the LM's context length (prompts that do not fit are refused).
      history: history items per prompt (10); bucket: padding granularity in tokens.
    """

    def __init__(self, tokenizer: Tokenizer, titles: Sequence[str], domain: PromptDomain, *,
                 max_positions: int | None = None, history: int = 10, bucket: int = 32):
        try:
            self.ids = {t: tokenizer.token_id(t) for t in SPECIAL_TOKENS}
            self.eos_id = tokenizer.require("eos")
        except LMError as e:
            raise PromptError(f"{e}; the stage-2 prompt needs {', '.join(SPECIAL_TOKENS)} and an eos token "
                              f"(jaxrec.methods.allmrec.stage2.prepare_lm adds them)") from None
        if history < 1 or bucket < 1:
            raise PromptError(f"PromptBuilder: history={history}, bucket={bucket}; expected both >= 1")
        self.tokenizer = tokenizer
        self.titles = list(titles)
        self.domain = domain
        self.max_positions = max_positions
        self.history = int(history)
        self.bucket = int(bucket)
        self._targets: dict[int, list[int]] = {}
        #: {normalized title: items} of the titles several items share (``shared_titles``)
        self.shared = shared_titles(self.titles)
        if self.shared:
            log.warning("prompt set: %d titles are shared by %d of %d items (e.g. %r); a target whose title another "
                        "candidate shares counts as a miss in every metric (stage2.evaluate_lm: shared_title_targets)",
                        len(self.shared), sum(map(len, self.shared.values())), len(self.titles),
                        self.titles[next(iter(self.shared.values()))[0]])

    @property
    def num_items(self) -> int:
        return len(self.titles)

    # ------------------------------------------------------------------ pieces
    def pieces(self, history: Sequence[int], candidates: Sequence[int]) -> list[str]:
        """The prompt of dense item ids ``history`` (oldest first) and ``candidates`` (as shown) as
        alternating text and placeholder pieces (``prompt_pieces``)."""
        return prompt_pieces(self.domain, [self.titles[i] for i in history], [self.titles[i] for i in candidates])

    def text(self, history: Sequence[int], candidates: Sequence[int]) -> str:
        """Prompt text of dense item ids ``history`` (oldest first) and ``candidates`` (as shown)."""
        return "".join(self.pieces(history, candidates))

    def target_ids(self, item: int) -> list[int]:
        """Token ids of ``"title"`` + eos for dense item ``item`` (cached)."""
        item = int(item)
        if item not in self._targets:
            self._targets[item] = self.tokenizer.encode_plain(target_text(self.titles[item])) + [self.eos_id]
        return self._targets[item]

    def encode_prompt_ids(self, history: Sequence[int], candidates: Sequence[int]) -> list[int]:
        """Token ids of the prompt: the placeholders (and bos, if the tokenizer adds one) are the
        only control tokens; the text between them, titles included, is encoded as plain text
        (``Tokenizer.encode_plain``: a title reading ``<|im_end|>`` stays those characters)."""
        pieces = self.pieces(history, candidates)
        ids = [self.tokenizer.require("bos")] if self.tokenizer.add_bos else []
        for k, piece in enumerate(pieces):
            ids += [self.ids[piece]] if k % 2 else self.tokenizer.encode_plain(piece)
        return ids

    def _encode_prompt(self, user_name, history: Sequence[int], candidates: Sequence[int]):
        ids = np.asarray(self.encode_prompt_ids(history, candidates), np.int32)
        slot = np.full(ids.shape, -1, np.int32)
        for token, base, want in ((USER_TOKEN, 0, 1), (HISTORY_TOKEN, 1, len(history)),
                                  (CANDIDATE_TOKEN, 1 + self.history, len(candidates))):
            at = np.flatnonzero(ids == self.ids[token])
            if at.size != want:
                raise PromptError(f"user {str(user_name)!r}: the prompt holds {at.size} {token} tokens; expected "
                                  f"{want} (history {[int(i) for i in history]}, candidates "
                                  f"{[int(i) for i in candidates]})")
            slot[at] = base + np.arange(want, dtype=np.int32)
        return ids, slot

    def _soft_items(self, history: Sequence[int], candidates: Sequence[int]) -> np.ndarray:
        row = np.full(self.history + len(candidates), -1, np.int32)
        row[:len(history)] = history
        row[self.history:] = candidates
        return row

    def _check_fits(self, user_name, length: int, reserve: int, what: str) -> None:
        if self.max_positions is not None and length + reserve > self.max_positions:
            raise PromptError(f"user {str(user_name)!r}: the prompt has {length} tokens + {reserve} {what}, beyond the "
                              f"model's context of {self.max_positions} positions; expected at most "
                              f"{self.max_positions - reserve} prompt tokens (fewer history items or candidates, "
                              f"or a model with a longer context)")

    # ------------------------------------------------------------------ batches
    def _prompts(self, what: str, users, histories, candidates, user_names, size):
        """(candidates int32 [B, C], B, batch size S, user names, B (ids, slot) prompt encodings)."""
        candidates = np.asarray(candidates, np.int32)
        b = len(users)
        size = b if size is None else size
        if not 0 < b <= size:
            raise PromptError(f"{what}: {b} rows for a batch of {size}; expected 1..{size}")
        names = user_names if user_names is not None else users
        return candidates, b, size, names, [self._encode_prompt(names[k], histories[k], candidates[k])
                                             for k in range(b)]

    def training_batch(self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates,
                       targets: Sequence[int], *, user_names=None, size: int | None = None) -> dict[str, np.ndarray]:
        """Teacher-forcing rows: the prompt then the target ``"title"`` + eos, right-padded.

        users [B] dense ids; histories: B lists of dense item ids (oldest first, at most
        ``history``); candidates int [B, C] as shown; targets [B]. ``size`` pads the batch to
        that many rows with copies of row 0 that carry no loss (fixed shapes; nothing dropped).
        Returns ``user`` [S], ``ids`` / ``mask`` / ``slot`` [S, T], ``soft_items`` [S, history + C],
        ``target_pos`` / ``target_ids`` / ``target_mask`` [S, Tt] (positions in the row of the
        target tokens, the tokens, 1 for real ones).
        """
        candidates, b, size, names, prompts = self._prompts("training_batch", users, histories, candidates,
                                                            user_names, size)
        rows = []
        for k, (ids, slot) in enumerate(prompts):
            tgt = self.target_ids(targets[k])
            self._check_fits(names[k], len(ids), len(tgt), "target tokens")
            rows.append((ids, slot, tgt))
        width = _bucket(max(len(r[0]) + len(r[2]) for r in rows), self.bucket, self.max_positions)
        twidth = max(len(r[2]) for r in rows)
        out = {"user": np.zeros(size, np.int32), "ids": np.zeros((size, width), np.int32),
               "mask": np.zeros((size, width), np.int32), "slot": np.full((size, width), -1, np.int32),
               "soft_items": np.full((size, self.history + candidates.shape[1]), -1, np.int32),
               "target_pos": np.ones((size, twidth), np.int32), "target_ids": np.zeros((size, twidth), np.int32),
               "target_mask": np.zeros((size, twidth), np.int32)}
        for k in range(size):
            src = k if k < b else 0
            ids, slot, tgt = rows[src]
            n, m = len(ids), len(tgt)
            out["user"][k] = users[src]
            out["ids"][k, :n + m] = np.concatenate([ids, tgt])
            out["mask"][k, :n + m] = 1
            out["slot"][k, :n] = slot
            out["soft_items"][k] = self._soft_items(histories[src], candidates[src])
            out["target_pos"][k, :m] = n + np.arange(m)
            out["target_ids"][k, :m] = tgt
            out["target_mask"][k, :m] = 1 if k < b else 0
        return out

    def inference_batch(self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates, *,
                        user_names=None, reserve: int = 0, size: int | None = None) -> dict[str, np.ndarray]:
        """Left-padded prompts for generation and candidate scoring.

        ``reserve``: tokens that must still fit after the prompt (generated tokens, or the
        longest candidate title). ``size`` pads with copies of row 0 (``valid`` 0 marks them).
        Returns ``user`` [S], ``valid`` [S], ``ids`` / ``mask`` / ``slot`` [S, T], ``soft_items``.
        """
        candidates, b, size, names, rows = self._prompts("inference_batch", users, histories, candidates,
                                                         user_names, size)
        for k, (ids, _) in enumerate(rows):
            self._check_fits(names[k], len(ids), reserve, "more tokens to generate or score")
        cap = None if self.max_positions is None else self.max_positions - reserve
        width = _bucket(max(len(r[0]) for r in rows), self.bucket, cap)
        return self._left_padded(rows, users, histories, candidates, size, b, width)

    def _left_padded(self, rows, users, histories, candidates, size: int, b: int, width: int) -> dict:
        """The batch arrays of ``rows`` ((ids, slot) per user), left-padded to ``width``: ``user``,
        ``valid`` (rows ``b..size-1`` repeat row 0 and are 0), ``ids``, ``mask``, ``slot`` and
        ``soft_items`` [size, history + C]."""
        out = {"user": np.zeros(size, np.int32), "valid": np.zeros(size, np.int32),
               "ids": np.zeros((size, width), np.int32), "mask": np.zeros((size, width), np.int32),
               "slot": np.full((size, width), -1, np.int32),
               "soft_items": np.full((size, self.history + candidates.shape[1]), -1, np.int32)}
        for k in range(size):
            src = k if k < b else 0
            ids, slot = rows[src]
            n = len(ids)
            out["user"][k], out["valid"][k] = users[src], int(k < b)
            out["ids"][k, width - n:] = ids
            out["mask"][k, width - n:] = 1
            out["slot"][k, width - n:] = slot
            out["soft_items"][k] = self._soft_items(histories[src], candidates[src])
        return out

    def continuations(self, items, bucket: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Target tokens of candidate items int [B, C] -> (ids int32 [B, C, Tc], mask int32 [B, C, Tc]),
        right-padded to a multiple of ``bucket``: what ``sequence_logprob`` scores."""
        items = np.asarray(items)
        toks = [[self.target_ids(i) for i in row] for row in items]
        width = _bucket(max(len(t) for row in toks for t in row), bucket, None)
        ids = np.zeros((*items.shape, width), np.int32)
        mask = np.zeros((*items.shape, width), np.int32)
        for b, row in enumerate(toks):
            for c, t in enumerate(row):
                ids[b, c, :len(t)] = t
                mask[b, c, :len(t)] = 1
        return ids, mask


# ----------------------------------------------------------------------------- index answers
#: Candidate labels of the index prompt: "(A)" ... "(Z)"; each letter is one token in byte-level BPE
#: vocabularies (checked when a builder is made).
LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def index_prompt_pieces(domain: PromptDomain, history_titles: Sequence[str] | int, candidate_titles: Sequence[str] | int,
                        *, soft_tokens: bool = True, titles: bool = True) -> list[str]:
    """The index prompt (``IndexPromptBuilder``) as alternating text and placeholder pieces (the
    titles sit only in text pieces, tokenized as plain text): an instruction first (so position 0
    is text, not a soft token), the history, the labelled options, then the user token right
    before the answer::

        Recommend one next movie for this user to watch next. This user has watched [HistoryEmb]"t1",
        [HistoryEmb]"t2". Options: (A) [CandidateEmb]"c1", (B) [CandidateEmb]"c2". The user is
        [UserRep]. Answer: (

    Each soft token precedes its title (the title's tokens can attend to it). ``titles=False``
    drops the titles (soft tokens alone; ``history_titles`` / ``candidate_titles`` may then be
    counts) and writes the compact form, with no space token before a soft token and no comma
    between options (4 tokens an option, 2 a history item: 126 tokens for 10 + 20 on SmolLM2
    against 176 with the separators)::

        ... This user has watched[HistoryEmb],[HistoryEmb]. Options: (A)[CandidateEmb]
        (B)[CandidateEmb]. The user is[UserRep]. Answer: (

    ``soft_tokens=False`` drops the placeholders (a title-only prompt: LLM-Only, TALLRec).
    The answer is one label letter.
    """
    d = domain
    nh = history_titles if isinstance(history_titles, int) else len(history_titles)
    nc = candidate_titles if isinstance(candidate_titles, int) else len(candidate_titles)
    if nc > len(LABELS):
        raise PromptError(f"index prompt: {nc} candidates; at most {len(LABELS)} labels")
    pieces = [f"Recommend one next {d.noun} for this user to {d.verb} next."]

    def item(token: str, title: str | None, lead: str) -> None:
        pieces[-1] += lead
        if soft_tokens:
            pieces.extend([token, ""])
        if titles and title is not None:
            pieces[-1] += f'"{title}"'

    compact = not titles  # soft tokens only: no separator tokens around them
    if nh and (titles or soft_tokens):
        pieces[-1] += f" This user has {d.past}" + ("" if compact else " ")
        for j in range(nh):
            item(HISTORY_TOKEN, None if isinstance(history_titles, int) else history_titles[j],
                 ("," if compact else ", ") if j else "")
        pieces[-1] += "."
    pieces[-1] += " Options:"
    for c in range(nc):
        item(CANDIDATE_TOKEN, None if isinstance(candidate_titles, int) else candidate_titles[c],
             f" ({LABELS[c]})" if compact else (", " if c else " ") + f"({LABELS[c]}) ")
    pieces[-1] += "."
    if soft_tokens:
        pieces[-1] += " The user is" + ("" if compact else " ")
        pieces.extend([USER_TOKEN, "."])
    pieces[-1] += " Answer: ("
    return pieces


def index_prompt_text(domain: PromptDomain, history_titles: Sequence[str] | int, candidate_titles: Sequence[str] | int,
                      *, soft_tokens: bool = True, titles: bool = True) -> str:
    """The index prompt as one string (``index_prompt_pieces``)."""
    return "".join(index_prompt_pieces(domain, history_titles, candidate_titles, soft_tokens=soft_tokens,
                                       titles=titles))


class IndexPromptBuilder(PromptBuilder):
    """Prompts whose answer is one candidate label (``index_prompt_text``): the LM ranks every
    candidate with one forward pass, by the logits of the label tokens at the last position
    (LlamaRec's verbalizer, Yue et al. 2023). Rows are left-padded, so the answer position is
    always the last column. ``soft_tokens`` / ``titles``: as ``index_prompt_text``.

    Batches (``training_batch`` / ``inference_batch``, same keys): ``user`` [S], ``valid`` [S],
    ``ids`` / ``mask`` / ``slot`` [S, T], ``soft_items`` [S, history + C], ``target`` [S] (the
    target's column among the shown candidates; -1 at inference and on padding rows).
    ``label_ids`` int32 [C]: the token id of each label letter.
    """

    def __init__(self, tokenizer: Tokenizer, titles: Sequence[str], domain: PromptDomain, *,
                 max_positions: int | None = None, history: int = 10, bucket: int = 16, num_candidates: int = 20,
                 soft_tokens: bool = True, item_titles: bool = True):
        super().__init__(tokenizer, titles, domain, max_positions=max_positions, history=history, bucket=bucket)
        if not (soft_tokens or item_titles):
            raise PromptError("index prompt: soft_tokens=False and titles=False leave the LM nothing to rank by")
        if not 2 <= num_candidates <= len(LABELS):
            raise PromptError(f"index prompt: num_candidates={num_candidates}; expected 2..{len(LABELS)}")
        ids = []
        for label in LABELS[:num_candidates]:
            tok = tokenizer.encode(label, add_bos=False)
            if len(tok) != 1:
                raise PromptError(f"index prompt: the label {label!r} is {len(tok)} tokens in {tokenizer.source}; "
                                  "expected one token per label")
            ids.append(tok[0])
        if len(set(ids)) != len(ids):
            raise PromptError(f"index prompt: label tokens {ids} are not distinct in {tokenizer.source}")
        self.label_ids = np.asarray(ids, np.int32)
        self.num_candidates = int(num_candidates)
        self.soft_tokens, self.item_titles = bool(soft_tokens), bool(item_titles)

    def pieces(self, history: Sequence[int], candidates: Sequence[int]) -> list[str]:
        if self.item_titles:
            return index_prompt_pieces(self.domain, [self.titles[i] for i in history],
                                       [self.titles[i] for i in candidates], soft_tokens=self.soft_tokens)
        return index_prompt_pieces(self.domain, len(history), len(candidates), soft_tokens=self.soft_tokens,
                                   titles=False)

    def _encode_prompt(self, user_name, history: Sequence[int], candidates: Sequence[int]):
        if self.soft_tokens:
            return super()._encode_prompt(user_name, history, candidates)
        ids = np.asarray(self.encode_prompt_ids(history, candidates), np.int32)
        return ids, np.full(ids.shape, -1, np.int32)

    def _batch(self, what: str, users, histories, candidates, targets, user_names, size):
        candidates, b, size, names, rows = self._prompts(what, users, histories, candidates, user_names, size)
        if candidates.shape[1] != self.num_candidates:
            raise PromptError(f"{what}: {candidates.shape[1]} candidates per row; this builder labels "
                              f"{self.num_candidates}")
        for k, (ids, _) in enumerate(rows):
            self._check_fits(names[k], len(ids), 0, "tokens")
        width = _bucket(max(len(r[0]) for r in rows), self.bucket, self.max_positions)
        out = self._left_padded(rows, users, histories, candidates, size, b, width)
        out["target"] = np.full(size, -1, np.int32)
        for k in range(b if targets is not None else 0):
            hit = np.flatnonzero(candidates[k] == targets[k])
            if hit.size != 1:
                raise PromptError(f"user {names[k]!r}: the target {int(targets[k])} is {hit.size} times among "
                                  f"the candidates; expected once")
            out["target"][k] = hit[0]
        return out

    def training_batch(self, users, histories, candidates, targets, *, user_names=None, size=None):
        """Left-padded rows with ``target`` = the target's column among ``candidates`` (class docstring)."""
        return self._batch("training_batch", users, histories, candidates, targets, user_names, size)

    def inference_batch(self, users, histories, candidates, *, user_names=None, reserve: int = 0, size=None):
        """Left-padded rows without targets (``target`` -1); ``reserve`` is unused (no tokens follow)."""
        return self._batch("inference_batch", users, histories, candidates, None, user_names, size)


__all__ = ["USER_TOKEN", "HISTORY_TOKEN", "CANDIDATE_TOKEN", "SPECIAL_TOKENS", "MISSING_TITLE", "PromptError",
           "LABELS", "index_prompt_pieces", "index_prompt_text", "IndexPromptBuilder",
           "PromptDomain", "DOMAINS", "domain_for", "get_domain", "prompt_pieces", "prompt_text", "target_text",
           "item_titles", "DISTINGUISH_FIELDS", "normalize_title", "shared_titles", "PromptBuilder"]
