"""Chinese text analysis shared by the search backends.

`normalize` folds text the same way at index and query time: full-width → half-width,
traditional → simplified (OpenCC `t2s`), lower case. The fold is kept aligned with the
input, one output character per input character wherever possible, so token offsets can
be mapped back onto the original text for highlighting.

`Analyzer` segments normalized text with jieba (rjieba) plus the managed business
dictionary and expands query words with the managed synonym groups. rjieba's module
functions share one process-global dictionary; every `Analyzer` owns its own
`rjieba.Jieba()` instead, so a new dictionary is built aside and swapped in whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, TypeVar

import opencc
import rjieba
from pypinyin import lazy_pinyin

from app.search.documents import LanguageResources

# Tokens longer than this are dropped (Tantivy rejects terms above 64 KiB; nobody searches
# for a 65-character "word").
MAX_TOKEN_CHARS = 64
# A query is cut to this many distinct words: a pasted 10,000-character text must not turn
# into a query with thousands of clauses.
MAX_QUERY_WORDS = 32

# Full-width letters, digits, the symbols jieba keeps inside words (５０％, Ｃ＋＋) and the
# ideographic space. Full-width punctuation (，：) is left alone: it is dropped anyway, and
# translating every Chinese text (nearly all contain "，") would be slow.
_FULL_WIDTH_CHARS = (
    "".join(chr(code) for block in ((0xFF10, 0xFF1A), (0xFF21, 0xFF3B), (0xFF41, 0xFF5B)) for code in range(*block))
    + "＋＃＆．＿％－"
)
_FULL_TO_HALF = {0x3000: 0x20, **{ord(c): ord(c) - 0xFEE0 for c in _FULL_WIDTH_CHARS}}
# Characters OpenCC's t2s leaves as one of two simplified variants while mainland users
# type the other (帳單 → 帐单, but people search 账单). Folded after t2s, on both sides;
# the Elasticsearch backend adds them to its t2s char filter.
EXTRA_FOLDS: dict[str, str] = {"帐": "账"}
_VARIANTS = str.maketrans(EXTRA_FOLDS)
_VARIANT = re.compile(f"[{''.join(EXTRA_FOLDS)}]")
_FULL_WIDTH = re.compile(f"[\u3000{re.escape(_FULL_WIDTH_CHARS)}]")

# Particles dropped from queries (unless nothing else is left). Kept this short on
# purpose: on the LCQMC-based FAQ benchmark (bench/faq_dev) dropping question words such
# as 怎么/什么/为什么 cut MRR@10 from 0.876 to 0.852; BM25's idf already weighs them down.
_STOPWORDS_TEXT = "的 了 吗 呢 吧 啊 呀 么 嘛 哦 a an the of"
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
# Question and function words of a customer's wording (怎么, 如何, 可以 ...): they score, but a
# document need not contain them to count as matching the query's share of words.
_QUESTION_WORDS_TEXT = """怎么 怎样 怎么样 如何 什么 为什么 为何 哪里 哪儿 哪个 哪些 多少 多久 几 是否 能否 可否 可以 能
    能不能 会 会不会 要 需要 想 请问 一下 有 没有 是 是不是 不 吗 我 我的 你 你们 他 她 它 这 那 这个
    那个 一个 还 还是 就 都 也 在 和 与 跟 给 对 把 被 用 去 到 了解 知道 请 啥 咋 呢
    怎么办 咋办 为啥 谁 是谁 有人 告诉 求 好 比较 最 一些 一点 自己 里 上 现在 东西 时候"""
QUESTION_WORDS = frozenset(_QUESTION_WORDS_TEXT.split())


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


@lru_cache(maxsize=65536)
def _fold_char(char: str) -> str:
    return _t2s().convert(char.translate(_FULL_TO_HALF)).lower().translate(_VARIANTS)


class Normalized(NamedTuple):
    text: str
    # origin[i] is the index in the input of output character i; None when they are aligned
    # one to one (the usual case).
    origin: list[int] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map [start, end) of the normalized text back onto the input text."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def normalize_with_offsets(text: str) -> Normalized:
    """Fold `text` (full-width, traditional, case) and keep a map back to input offsets."""
    # Indexing one item folds its title and questions several times (tokens, pinyin,
    # suggestion keys). The result is shared: callers must not modify `origin`.
    if len(text) <= _CACHED_NORMALIZE_CHARS:
        return _normalize_cached(text)
    return _normalize_with_offsets(text)


def _normalize_with_offsets(text: str) -> Normalized:
    # translate() is slow on long text and most text has no full-width characters.
    text_half = text.translate(_FULL_TO_HALF) if _FULL_WIDTH.search(text) else text
    folded = _t2s().convert(text_half).lower()
    if _VARIANT.search(folded):
        folded = folded.translate(_VARIANTS)
    if len(folded) == len(text):
        # OpenCC's t2s tables map phrases to phrases of the same length, and lower() only
        # changes the length of a handful of letters (İ): equal length means aligned.
        return Normalized(folded, None)
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        out = _fold_char(char)
        parts.append(out)
        origin.extend([index] * len(out))
    return Normalized("".join(parts), origin)


_CACHED_NORMALIZE_CHARS = 200
_normalize_cached = lru_cache(maxsize=4096)(_normalize_with_offsets)


def normalize(text: str) -> str:
    """Fold full-width to half-width, traditional to simplified Chinese, and case."""
    return normalize_with_offsets(text).text


def is_word(term: str) -> bool:
    """True when a token holds a letter, digit or Chinese character (not punctuation/emoji)."""
    return any(char.isalnum() for char in term)


# Everything that is not str.isalnum(): re's \w is exactly isalnum() plus "_".
_NOT_ALNUM = re.compile(r"[\W_]+")


def compact(text: str) -> str:
    """Normalized text with everything but letters, digits and Chinese characters removed."""
    return _NOT_ALNUM.sub("", normalize(text))


@lru_cache(maxsize=200_000)
def _word_pinyin(word: str) -> tuple[str, str]:
    full: list[str] = []
    initials: list[str] = []
    # Non-Chinese runs come back marked so they stay whole in both keys ("5g", "iphone15").
    for part in lazy_pinyin(word, errors=lambda run: ["\x00" + run]):
        if part.startswith("\x00"):
            kept = "".join(char for char in part[1:] if char.isalnum())
            full.append(kept)
            initials.append(kept)
        else:
            full.append(part)
            initials.append(part[:1])
    return "".join(full), "".join(initials)


def pinyin_keys(text: str, cut: Callable[[str], list[str]] = rjieba.cut) -> tuple[str, str]:
    """Full pinyin and pinyin initials of `text` ("宽带故障" → ("kuandaiguzhang", "kdgz")).

    Converted word by word (pypinyin picks a polyphone's reading from its word; 银行 → hang)
    with a cache per word, which makes it cheap enough to run for every indexed title.
    """
    pairs = [_word_pinyin(word) for word in cut(normalize(text))]
    return "".join(full for full, _ in pairs), "".join(initials for _, initials in pairs)


def normalized_synonym_groups(groups: Iterable[Sequence[str]]) -> list[list[str]]:
    """Synonym groups folded like indexed text, duplicates and one-member groups removed."""
    result: list[list[str]] = []
    for group in groups:
        members = list(dict.fromkeys(term for term in (normalize(t).strip() for t in group) if term))
        if len(members) > 1:
            result.append(members)
    return result


def dictionary_words(resources: LanguageResources) -> list[str]:
    """Normalized business words plus every synonym term (so the segmenter keeps them whole)."""
    words = [normalize(word).strip() for word in resources.words]
    words += [term for group in normalized_synonym_groups(resources.synonym_groups) for term in group]
    return [word for word in dict.fromkeys(words) if word and not any(c.isspace() for c in word)]


def synonym_map(groups: Iterable[Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Normalized term -> the other normalized terms of every group it belongs to."""
    mapping: dict[str, dict[str, None]] = {}
    for group in normalized_synonym_groups(groups):
        for term in group:
            others = mapping.setdefault(term, {})
            others.update((other, None) for other in group if other != term)
    return {term: tuple(others) for term, others in mapping.items()}


def synonym_rules(resources: LanguageResources) -> list[str]:
    """Synonym groups as Solr-format equivalence lines ("宽带, 宽频") for Elasticsearch."""
    return [", ".join(group) for group in normalized_synonym_groups(resources.synonym_groups)]


class Token(NamedTuple):
    term: str  # normalized
    position: int  # word position; a sub-word shares the position of the word it is part of
    start: int  # character offsets in the ORIGINAL text
    end: int


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueryWord:
    term: str
    synonyms: tuple[str, ...] = ()  # equivalent terms (same weight class as `term`)
    parts: tuple[str, ...] = ()  # dictionary sub-words of a long word, any of them (weaker evidence)
    chars: tuple[str, ...] = ()  # characters of a word unknown to the dictionary, all of them (weaker)

    def all_terms(self) -> tuple[str, ...]:
        return (self.term, *self.synonyms, *self.parts, *self.chars)


# How `Analyzer.tokens` treats a term: dropped, kept, or kept and, as a word, also indexed
# by character (an unknown word, see `Analyzer._unknown`).
_DROP, _KEEP, _UNKNOWN = 0, 1, 2


class _TermKinds(dict[str, int]):
    """Term -> kind, filled on first sight; per analyzer (the dictionary decides)."""

    MAX_SIZE = 200_000

    def __init__(self, analyzer: Analyzer) -> None:
        super().__init__()
        self._unknown = analyzer._unknown

    def __missing__(self, term: str) -> int:
        if len(term) > MAX_TOKEN_CHARS or not (term.isalnum() or is_word(term)):
            kind = _DROP
        elif self._unknown(term):
            kind = _UNKNOWN
        else:
            kind = _KEEP
        if len(self) >= self.MAX_SIZE:
            self.clear()
        self[term] = kind
        return kind


class Analyzer:
    """Segmenter with one business dictionary and synonym list; build a new one to change them."""

    def __init__(self, resources: LanguageResources | None = None, *, hmm: bool = True) -> None:
        self.resources = resources or LanguageResources()
        self.hmm = hmm
        self.words = [word for word in dictionary_words(self.resources) if len(word) <= MAX_TOKEN_CHARS]
        self.synonyms = synonym_map(self.resources.synonym_groups)
        self._jieba = rjieba.Jieba()
        for word in self.words:
            self._jieba.add_word(word, None, None)
        self._has_word = self._jieba.has_word
        self._kinds = _TermKinds(self)

    def pinyin_keys(self, text: str) -> tuple[str, str]:
        """`pinyin_keys` segmented with this analyzer's dictionary."""
        return pinyin_keys(text, self._jieba.cut)

    def segment(self, text: str) -> list[str]:
        """Words of normalized `text` (coarse mode, punctuation dropped)."""
        return [w for w in self._jieba.cut(normalize(text), self.hmm) if is_word(w) and len(w) <= MAX_TOKEN_CHARS]

    def _unknown(self, word: str) -> bool:
        """A Chinese word jieba's HMM made up rather than found in the dictionary.

        Such a word depends on its context ("派单" alone, but "后派|单给" in a sentence), so its
        characters are indexed and searched too, as weak evidence.
        """
        return (
            self.hmm
            and 1 < len(word) <= MAX_TOKEN_CHARS
            and not word.isascii()
            and word.isalnum()
            and not self._has_word(word)
        )

    def tokens(self, text: str, factory: Callable[[str, int, int, int], T] = Token) -> list[T]:  # type: ignore[assignment]
        """Index tokens of `text` (words, their dictionary sub-words, characters of unknown
        words), offsets in `text`.

        Each token is built as `factory(term, position, start, end)`; Tantivy's `Token` has
        that signature, so the backend skips an intermediate object per token.
        """
        normalized = normalize_with_offsets(text)
        raw = self._jieba.tokenize(normalized.text, mode="search", hmm=self.hmm)
        # Search mode emits a long word's sub-words right before the word itself. Walking
        # backwards, a token inside the span of the word that follows it is a sub-word and
        # shares that word's position. (This loop is the indexing hot path: keep it plain.)
        backwards: list[tuple[str, int, int, int]] = []
        append = backwards.append
        kinds = self._kinds
        word_start = word_end = -1
        words = 0
        for term, start, end in reversed(raw):
            kind = kinds[term]
            if word_start <= start and end <= word_end:
                if kind:
                    append((term, words, start, end))
                continue
            word_start, word_end = start, end
            words += 1
            if kind:
                append((term, words, start, end))
                if kind == _UNKNOWN:
                    for index in range(end - 1, start - 1, -1):
                        append((term[index - start], words, index, index + 1))
        origin = normalized.origin
        if origin is None:
            return [factory(term, words - n, start, end) for term, n, start, end in reversed(backwards)]
        return [
            factory(term, words - n, origin[start], origin[end - 1] + 1) for term, n, start, end in reversed(backwards)
        ]

    def query_words(self, text: str) -> list[QueryWord]:
        """Analyze user input into query words with synonyms and weaker parts; never raises.

        Adjacent single Chinese characters (what segmentation leaves of a word it does not
        know, "折|扣|码") become one word whose characters are all required, not several
        one-character words that each match half the corpus.
        """
        raw = self._jieba.tokenize(normalize(text), mode="search", hmm=self.hmm)
        words: list[tuple[str, list[str], int, int]] = []  # (word, sub-words, start, end) in order
        parts: list[str] = []
        word_span = (-1, -1)
        for term, start, end in reversed(raw):
            if word_span[0] <= start and end <= word_span[1] and (start, end) != word_span:
                parts.append(term)
            else:
                word_span = (start, end)
                parts = []
                words.append((term, parts, start, end))
        words.reverse()
        kept = [w for w in words if is_word(w[0]) and len(w[0]) <= MAX_TOKEN_CHARS]
        meaningful = [w for w in kept if w[0] not in STOPWORDS]
        result: dict[str, QueryWord] = {}
        joined = _join_single_chars(meaningful) if meaningful else [(w[0], w[1], False) for w in kept]
        for term, subs, run in joined:
            if term in result:
                continue
            synonyms = self.synonyms.get(term, ())
            clean_parts = tuple(dict.fromkeys(s for s in subs if is_word(s) and s not in synonyms))
            chars = tuple(dict.fromkeys(term)) if run or self._unknown(term) else ()
            result[term] = QueryWord(term, synonyms, clean_parts, chars)
            if len(result) >= MAX_QUERY_WORDS:
                break
        return list(result.values())


def _single_han(term: str) -> bool:
    return len(term) == 1 and not term.isascii() and term.isalnum()


def _join_single_chars(words: list[tuple[str, list[str], int, int]]) -> list[tuple[str, list[str], bool]]:
    """(word, sub-words, joined) with runs of adjacent single Chinese characters joined."""
    out: list[tuple[str, list[str], bool]] = []
    run: list[str] = []
    run_end = -1
    for term, subs, start, end in words:
        if _single_han(term) and run and start == run_end:
            run.append(term)
            run_end = end
            continue
        if run:
            out.append(("".join(run), [], len(run) > 1))
            run = []
        if _single_han(term):
            run, run_end = [term], end
        else:
            out.append((term, subs, False))
    if run:
        out.append(("".join(run), [], len(run) > 1))
    return out


def required_words(count: int, *, strict: bool = True) -> int:
    """How many of `count` query words a document must match (the `minimum_should_match` idea).

    Strict: all of one or two words, 75 % (rounded down, as Elasticsearch rounds "75%") of
    three or more. Loose: any one word. Both backends use this one rule.
    """
    if count <= 0:
        return 0
    if not strict:
        return 1
    return count if count <= 2 else count * 3 // 4


def highlight_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """A regex finding any of the normalized `terms` in normalized text (longest first).

    Latin/digit terms only match whole (no "15" inside "2015").
    """
    return _compiled_pattern(tuple(sorted(set(terms), key=lambda term: (-len(term), term))))


@lru_cache(maxsize=1024)  # the same words are searched again and again; re's own cache is small
def _compiled_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    alternatives = []
    for term in terms:
        escaped = re.escape(term)
        if term.isascii():
            escaped = rf"(?<![a-z0-9]){escaped}(?![a-z0-9])"
        alternatives.append(escaped)
    return re.compile("|".join(alternatives)) if alternatives else None
