"""Card codes (RULES §1): the Luhn mod 32 check symbol and its test vectors, normalising what people
type, what the check symbol catches (Hypothesis), and sealing codes for storage."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import assume, given
from hypothesis import strategies as st

from core.keys import CODE_KEY_VERSION, Keys
from services import codes

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
KEYS = Keys.from_secret(b"tests-only-secret-0123456789abcdef")

payloads = st.text(alphabet=ALPHABET, min_size=15, max_size=15)


@st.composite
def valid_codes(draw: st.DrawFn) -> str:
    payload = draw(payloads)
    return payload + codes.check_symbol(payload)


# ---------------------------------------------------------------- the check symbol


@pytest.mark.parametrize(
    ("payload", "check"),
    [
        ("000000000000000", "0"),
        ("7K3QZ9M2XW4RT8H", "R"),
        ("ABCDEFGHJKMNPQR", "M"),
        ("123456789ABCDEF", "8"),
        ("ZZZZZZZZZZZZZZZ", "F"),
    ],
)
def test_check_symbol_matches_the_rules_test_vectors(payload, check):
    assert codes.check_symbol(payload) == check
    assert codes.normalise(payload + check) == payload + check


def test_the_alphabet_is_crockford_base32():
    assert codes.ALPHABET == ALPHABET
    assert codes.N == 32


def test_display_groups_by_four():
    assert codes.display("7K3QZ9M2XW4RT8HR") == "7K3Q-Z9M2-XW4R-T8HR"
    assert codes.masked("T8HR") == "****-****-****-T8HR"


# ---------------------------------------------------------------- normalising what people type


@pytest.mark.parametrize(
    "typed",
    [
        "7K3QZ9M2XW4RT8HR",
        "7K3Q-Z9M2-XW4R-T8HR",
        "7k3q-z9m2-xw4r-t8hr",
        "7K3Q Z9M2 XW4R T8HR",
        "  7k3q z9m2-xw4r t8hr ",
        "7K3Q--Z9M2--XW4R--T8HR",
    ],
)
def test_normalise_accepts_case_dashes_and_spaces(typed):
    assert codes.normalise(typed) == "7K3QZ9M2XW4RT8HR"


def test_normalise_reads_o_as_zero_and_i_and_l_as_one():
    # 0000…0 has check 0; 1111…1 (15 ones) has check 9
    assert codes.normalise("OOOO-oooo-0O0o-OOOO") == "0000000000000000"
    assert codes.normalise("IIII-llll-1iL1-IIL9") == "1111111111111119"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "7K3QZ9M2XW4RT8H",  # 15 symbols
        "7K3QZ9M2XW4RT8HRR",  # 17 symbols
        "7K3Q-Z9M2-XW4R-T8H",
        "7K3QZ9M2XW4RT8HU",  # U is not in the alphabet
        "UK3QZ9M2XW4RT8HR",
        "7K3QZ9M2XW4RT8H0",  # wrong check symbol
        "7K3QZ9M2XW4RT8HS",
        "7K3QZ9M2XW4RT8H*",
        "7K3QZ9M2XW4RT8H\u0052\u0301",  # a combining mark
        "７K3QZ9M2XW4RT8HR",  # a full-width digit
        "7K3Q_Z9M2_XW4R_T8HR",
    ],
)
def test_normalise_refuses_what_cannot_be_a_code(typed):
    assert codes.normalise(typed) is None


def test_generated_codes_are_valid_and_differ():
    made = [codes.generate() for _ in range(1000)]

    assert all(len(code) == 16 and set(code) <= set(ALPHABET) for code in made)
    assert all(codes.normalise(code) == code for code in made)
    assert len(set(made)) == 1000


# ---------------------------------------------------------------- properties


@given(valid_codes())
def test_a_valid_code_normalises_to_itself(code):
    assert codes.normalise(code) == code


@given(valid_codes())
def test_display_round_trips_through_normalise(code):
    shown = codes.display(code)

    assert len(shown) == 19
    assert codes.normalise(shown) == code
    assert codes.normalise(shown.lower()) == code
    assert codes.normalise(shown.replace("-", " ")) == code


@given(valid_codes(), st.integers(0, 15), st.sampled_from(ALPHABET))
def test_every_single_substitution_is_caught(code, position, symbol):
    # Luhn mod N with N even still doubles through a permutation of the values, so a change of
    # any one symbol (check symbol included) always changes the sum mod 32
    assume(code[position] != symbol)
    changed = code[:position] + symbol + code[position + 1 :]

    assert codes.normalise(changed) is None


@given(valid_codes(), st.integers(0, 14))
def test_adjacent_transpositions_are_caught_except_0_and_z(code, position):
    # With weights 1 and 2 alternating, swapping values a and b goes unnoticed exactly when
    # doubled(a) - a ≡ doubled(b) - b (mod 32); for N = 32 that holds only for {0, 31} ("0" and "Z"),
    # the mod-32 twin of decimal Luhn's 09 <-> 90.
    a, b = code[position], code[position + 1]
    assume(a != b)
    swapped = code[:position] + b + a + code[position + 2 :]

    if {a, b} == {"0", "Z"}:
        assert codes.normalise(swapped) == swapped
    else:
        assert codes.normalise(swapped) is None


def test_the_0_z_transposition_really_goes_unnoticed():
    payload = "0Z0Z0Z0Z0Z0Z0Z0"[:15]
    code = payload + codes.check_symbol(payload)
    swapped = code[1] + code[0] + code[2:]

    assert codes.normalise(code) == code
    assert codes.normalise(swapped) == swapped


# ---------------------------------------------------------------- sealing


@given(valid_codes())
def test_seal_and_open_round_trip(code):
    sealer = codes.CodeSealer(KEYS)

    sealed = sealer.seal(code)

    assert sealed.code_hash == KEYS.code_hash(code)
    assert len(sealed.code_hash) == 32
    assert sealed.key_version == CODE_KEY_VERSION
    assert sealed.last4 == code[-4:]
    assert code.encode() not in sealed.code_cipher
    assert sealer.open(sealed.code_hash, sealed.code_cipher, sealed.key_version) == code


def test_sealing_twice_gives_different_ciphertexts_and_the_same_hash():
    sealer = codes.CodeSealer(KEYS)
    code = codes.generate()

    first, second = sealer.seal(code), sealer.seal(code)

    assert first.code_hash == second.code_hash
    assert first.code_cipher != second.code_cipher


def test_the_lookup_hash_is_keyed():
    other = Keys.from_secret(b"another-secret-0123456789abcdefgh")
    code = codes.generate()

    assert KEYS.code_hash(code) != other.code_hash(code)


def test_opening_with_an_unknown_key_version_raises():
    sealer = codes.CodeSealer(KEYS)
    sealed = sealer.seal(codes.generate())

    with pytest.raises(KeyError):
        sealer.open(sealed.code_hash, sealed.code_cipher, CODE_KEY_VERSION + 1)


def test_opening_with_another_versions_key_raises():
    # given keys with a second version holding a different key
    both = Keys(
        token=KEYS.token,
        code_lookup=KEYS.code_lookup,
        code_encryption={**KEYS.code_encryption, CODE_KEY_VERSION + 1: bytes(range(32))},
        download=KEYS.download,
    )
    sealer = codes.CodeSealer(both)
    sealed = sealer.seal(codes.generate())

    with pytest.raises(InvalidTag):
        sealer.open(sealed.code_hash, sealed.code_cipher, CODE_KEY_VERSION + 1)


def test_opening_with_another_secret_raises():
    sealed = codes.CodeSealer(KEYS).seal(codes.generate())
    other = codes.CodeSealer(Keys.from_secret(b"another-secret-0123456789abcdefgh"))

    with pytest.raises(InvalidTag):
        other.open(sealed.code_hash, sealed.code_cipher, sealed.key_version)


@given(st.data())
def test_a_tampered_ciphertext_raises(data):
    sealer = codes.CodeSealer(KEYS)
    sealed = sealer.seal(data.draw(valid_codes()))
    position = data.draw(st.integers(0, len(sealed.code_cipher) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(sealed.code_cipher)
    tampered[position] ^= flip

    with pytest.raises(InvalidTag):
        sealer.open(sealed.code_hash, bytes(tampered), sealed.key_version)


def test_a_ciphertext_moved_to_another_cards_hash_raises():
    # the hash is the associated data: a ciphertext copied onto another card's row does not open
    sealer = codes.CodeSealer(KEYS)
    first, second = sealer.seal(codes.generate()), sealer.seal(codes.generate())

    with pytest.raises(InvalidTag):
        sealer.open(second.code_hash, first.code_cipher, first.key_version)
    with pytest.raises(InvalidTag):
        sealer.open(first.code_hash, first.code_cipher[:-1], first.key_version)
