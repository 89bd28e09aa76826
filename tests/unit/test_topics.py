"""Topic building, segment escaping and /set topic parsing."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from baxo_mqtt.bridge.topics import (
    SetTarget,
    TopicScheme,
    escape_segment,
    parse_set_topic,
    unescape_segment,
)

SPECIAL = "%/+#$\x00"
# Biased towards the characters that matter, the hex digits of the escapes and
# the rest of Unicode, so both the escapes and their look-alikes turn up often.
segment_texts = st.text(alphabet=st.sampled_from(SPECIAL + "25FfBb340aZ_-. ") | st.characters())
nonempty_segments = segment_texts.filter(bool)
plain_texts = st.text(alphabet=st.characters(exclude_characters=SPECIAL))
bases = st.from_regex(r"\A[a-z0-9_$-]{1,8}(/[a-z0-9_-]{1,8}){0,2}\Z")

SCHEME = TopicScheme("baxo")


# --- escaping ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("TAG_1", "TAG_1"),
        ("A/B+#", "A%2FB%2B%23"),
        ("100%", "100%25"),
        ("$x", "%24x"),
        ("a$b$", "a$b$"),
        ("$$", "%24$"),
        ("nul\x00here", "nul%00here"),
        ("%2F", "%252F"),
        ("", ""),
    ],
)
def test_escape_segment_writes_each_special_character_as_its_code(raw: str, escaped: str) -> None:
    assert escape_segment(raw) == escaped


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("A%2FB%2B%23", "A/B+#"),
        ("a%2fb%2bc", "a/b+c"),
        ("%24x", "$x"),
        ("100%25", "100%"),
        ("%252F", "%2F"),
        ("%41%zz%", "%41%zz%"),
        ("plain", "plain"),
    ],
)
def test_unescape_segment_decodes_known_codes_and_keeps_other_percent_signs(
    escaped: str, raw: str
) -> None:
    assert unescape_segment(escaped) == raw


@given(segment_texts)
def test_unescape_reverses_escape_for_any_text(text: str) -> None:
    assert unescape_segment(escape_segment(text)) == text


@given(segment_texts)
def test_escaped_segment_can_neither_split_nor_match_wildcards_nor_hide(text: str) -> None:
    escaped = escape_segment(text)
    assert not set("/+#\x00") & set(escaped)
    assert not escaped.startswith("$")


@given(plain_texts)
def test_escape_leaves_text_without_special_characters_unchanged(text: str) -> None:
    assert escape_segment(text) == text


@given(plain_texts.filter(bool), plain_texts)
def test_escape_leaves_a_dollar_after_the_first_character_unchanged(head: str, tail: str) -> None:
    assert escape_segment(f"{head}${tail}") == f"{head}${tail}"


# --- building ---------------------------------------------------------------


def test_bridge_topics_sit_under_the_base() -> None:
    scheme = TopicScheme("site1/baxo")
    assert scheme.bridge_state() == "site1/baxo/bridge/state"
    assert scheme.bridge_info() == "site1/baxo/bridge/info"


def test_device_tag_and_set_topics_for_ordinary_ids() -> None:
    assert SCHEME.device("c-1", "14587") == "baxo/c-1/14587"
    assert SCHEME.tag("c-1", "14587", "TAG_1") == "baxo/c-1/14587/TAG_1"
    assert SCHEME.info("c-1", "14587") == "baxo/c-1/14587/$info"
    assert SCHEME.availability("c-1", "14587") == "baxo/c-1/14587/$availability"
    assert SCHEME.set_command("c-1", "14587", "TAG_1") == "baxo/c-1/14587/TAG_1/set"
    assert SCHEME.set_result("c-1", "14587", "TAG_1") == "baxo/c-1/14587/TAG_1/set/result"
    assert SCHEME.set_subscription() == "baxo/+/+/+/set"


def test_nasty_names_are_escaped_in_every_level_they_reach() -> None:
    assert SCHEME.tag("c/1", "$x", "A/B+#") == "baxo/c%2F1/%24x/A%2FB%2B%23"
    assert SCHEME.set_command("c", "$x", "A/B+#") == "baxo/c/%24x/A%2FB%2B%23/set"
    assert SCHEME.info("c", "$x") == "baxo/c/%24x/$info"


def test_a_tag_named_like_our_own_suffixes_cannot_collide_with_them() -> None:
    assert SCHEME.tag("c", "d", "$info") != SCHEME.info("c", "d")
    assert SCHEME.tag("c", "d", "$availability") != SCHEME.availability("c", "d")


@pytest.mark.parametrize(("contract", "device"), [("", "d"), ("c", "")])
def test_empty_contract_or_device_is_refused(contract: str, device: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        SCHEME.device(contract, device)


def test_empty_tag_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="empty tag reference"):
        SCHEME.tag("c", "d", "")


@pytest.mark.parametrize("device", ["state", "info"])
def test_a_device_that_would_publish_on_the_bridge_topics_is_refused(device: str) -> None:
    with pytest.raises(ValueError, match="bridge's own topic"):
        SCHEME.device("bridge", device)


@pytest.mark.parametrize("base", ["", "a/+", "a/#", "a\x00", "baxo/"])
def test_an_unusable_base_topic_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="base topic"):
        TopicScheme(base)


# --- parsing /set topics ----------------------------------------------------


def test_parse_set_topic_decodes_the_escaped_levels() -> None:
    target = parse_set_topic(SCHEME, "baxo/c/%24x/A%2FB%2B%23/set")
    assert target == SetTarget(contract="c", device="$x", tag="A/B+#")


def test_parse_set_topic_accepts_a_base_of_several_levels() -> None:
    scheme = TopicScheme("site1/baxo")
    assert parse_set_topic(scheme, "site1/baxo/c/d/TAG_1/set") == SetTarget("c", "d", "TAG_1")


@pytest.mark.parametrize(
    "topic",
    [
        "baxo/c/d/TAG_1",
        "baxo/c/d/TAG_1/set/result",
        "baxo/c/d/set",
        "baxo/c/d/e/TAG_1/set",
        "baxo/c//TAG_1/set",
        "baxo//d/TAG_1/set",
        "baxo/c/d//set",
        "other/c/d/TAG_1/set",
        "baxox/c/d/TAG_1/set",
        "baxo/bridge/state",
        "baxo/c/d/TAG_1/SET",
        "",
    ],
)
def test_parse_set_topic_returns_none_for_anything_but_a_set_topic(topic: str) -> None:
    assert parse_set_topic(SCHEME, topic) is None


@given(bases, nonempty_segments, nonempty_segments, nonempty_segments)
def test_parse_set_topic_reverses_set_command(
    base: str, contract: str, device: str, tag: str
) -> None:
    assume(not (contract == "bridge" and device in ("state", "info")))
    scheme = TopicScheme(base)
    topic = scheme.set_command(contract, device, tag)
    assert parse_set_topic(scheme, topic) == SetTarget(contract, device, tag)


@given(nonempty_segments, nonempty_segments, nonempty_segments)
def test_the_set_subscription_matches_every_set_command_level_for_level(
    contract: str, device: str, tag: str
) -> None:
    assume(not (contract == "bridge" and device in ("state", "info")))
    topic_levels = SCHEME.set_command(contract, device, tag).split("/")
    filter_levels = SCHEME.set_subscription().split("/")
    assert len(topic_levels) == len(filter_levels)
    assert all(f in ("+", t) for f, t in zip(filter_levels, topic_levels, strict=True))
