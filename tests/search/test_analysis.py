from __future__ import annotations

import time

import pytest

from app.search.analysis import (
    MAX_QUERY_WORDS,
    Analyzer,
    compact,
    dictionary_words,
    highlight_pattern,
    normalize,
    normalize_with_offsets,
    pinyin_keys,
    synonym_map,
    synonym_rules,
)
from app.search.documents import LanguageResources

LANGUAGE = LanguageResources(
    words=["5G畅享套餐", "光猫", "携号转网", "信用卡挂失", "阶梯电价"],
    synonym_groups=[["上不了网", "无法上网", "断网"], ["宽带", "寬頻", "宽频"], ["挂失", "冻结卡片"]],
)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(LANGUAGE)


def terms(tokens: list) -> list[str]:
    return [t.term for t in tokens]


def test_normalize_folds_traditional_full_width_and_case() -> None:
    assert normalize("寬頻無法上網，請問怎麼辦？") == "宽频无法上网，请问怎么办？"
    assert normalize("５Ｇ暢享套餐　ｉＰｈｏｎｅ") == "5g畅享套餐 iphone"
    assert normalize("信用卡掛失 ATM") == "信用卡挂失 atm"
    text = "您可以透過網上營業廳查詢寬頻帳單"
    assert len(normalize(text)) == len(text)


def test_offsets_survive_a_fold_that_changes_length() -> None:
    # "İ".lower() is two code points: the map must still point into the input.
    folded = normalize_with_offsets("İ寬頻")
    assert folded.text.endswith("宽频")
    assert len(folded.text) == 4
    start = folded.text.index("宽频")
    assert folded.span(start, start + 2) == (1, 3)


def test_token_offsets_point_into_the_original_traditional_text(analyzer: Analyzer) -> None:
    text = "我家寬頻上不了網，５Ｇ暢享套餐可以退訂嗎？"
    tokens = analyzer.tokens(text)
    assert tokens, "no tokens"
    for token in tokens:
        assert normalize(text[token.start : token.end]) == token.term
    assert {"宽频", "上不了网", "5g畅享套餐", "退订"} <= set(terms(tokens))


def test_business_words_stay_whole_only_with_the_dictionary() -> None:
    plain = Analyzer()
    with_words = Analyzer(LANGUAGE)
    text = "我想办理携号转网，顺便改成5G畅享套餐，再换个信用卡挂失"
    assert "携号转网" not in plain.segment(text)  # jieba alone splits it: the test can fail
    words = with_words.segment(text)
    assert {"携号转网", "5g畅享套餐", "信用卡挂失"} <= set(words)
    # Each analyzer owns its dictionary: building one did not change the other.
    assert "携号转网" not in plain.segment(text)
    assert "携号转网" not in Analyzer().segment(text)


def test_sub_words_share_the_position_of_their_word(analyzer: Analyzer) -> None:
    tokens = analyzer.tokens("办理携号转网业务")
    by_term = {t.term: t for t in tokens}
    assert by_term["转网"].position == by_term["携号转网"].position
    assert by_term["业务"].position == by_term["携号转网"].position + 1


def test_latin_and_digits_are_whole_lowercase_and_punctuation_and_emoji_dropped(analyzer: Analyzer) -> None:
    tokens = terms(analyzer.tokens("iPhone 15 连不上WiFi？请拨打95598！😀😀 ……"))
    assert "iphone" in tokens and "15" in tokens and "95598" in tokens and "wifi" in tokens
    assert not any(t in tokens for t in ("？", "！", "😀", "……", " "))
    assert all(t == t.lower() for t in tokens)


def test_query_words_expand_synonyms_and_fold_input(analyzer: Analyzer) -> None:
    words = {w.term: w for w in analyzer.query_words("我家寬頻上不了網了怎麼辦")}
    assert "宽频" in words and "宽带" in words["宽频"].synonyms
    assert set(words["上不了网"].synonyms) == {"无法上网", "断网"}
    assert "了" not in words  # particle dropped when real words remain
    assert "怎么办" in words  # question words matter for matching questions (see STOPWORDS)


def test_query_of_only_particles_is_kept(analyzer: Analyzer) -> None:
    assert [w.term for w in analyzer.query_words("了吗？")] == ["了", "吗"]


