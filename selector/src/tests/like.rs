//! LIKE: wildcards, escapes, characters that are special in regexes, and the compiled matcher.

use super::check;
use super::Outcome::{False as F, True as T, Unknown as U};
use crate::like::LikePattern;

#[test]
fn like_selectors() {
    check(&[
        ("name LIKE 'J%'", T),
        ("name LIKE 'j%'", F),
        ("name LIKE 'J_mes'", T),
        ("name LIKE '_ames'", T),
        ("name LIKE 'James_'", F),
        ("name LIKE '%'", T),
        ("empty LIKE '%'", T),
        ("empty LIKE '_'", F),
        ("name NOT LIKE 'B%'", T),
        ("name LIKE '%a%e%'", T),
        ("name LIKE 'J%s'", T),
        ("name LIKE 'J%a'", F),
        ("name LIKE '%x%'", F),
        ("quote LIKE '''In G_d We Trust'''", T),
        ("quote LIKE '''In Gd_ We Trust'''", F),
        // `_` matches any one character, line ends and characters beyond U+FFFF included.
        ("multi LIKE 'line1_line2'", T),
        ("multi LIKE 'line1%'", T),
        ("unicode LIKE 'h_llo \u{20ac}_'", T),
        ("unicode LIKE 'h_llo \u{20ac}__'", F),
        // Regex metacharacters are plain characters.
        ("special LIKE 'a.b*c+d?e[f]g^h$i(j)k{l}m|n\\o'", T),
        ("special LIKE 'a_b_c_d_e_f_g_h_i_j_k_l_m_n_o'", T),
        ("special LIKE 'aXb%'", F),
        ("special LIKE 'a.b%'", T),
        ("special LIKE '%[f]%'", T),
        ("special LIKE '%[x]%'", F),
        ("special LIKE 'a.b.%'", F),
        // Escapes (ActiveMQ's SelectorTest.testSpecialEscapeLiteral).
        ("under LIKE '\\_%' ESCAPE '\\'", T),
        ("under LIKE '!_foo!%' ESCAPE '!'", T),
        ("name LIKE '!_%' ESCAPE '!'", F),
        ("under LIKE '%!%' ESCAPE '!'", T),
        ("special LIKE '%n\\\\o' ESCAPE '\\'", T),
        // ActiveMQ: an escape before any other character is itself an ordinary character.
        ("special LIKE '%n\\o' ESCAPE '\\'", T),
        // ActiveMQ: with ESCAPE '%', `%%` is a literal `%` but a lone `%` is still a wildcard.
        ("under LIKE '_foo%%' ESCAPE '%'", T),
        ("under LIKE '%%' ESCAPE '%'", F),
        ("under LIKE '%foo%' ESCAPE '%'", T),
        ("under LIKE '__foo%' ESCAPE '_'", T),
        // ActiveMQ (LikeExpression): LIKE on a non-string is FALSE, so NOT LIKE is TRUE.
        ("count LIKE '1%'", F),
        ("count NOT LIKE '1%'", T),
        ("trueProp LIKE 'true'", F),
        ("missing LIKE '%'", U),
    ]);
}

#[test]
fn compiled_patterns() {
    let cases: &[(&str, Option<char>, &str, bool)] = &[
        ("", None, "", true),
        ("", None, "a", false),
        ("%", None, "", true),
        ("%%%", None, "abc", true),
        ("a%", None, "a", true),
        ("%a", None, "ba", true),
        ("%a", None, "ab", false),
        ("%ab%ab", None, "xabyabab", true),
        ("%ab%ab", None, "xabyaba", false),
        ("a_c", None, "a\u{1f600}c", true),
        ("a_c", None, "ac", false),
        ("%aab", None, "aaab", true),
        ("x%y%z", None, "xyz", true),
        ("x%y%z", None, "xzy", false),
        ("!", Some('!'), "!", true),
        ("!!", Some('!'), "!", true),
        ("!a", Some('!'), "!a", true),
    ];
    for &(pattern, escape, text, expected) in cases {
        let compiled = LikePattern::compile(pattern, escape);
        assert_eq!(
            compiled.matches(text),
            expected,
            "{text:?} LIKE {pattern:?} ESCAPE {escape:?}"
        );
    }
}

#[test]
fn many_wildcards_against_a_long_text_stay_fast() {
    let text = "a".repeat(10_000);
    assert!(LikePattern::compile(&"%a".repeat(50), None).matches(&text));
    assert!(!LikePattern::compile("%a%a%a%a%a%b", None).matches(&text));
}
