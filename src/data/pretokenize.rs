//! GPT-2's text splitting, by hand: the byte <-> printable-char table, the
//! pre-tokenization pattern, and the split around special-token strings.
//!
//! The pattern is `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
//! matched leftmost-first as a regex engine would (the `regex` crate has no look-ahead,
//! and a hand-written scanner is also faster). `\s` is Unicode's White_Space property
//! (`char::is_whitespace`), as in the Python `regex` module GPT-2 used; JavaScript's
//! `\s` differs only on U+0085 (not space there) and U+FEFF (space there).
//! `\p{L}` and `\p{N}` come from generated tables ([`super::unicode_tables`]).

use super::unicode_tables::{LETTER, NUMBER};

/// GPT-2's `bytes_to_unicode`: each byte maps to a printable char. Bytes that are
/// printable Latin-1 (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) map to themselves; the other 68
/// take the chars U+0100.. in byte order (so the space byte is `Ġ`, U+0120).
pub(crate) fn byte_to_char() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        // Every value is <= 0x143, a valid scalar value.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Unicode general category L.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(c, LETTER)
    }
}

/// Unicode general category N.
pub(crate) fn is_number(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        in_ranges(c, NUMBER)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if is_letter(c) {
        Class::Letter
    } else if is_number(c) {
        Class::Number
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// Byte length of the longest prefix of `s` whose chars all have class `cls`.
fn run_len(s: &str, cls: Class) -> usize {
    s.char_indices()
        .find(|&(_, c)| class(c) != cls)
        .map_or(s.len(), |(i, _)| i)
}

const CONTRACTIONS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];

/// Byte length of the pattern's match at the start of non-empty `s`.
fn match_len(s: &str) -> usize {
    if let Some(rest) = s.strip_prefix('\'') {
        if let Some(c) = CONTRACTIONS.iter().find(|c| rest.starts_with(*c)) {
            return 1 + c.len();
        }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    let skip = usize::from(s.starts_with(' '));
    if let Some(c) = s[skip..].chars().next() {
        let cls = class(c);
        if cls != Class::Space {
            return skip + run_len(&s[skip..], cls);
        }
    }
    // `\s+(?!\S)` then `\s+`: a whitespace run gives its last char to the next word,
    // unless the run ends the text or is a single char.
    let run = run_len(s, Class::Space);
    if run == s.len() {
        return run;
    }
    let last = s[..run].chars().next_back().map_or(0, char::len_utf8);
    if run > last {
        run - last
    } else {
        run
    }
}

/// Splits `text` as GPT-2 does before BPE; the pieces concatenate back to `text`.
pub(crate) fn pretokenize(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = match_len(rest);
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

/// A piece of text between special tokens, or a special token's id.
#[derive(Debug, PartialEq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Special(u32),
}

/// Splits `text` at every occurrence of a special token string (leftmost first,
/// longest string on ties). `specials` holds (string, id) with non-empty strings.
/// Matching bytes is safe: a match starts with a UTF-8 leading byte, so every cut
/// falls on a char boundary.
pub(crate) fn split_specials<'a>(text: &'a str, specials: &[(String, u32)]) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        let hit = specials
            .iter()
            .filter(|(s, _)| !s.is_empty() && bytes[i..].starts_with(s.as_bytes()))
            .max_by_key(|(s, _)| s.len());
        match hit {
            Some((s, id)) => {
                if start < i {
                    out.push(Segment::Text(&text[start..i]));
                }
                out.push(Segment::Special(*id));
                i += s.len();
                start = i;
            }
            None => i += 1,
        }
    }
    if start < text.len() {
        out.push(Segment::Text(&text[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pretokenize(s).collect()
    }

    #[test]
    fn pattern_cases() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("it's 'sup"), ["it", "'s", " '", "sup"]);
        assert_eq!(split("a   b"), ["a", "  ", " b"]);
        assert_eq!(split("a \n\nb  "), ["a", " \n", "\n", "b", "  "]);
        assert_eq!(split(" 123abc!!?"), [" 123", "abc", "!!?"]);
        assert_eq!(split("\tx"), ["\t", "x"]);
        assert_eq!(split(""), Vec::<&str>::new());
    }

    #[test]
    fn byte_table_is_a_bijection_onto_printables() {
        let t = byte_to_char();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert!(t.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    /// The generated tables against std on long-assigned code points (below U+3000,
    /// stable across Unicode versions): N is exactly `is_numeric`, L lies inside
    /// `is_alphabetic`.
    #[test]
    fn tables_agree_with_std() {
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            assert_eq!(is_number(c), c.is_numeric(), "{c:?} U+{:04X}", c as u32);
            if is_letter(c) {
                assert!(c.is_alphabetic(), "{c:?} U+{:04X}", c as u32);
            }
        }
    }

    /// Categories from the Unicode Character Database that std's classes get "wrong"
    /// for GPT-2's purpose.
    #[test]
    fn letters_and_numbers_are_general_categories() {
        // Lo, Lm, Lt: letters
        for c in ['ª', 'ʰ', 'ǅ', '中', 'ا'] {
            assert!(is_letter(c), "{c:?}");
        }
        // Alphabetic but not L: Mn U+0345, So U+24D0 / U+24B7, Nl U+216B
        for c in ['\u{345}', 'ⓐ', 'Ⓑ', 'Ⅻ'] {
            assert!(c.is_alphabetic() && !is_letter(c), "{c:?}");
        }
        // N beyond digits: Nl, No
        for c in ['Ⅻ', '²', '½', '৴', '٣'] {
            assert!(is_number(c), "{c:?}");
        }
        assert_eq!(split("ⓐ's Ⅻ's"), ["ⓐ'", "s", " Ⅻ", "'s"]);
    }

    #[test]
    fn specials_split() {
        let sp = vec![("<|a|>".to_string(), 7), ("<|ab|>".to_string(), 8)];
        assert_eq!(
            split_specials("x<|a|><|ab|>y<|", &sp),
            [
                Segment::Text("x"),
                Segment::Special(7),
                Segment::Special(8),
                Segment::Text("y<|")
            ]
        );
    }
}
