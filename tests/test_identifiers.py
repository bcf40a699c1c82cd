"""Tests for mycarenet_core.identifiers (SPEC §2)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycarenet_core.identifiers import (
    INSURER_CODES,
    INSURER_NAMES,
    IdentifierError,
    Inami,
    Niss,
    Profession,
    Role,
    Sex,
    is_valid_inami,
    is_valid_niss,
    make_inami,
    make_niss,
    parse_inami,
    parse_member_number,
    parse_niss,
    routing_insurer,
    sex_compatible,
)

DATES = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2099, 12, 31))
SEQUENCES = st.integers(min_value=1, max_value=998)
TODAY = datetime.date(2025, 6, 15)


T = TypeVar("T")


def _code(call: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    with pytest.raises(IdentifierError) as info:
        call(*args, **kwargs)
    return info.value.code


def _attempt(call: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, int | None]:
    """(result, None) on success, (None, error code) on IdentifierError; anything else propagates."""
    try:
        return call(*args, **kwargs), None
    except IdentifierError as exc:
        return None, exc.code


# --------------------------------------------------------------------------------------------------------
# NISS: known examples
# --------------------------------------------------------------------------------------------------------


def test_commonly_cited_example_is_valid() -> None:
    # 850730033 = 97 * 8770412 + 69  ->  CC = 97 - 69 = 28
    niss = parse_niss("85073003328")
    assert niss == Niss("85073003328", datetime.date(1985, 7, 30), 1985, Sex.MALE, False, None)
    assert niss.sequence == 33
    assert (niss.birth_month, niss.birth_day) == (7, 30)


def test_born_after_2000_uses_the_2_prefix() -> None:
    # Born 2001-02-03, sequence 005: 2010203005 = 97 * 20723742 + 31 -> CC = 97 - 31 = 66.
    # Without the prefix: 010203005 = 97 * 105185 + 60 -> 37, so 01020300537 would be 1901-02-03.
    niss = parse_niss("01020300566")
    assert niss.birth_date == datetime.date(2001, 2, 3)
    assert niss.birth_year == 2001
    assert niss.sex is Sex.MALE
    old = parse_niss("01020300537")
    assert old.birth_date == datetime.date(1901, 2, 3)
    assert make_niss(datetime.date(2001, 2, 3), 5) == "01020300566"
    assert make_niss(datetime.date(1901, 2, 3), 5) == "01020300537"


def test_even_sequence_is_female() -> None:
    # 850730004 = 97 * 8770412 + 40 -> CC = 57
    assert make_niss(datetime.date(1985, 7, 30), 4) == "85073000457"
    assert parse_niss("85073000457").sex is Sex.FEMALE


@pytest.mark.parametrize("raw", ["85.07.30-033.28", "850730 033 28", " 85-07-30-033-28 ", "85073003328"])
def test_separators_are_stripped_and_value_is_canonical(raw: str) -> None:
    assert parse_niss(raw).value == "85073003328"
    assert is_valid_niss(raw)


def test_bis_numbers() -> None:
    unknown = parse_niss("85273000205")  # month 07 + 20
    assert unknown.is_bis
    assert unknown.bis_sex_known is False
    assert unknown.sex is Sex.UNKNOWN
    assert unknown.birth_date == datetime.date(1985, 7, 30)
    known = parse_niss("85473000248")  # month 07 + 40, even sequence
    assert known.is_bis
    assert known.bis_sex_known is True
    assert known.sex is Sex.FEMALE
    assert known.birth_month == 7


def test_unknown_day_or_month_gives_partial_birth_date() -> None:
    both = parse_niss("85000000138")
    assert both.birth_date is None
    assert both.birth_year == 1985
    assert (both.birth_month, both.birth_day) == (None, None)
    day_only = parse_niss("85070000286")
    assert day_only.birth_date is None
    assert (day_only.birth_month, day_only.birth_day) == (7, None)
    assert day_only.sex is Sex.FEMALE


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", 100),
        ("   ", 100),
        (None, 100),
        ("8507300332", 111),  # 10 digits
        ("850730033280", 111),  # 12 digits
        ("85O73003328", 111),  # letter O
        ("85/07/30/033/28", 111),  # "/" is not an accepted separator
        ("８５０７３００３３２８", 111),  # full-width digits are not ASCII
        ("85133003328", 111),  # month 13
        ("85333003328", 111),  # month 33 (bis +20 range ends at 32)
        ("85193003328", 111),  # month 19
        ("85393003328", 111),  # month 39
        ("85533003328", 111),  # month 53 (bis +40 range ends at 52)
        ("85073203328", 111),  # day 32
        ("85073000061", 111),  # sequence 000 (check digits are right)
        ("85073099932", 111),  # sequence 999 (check digits are right)
        ("85073003329", 112),
        ("85073003382", 112),
        ("85073003300", 112),
        ("85023100192", 113),  # 31 February 1985, check digits right
    ],
)
def test_bad_niss_codes(raw: str | None, code: int) -> None:
    assert _code(parse_niss, raw) == code
    assert not is_valid_niss(raw)


def test_future_birth_date_needs_today() -> None:
    raw = "30010100153"  # 2030-01-01, seq 001: 2300101001 = 97 * 23712381 + 44 -> CC = 53
    assert make_niss(datetime.date(2030, 1, 1), 1) == raw
    assert parse_niss(raw).birth_date == datetime.date(2030, 1, 1)
    assert _code(parse_niss, raw, today=TODAY) == 113
    assert parse_niss(raw, today=datetime.date(2030, 1, 1)).birth_year == 2030
    assert not is_valid_niss(raw, today=TODAY)


def test_future_partial_birth_date() -> None:
    raw = make_niss(datetime.date(2025, 7, 1), 1)
    partial = raw[:4] + "00" + raw[6:9]
    partial += f"{97 - int('2' + partial) % 97:02d}"
    assert partial.startswith("250700001")
    assert _code(parse_niss, partial, today=datetime.date(2025, 6, 30)) == 113
    niss = parse_niss(partial, today=datetime.date(2025, 7, 1))
    assert niss.birth_date is None
    assert niss.birth_month == 7
    year_only = "260000001" + f"{97 - int('2260000001') % 97:02d}"
    assert _code(parse_niss, year_only, today=datetime.date(2025, 12, 31)) == 113
    assert parse_niss(year_only, today=datetime.date(2026, 1, 1)).birth_year == 2026


def test_century_flip_by_year_digit_is_an_inherent_collision() -> None:
    # 2e9 - 6e7 is a multiple of 97, so changing the year's units digit by 6 keeps the check digits valid
    # under the other century: a single-digit typo the checksum cannot detect.
    assert (2_000_000_000 - 60_000_000) % 97 == 0
    assert parse_niss("03040500166").birth_date == datetime.date(2003, 4, 5)
    assert parse_niss("09040500166").birth_date == datetime.date(1909, 4, 5)
    assert parse_niss("80030400157").birth_year == 2080
    assert _code(parse_niss, "80030400157", today=TODAY) == 113


def test_identifier_error_shape() -> None:
    with pytest.raises(ValueError, match="112") as info:
        parse_niss("85073003329")
    assert isinstance(info.value, IdentifierError)
    assert info.value.code == 112
    assert info.value.reason


def test_sex_compatible() -> None:
    male = parse_niss("85073003328")
    unknown = parse_niss("85273000205")
    assert sex_compatible(male, Sex.MALE)
    assert not sex_compatible(male, Sex.FEMALE)
    assert sex_compatible(male, Sex.UNKNOWN)
    assert sex_compatible(unknown, Sex.MALE)
    assert sex_compatible(unknown, Sex.FEMALE)


@pytest.mark.parametrize(
    ("birth", "sequence", "bis"),
    [
        (datetime.date(1899, 12, 31), 1, 0),
        (datetime.date(2100, 1, 1), 1, 0),
        (datetime.date(1985, 1, 1), 0, 0),
        (datetime.date(1985, 1, 1), 999, 0),
        (datetime.date(1985, 1, 1), 1, 10),
    ],
)
def test_make_niss_rejects_bad_arguments(birth: datetime.date, sequence: int, bis: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        make_niss(birth, sequence, bis=bis)


# --------------------------------------------------------------------------------------------------------
# NISS: properties
# --------------------------------------------------------------------------------------------------------


@given(DATES, SEQUENCES)
def test_niss_round_trip(birth: datetime.date, sequence: int) -> None:
    raw = make_niss(birth, sequence)
    assert len(raw) == 11
    assert raw.isdigit()
    niss = parse_niss(raw)
    assert niss.value == raw
    assert niss.birth_date == birth
    assert niss.birth_year == birth.year
    assert niss.sequence == sequence
    assert niss.sex is (Sex.MALE if sequence % 2 else Sex.FEMALE)
    assert not niss.is_bis
    assert niss.bis_sex_known is None
    assert parse_niss(raw, today=birth).birth_date == birth


@given(DATES, SEQUENCES, st.sampled_from([20, 40]))
def test_bis_niss_round_trip(birth: datetime.date, sequence: int, bis: int) -> None:
    raw = make_niss(birth, sequence, bis=bis)
    assert int(raw[2:4]) == birth.month + bis
    niss = parse_niss(raw)
    assert niss.birth_date == birth
    assert niss.is_bis
    assert niss.bis_sex_known is (bis == 40)
    if bis == 20:
        assert niss.sex is Sex.UNKNOWN
    else:
        assert niss.sex is (Sex.MALE if sequence % 2 else Sex.FEMALE)


@given(
    DATES,
    SEQUENCES,
    st.sampled_from([0, 20, 40]),
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=1, max_value=9),
)
def test_single_digit_change_is_rejected(
    birth: datetime.date, sequence: int, bis: int, position: int, delta: int
) -> None:
    raw = make_niss(birth, sequence, bis=bis)
    new_digit = (int(raw[position]) + delta) % 10
    changed = raw[:position] + str(new_digit) + raw[position + 1 :]
    niss, code = _attempt(parse_niss, changed)
    if niss is None:
        assert code in (111, 112, 113)
        return
    # Only the documented century collision (year units digit changed by 6) can survive.
    assert position == 1
    assert abs(new_digit - int(raw[1])) == 6
    assert niss.birth_year // 100 != birth.year // 100


@given(st.text(max_size=30))
def test_arbitrary_text_only_raises_identifier_error(raw: str) -> None:
    niss, code = _attempt(parse_niss, raw, today=TODAY)
    if niss is None:
        assert code in (100, 111, 112, 113)
    else:
        assert len(niss.value) == 11


@given(st.text(alphabet="0123456789.- ", min_size=9, max_size=16))
def test_digit_like_text_only_raises_identifier_error(raw: str) -> None:
    valid = is_valid_niss(raw)
    niss, code = _attempt(parse_niss, raw)
    assert (niss is not None) is valid
    if niss is None:
        assert code in (100, 111, 112, 113)
    else:
        assert niss.value == raw.translate(str.maketrans("", "", ".- "))


# --------------------------------------------------------------------------------------------------------
# INAMI
# --------------------------------------------------------------------------------------------------------


def test_known_inami_numbers() -> None:
    # 100003 = 97 * 1030 + 93 -> check 04.  112345 = 97 * 1158 + 19 -> check 78.
    gp = parse_inami("10000304003")
    assert gp == Inami("10000304003", Profession.PHYSICIAN, 3, "003", Role.GENERAL_PRACTITIONER)
    assert gp.is_gp
    assert gp.base == "10000304"
    assert parse_inami("1-12345-78-580").role is Role.SPECIALIST
    assert parse_inami("1.12345.78.005").value == "11234578005"
    assert make_inami(Profession.PHYSICIAN, 12345, "004") == "11234578004"


@pytest.mark.parametrize(
    ("profession", "competence", "role"),
    [
        (Profession.PHYSICIAN, "000", Role.PHYSICIAN_NO_COMPETENCE),
        (Profession.PHYSICIAN, "001", Role.GP_NON_ACCREDITED),
        (Profession.PHYSICIAN, "002", Role.GP_NON_ACCREDITED),
        (Profession.PHYSICIAN, "003", Role.GENERAL_PRACTITIONER),
        (Profession.PHYSICIAN, "004", Role.GENERAL_PRACTITIONER),
        (Profession.PHYSICIAN, "005", Role.GP_IN_TRAINING),
        (Profession.PHYSICIAN, "006", Role.GP_IN_TRAINING),
        (Profession.PHYSICIAN, "007", Role.PHYSICIAN_NO_COMPETENCE),
        (Profession.PHYSICIAN, "010", Role.SPECIALIST),
        (Profession.PHYSICIAN, "580", Role.SPECIALIST),
        (Profession.PHYSICIAN, "999", Role.SPECIALIST),
        (Profession.DENTIST, "000", Role.DENTIST),
        (Profession.DENTIST, "003", Role.DENTIST),
        (Profession.PHARMACIST, "003", Role.PHARMACIST),
        (Profession.ORGANISATION, "100", Role.MEDICAL_HOUSE),
        (Profession.ORGANISATION, "200", Role.GROUP_PRACTICE),
        (Profession.ORGANISATION, "300", Role.PHARMACY),
        (Profession.PHYSIOTHERAPIST, "001", Role.PHYSIOTHERAPIST),
    ],
)
def test_inami_roles(profession: Profession, competence: str, role: Role) -> None:
    inami = parse_inami(make_inami(profession, 4321, competence))
    assert inami.role is role
    assert inami.is_gp is (role is Role.GENERAL_PRACTITIONER)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", 100),
        (None, 100),
        ("1000030400", 111),  # 10 digits
        ("1000030400A", 111),
        ("20000304003", 111),  # profession digit 2 unknown
        ("81000344400", 111),  # organisation, competence 400: 810003 = 97 * 8350 + 53 -> check 44
        ("81000344100", None),  # same, competence 100: valid
        ("10000305003", 112),
        ("10000394003", 112),
        ("11234587004", 112),  # swapped check digits
    ],
)
def test_bad_inami_codes(raw: str | None, code: int | None) -> None:
    if code is None:
        assert parse_inami(raw).role is Role.MEDICAL_HOUSE
        return
    assert _code(parse_inami, raw) == code
    assert not is_valid_inami(raw)


def test_make_inami_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sequence"):
        make_inami(Profession.PHYSICIAN, 100_000, "003")
    with pytest.raises(ValueError, match="competence"):
        make_inami(Profession.PHYSICIAN, 1, "03")
    with pytest.raises(IdentifierError):
        make_inami(Profession.ORGANISATION, 1, "003")


INAMI_CASES = st.one_of(
    st.tuples(
        st.sampled_from([Profession.PHYSICIAN, Profession.DENTIST, Profession.PHARMACIST]),
        st.integers(min_value=0, max_value=99_999),
        st.integers(min_value=0, max_value=999).map(lambda c: f"{c:03d}"),
    ),
    st.tuples(
        st.just(Profession.ORGANISATION),
        st.integers(min_value=0, max_value=99_999),
        st.sampled_from(["100", "200"]),
    ),
)


@given(INAMI_CASES)
def test_inami_round_trip(case: tuple[Profession, int, str]) -> None:
    profession, sequence, competence = case
    raw = make_inami(profession, sequence, competence)
    inami = parse_inami(raw)
    assert inami.value == raw
    assert inami.profession is profession
    assert inami.sequence == sequence
    assert inami.competence == competence
    assert inami.base == raw[:8]
    assert int(raw[:6]) % 97 + int(raw[6:8]) == 97


@given(INAMI_CASES, st.integers(min_value=0, max_value=7), st.integers(min_value=1, max_value=9))
def test_inami_single_digit_change_in_base_is_rejected(
    case: tuple[Profession, int, str], position: int, delta: int
) -> None:
    raw = make_inami(*case)
    changed = raw[:position] + str((int(raw[position]) + delta) % 10) + raw[position + 1 :]
    assert _code(parse_inami, changed) in (111, 112)


@given(st.text(max_size=30))
def test_inami_arbitrary_text_only_raises_identifier_error(raw: str) -> None:
    inami, code = _attempt(parse_inami, raw)
    if inami is None:
        assert code in (100, 111, 112)
    else:
        assert len(inami.value) == 11


# --------------------------------------------------------------------------------------------------------
# Member numbers
# --------------------------------------------------------------------------------------------------------


def test_insurer_tables() -> None:
    assert INSURER_CODES == ("100", "200", "300", "400", "500", "600", "900")
    assert set(INSURER_NAMES) == set(INSURER_CODES)
    assert "HR Rail" in INSURER_NAMES["900"]


@pytest.mark.parametrize("code", INSURER_CODES)
def test_member_number_for_each_insurer(code: str) -> None:
    member = parse_member_number(code, "12345678")
    assert member.mutuality_code == code
    assert member.insurer == code
    assert routing_insurer(code) == code


@pytest.mark.parametrize("code", ["750", "999", " 750 "])
def test_routed_via_auxiliary_fund(code: str) -> None:
    assert routing_insurer(code) == "600"
    assert parse_member_number(code, "1").insurer == "600"


def test_member_number_canonical_form() -> None:
    member = parse_member_number("300", " ab-12/34.5 ")
    assert member.registration_number == "AB12345"


@pytest.mark.parametrize(
    ("mutuality", "registration", "code"),
    [
        ("", "123", 100),
        (None, "123", 100),
        ("100", "", 100),
        ("100", None, 100),
        ("700", "123", 121),
        ("101", "123", 121),
        ("1000", "123", 121),
        ("100", "12345678901234", 111),  # 14 characters
        ("100", "12_34", 111),
        ("100", "é1", 111),
        ("100", "--", 111),  # nothing left after separators
    ],
)
def test_bad_member_numbers(mutuality: str | None, registration: str | None, code: int) -> None:
    assert _code(parse_member_number, mutuality, registration) == code


def test_routing_unknown_insurer() -> None:
    assert _code(routing_insurer, "700") == 121


@given(st.text(max_size=5), st.text(max_size=20))
def test_member_number_arbitrary_text_only_raises_identifier_error(mutuality: str, registration: str) -> None:
    member, code = _attempt(parse_member_number, mutuality, registration)
    if member is None:
        assert code in (100, 111, 121)
    else:
        assert 1 <= len(member.registration_number) <= 13
        assert member.insurer in INSURER_CODES