def test_unknown_words_are_also_indexed_and_searched_by_character(analyzer: Analyzer) -> None:
    # jieba's HMM makes up "后派|单给" inside the sentence but "派单" alone.
    indexed = terms(analyzer.tokens("核实地址后派单给装维"))
    (word,) = analyzer.query_words("派单")
    assert word.term not in indexed
    assert set(word.chars) == {"派", "单"} <= set(indexed)
    # Dictionary words are not split into characters.
    assert "携" not in terms(analyzer.tokens("携号转网"))


@pytest.mark.parametrize("text", ["信用卡_挂失！", "５Ｇ暢享套餐 ｉＰｈｏｎｅ-15", "a_b__c", "İ寬頻😀", "   ", "²³½①"])
def test_compact_keeps_exactly_the_alphanumeric_characters(text: str) -> None:
    assert compact(text) == "".join(char for char in normalize(text) if char.isalnum())


def test_short_and_long_text_fold_alike() -> None:
    short = "寬頻帳單ＡＢＣ İ"
    long = short * 100  # past the cached length
    assert normalize(long) == normalize(short) * 100
    assert normalize_with_offsets(short) == normalize_with_offsets(short)  # a cache hit
    assert normalize_with_offsets(long).origin is not None


def test_token_order_positions_and_offsets_are_exact(analyzer: Analyzer) -> None:
    # Characters of an unknown word come right before it; the word and a following
    # sub-word-free word take the next positions. (Tantivy indexes exactly this list.)
    assert [tuple(t) for t in analyzer.tokens("后派单给他")] == [
        ("后", 0, 0, 1),
        ("派", 0, 1, 2),
        ("后派", 0, 0, 2),
        ("单", 1, 2, 3),
        ("给", 1, 3, 4),
        ("单给", 1, 2, 4),
        ("他", 2, 4, 5),
    ]
    # The same again (term classifications are cached per analyzer).
    assert [tuple(t) for t in analyzer.tokens("后派单给他")][-1] == ("他", 2, 4, 5)


def test_overlong_token_is_dropped_but_keeps_its_position(analyzer: Analyzer) -> None:
    tokens = analyzer.tokens("ab " + "x" * 70 + " 宽带")
    assert [(t.term, t.position) for t in tokens] == [("ab", 0), ("宽带", 4)]
    assert tokens[-1].start == 74


@pytest.mark.parametrize(
    "text",
    ['"宽带" AND (光猫 OR title:*) -body:[a TO z]', "\\*?~^!{}", "😀🙏🏻👨‍👩‍👧", "", "   ", "\x00\u200b\ufeff"],
)
def test_query_words_never_fail_on_syntax_or_symbols(analyzer: Analyzer, text: str) -> None:
    words = analyzer.query_words(text)
    assert all(w.term and not set(w.term) & set('"():*[]\\?~^!{}') for w in words)


def test_huge_query_is_bounded(analyzer: Analyzer) -> None:
    text = ("宽带无法上网光猫红灯携号转网信用卡挂失电费查询" * 400)[:10_000]
    started = time.perf_counter()
    words = analyzer.query_words(text + "".join(chr(0x4E00 + i) for i in range(2000)))
    assert len(words) <= MAX_QUERY_WORDS
    assert time.perf_counter() - started < 1.0


def test_pinyin_keys_full_and_initials() -> None:
    assert pinyin_keys("宽带故障") == ("kuandaiguzhang", "kdgz")
    assert pinyin_keys("寬頻") == ("kuanpin", "kp")
    assert pinyin_keys("银行卡") == ("yinhangka", "yhk")  # reading picked from the word
    full, initials = pinyin_keys("iPhone 15 连接光猫")
    assert full == "iphone15lianjieguangmao" and initials == "iphone15ljgm"


def test_helpers_for_elasticsearch() -> None:
    words = dictionary_words(LANGUAGE)
    assert "5g畅享套餐" in words and "无法上网" in words and "宽频" in words
    assert "寬頻" not in words  # folded: 寬頻 is 宽频
    assert len(words) == len(set(words))
    assert "上不了网, 无法上网, 断网" in synonym_rules(LANGUAGE)
    assert synonym_map([["宽带", "寬頻", "宽频"]]) == {"宽带": ("宽频",), "宽频": ("宽带",)}
    assert compact("５Ｇ 暢享-套餐！") == "5g畅享套餐"


def test_highlight_pattern_keeps_latin_terms_whole() -> None:
    pattern = highlight_pattern(["15", "宽带"])
    assert pattern is not None
    assert [m.group() for m in pattern.finditer("iphone 15 与 2015 年宽带")] == ["15", "宽带"]
    assert highlight_pattern([]) is None
